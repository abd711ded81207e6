package vfs

import (
	"io/fs"
	"path"
	"strings"
)

// loc is a place in a namespace: a node of a mount. A held loc owns one
// reference on m.
type loc struct {
	m   *Mount
	n   Node
	ino uint64
	rel string // path of n within m, from m's root ("/" for the root); "" when reached from a Loc (unknown)
}

func (l loc) dup() loc { l.m.get(); return l }

// Loc is a place in a namespace as a lookup reached it: a mount and a node
// of it (Linux's struct path: vfsmount and dentry). It is what a directory
// file descriptor is to the *at system calls, and what a FUSE inode is to
// vfs/fusefs. Unlike a *File it holds no reference: the mount may be
// unmounted, and its filesystem shut down, while a Loc names it. Each
// operation on a Loc takes a mount reference for its duration and fails
// ENOENT once the mount is dead (its last reference dropped), like an
// operation in a working directory that was removed. A Loc in a detached
// (lazily unmounted) mount that is still alive keeps working, as a working
// directory there does on Linux. The zero Loc names nothing (EINVAL).
// Locs are values: compare them with Same.
type Loc struct {
	m    *Mount
	n    Node
	ino  uint64
	name string // the name it was reached by, for error messages
}

// Mount returns the mount the Loc is in (nil for the zero Loc).
func (l Loc) Mount() *Mount { return l.m }

// Ino returns the node's inode number within its filesystem.
func (l Loc) Ino() uint64 { return l.ino }

// Same reports whether l and o name the same node of the same mount.
func (l Loc) Same(o Loc) bool { return l.m == o.m && l.ino == o.ino }

// hold returns l as a held loc, or ENOENT when its mount is dead.
func (l Loc) hold() (loc, error) {
	if l.m == nil {
		return loc{}, EINVAL
	}
	if !l.m.tryGet() {
		return loc{}, ENOENT
	}
	return loc{m: l.m, n: l.n, ino: l.ino}, nil
}

// export returns the Loc of l, reached by name.
func (l loc) export(name string) Loc { return Loc{m: l.m, n: l.n, ino: l.ino, name: name} }

// Names are bytes. A path or name is any byte string: it is split at '/'
// and nothing else is interpreted, so bytes that are not UTF-8 are kept as
// they are and two names differing in one byte are two names. The one byte
// refused is NUL: a C path ends at its first NUL, so no Linux system call
// can be given one, and Go's syscall package refuses a string holding one
// with EINVAL before making the call (ByteSliceFromString); every entry
// point of the VFS does the same, before any lookup.

// hasNUL reports whether s holds a NUL byte.
func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

// checkNUL returns an *fs.PathError wrapping EINVAL (for op and the first
// string holding a NUL byte) when one of names holds one, nil otherwise.
func checkNUL(op string, names ...string) error {
	for _, n := range names {
		if hasNUL(n) {
			return pathErr(op, n, EINVAL)
		}
	}
	return nil
}

func splitPath(p string) []string {
	parts := strings.Split(p, "/")
	out := parts[:0]
	for _, c := range parts {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}

// isDir reports whether l's node is a directory (a failing Stat says no).
func (l loc) isDir() bool {
	a, err := l.m.sb.stat(l.n)
	return err == nil && a.Mode.IsDir()
}

// crossDown follows the mounts stacked on l to the top one. It consumes l's
// reference and returns a held loc.
func (p *Proc) crossDown(l loc) loc {
	treeMu.RLock()
	top := l
	for {
		c := p.ns.mountedAt(top.m, top.ino)
		if c == nil {
			break
		}
		top = loc{m: c, n: c.root, ino: c.rootIno, rel: "/"}
	}
	if top.m != l.m {
		top.m.get()
	}
	treeMu.RUnlock()
	if top.m != l.m {
		l.m.put()
	}
	return top
}

// dotdot returns the parent of a held loc (consuming it), crossing back up
// at mount roots and clamping at the process root, like Linux.
func (p *Proc) dotdot(l loc) (loc, error) {
	for {
		if l.m == p.root.m && l.ino == p.root.ino {
			return l, nil
		}
		if l.ino != l.m.rootIno {
			break
		}
		treeMu.RLock()
		par := l.m.parent
		var up loc
		if par != nil && l.m.state == mountAttached {
			up = loc{m: par, n: l.m.mpNode, ino: l.m.mpIno, rel: l.m.mpRel}
			par.get()
		}
		treeMu.RUnlock()
		if par == nil {
			return l, nil // root of a detached (or the namespace's root) mount
		}
		l.m.put()
		l = up
	}
	d, ok := l.n.(DirNode)
	if !ok {
		return l, ENOTDIR
	}
	pn, err := l.m.sb.lookup(d, "..")
	if err != nil {
		return l, err
	}
	a, err := l.m.sb.stat(pn)
	if err != nil {
		return l, err
	}
	rel := l.rel
	if rel != "" {
		rel = path.Dir(rel)
	}
	return loc{m: l.m, n: pn, ino: a.Ino, rel: rel}, nil
}

// checkPath refuses, before any lookup, what no Linux path system call
// accepts: a NUL byte (EINVAL), an empty path (ENOENT), a path of PathMax
// bytes or more (ENAMETOOLONG: PATH_MAX counts the terminating NUL).
func checkPath(name string) error {
	switch {
	case hasNUL(name):
		return EINVAL
	case name == "":
		return ENOENT
	case len(name) >= PathMax:
		return ENAMETOOLONG
	}
	return nil
}

// begin returns the held loc a walk of name starts from: the root for an
// absolute name; otherwise at (a directory Loc, as a *at call's dirfd)
// or, when at is nil, the working directory. The root and the working
// directory are crossed down to what is mounted on them; at is not (a
// directory file descriptor does not follow a mount made on it later).
func (p *Proc) begin(at *Loc, name string) (loc, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return loc{}, errClosedProc
	}
	var l loc
	switch {
	case strings.HasPrefix(name, "/"):
		l = p.root.dup()
	case at == nil:
		l = p.cwd.dup()
	default:
		p.mu.Unlock()
		return at.hold()
	}
	p.mu.Unlock()
	return p.crossDown(l), nil
}

// walkAt resolves name (from at, see begin) to a held loc. follow says
// whether a symlink in the last component is followed; a trailing slash
// follows it and requires a directory (ENOTDIR otherwise), as on Linux.
// Errors are bare Errnos (callers wrap them).
func (p *Proc) walkAt(at *Loc, name string, follow bool) (loc, error) {
	if err := checkPath(name); err != nil {
		return loc{}, err
	}
	cur, err := p.begin(at, name)
	if err != nil {
		return loc{}, err
	}
	trailing := strings.HasSuffix(name, "/")
	cur, err = p.resolve(cur, splitPath(name), follow || trailing)
	if err != nil {
		return loc{}, err
	}
	if trailing && !cur.isDir() {
		cur.m.put()
		return loc{}, ENOTDIR
	}
	return cur, nil
}

// walk is walkAt from the working directory (or the root).
func (p *Proc) walk(name string, follow bool) (loc, error) { return p.walkAt(nil, name, follow) }

// resolve walks comps from the held loc cur (consumed) to a held loc.
func (p *Proc) resolve(cur loc, comps []string, follow bool) (loc, error) {
	links := 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		last := len(comps) == 0
		var err error
		switch c {
		case ".":
			if !cur.isDir() {
				cur.m.put()
				return loc{}, ENOTDIR
			}
			continue
		case "..":
			if cur, err = p.dotdot(cur); err != nil {
				cur.m.put()
				return loc{}, err
			}
			cur = p.crossDown(cur)
			continue
		}
		if len(c) > NameMax {
			cur.m.put()
			return loc{}, ENAMETOOLONG
		}
		d, ok := cur.n.(DirNode)
		if !ok {
			cur.m.put()
			return loc{}, ENOTDIR
		}
		child, err := cur.m.sb.lookup(d, c)
		if err != nil {
			cur.m.put()
			return loc{}, err
		}
		a, err := cur.m.sb.stat(child)
		if err != nil {
			cur.m.put()
			return loc{}, err
		}
		if a.Mode&fs.ModeSymlink != 0 && (!last || follow) {
			links++
			if links > MaxSymlinks {
				cur.m.put()
				return loc{}, ELOOP
			}
			sl, ok := child.(SymlinkNode)
			if !ok {
				cur.m.put()
				return loc{}, EINVAL
			}
			target, err := cur.m.sb.readlink(sl)
			if err != nil {
				cur.m.put()
				return loc{}, err
			}
			if target == "" {
				cur.m.put()
				return loc{}, ENOENT
			}
			if strings.HasPrefix(target, "/") {
				cur.m.put()
				cur = p.crossDown(p.rootLoc())
			}
			comps = append(splitPath(target), comps...)
			continue
		}
		cur = p.crossDown(loc{m: cur.m, n: child, ino: a.Ino, rel: joinRel(cur.rel, c)})
	}
	return cur, nil
}

// lastRoot is the last component walkParentAt gives for the root ("/"):
// Linux's LAST_ROOT, which each operation answers its own way (rmdir and
// rename EBUSY, unlink and open O_CREAT EISDIR, creations EEXIST).
const lastRoot = "/"

// walkParentAt resolves all but the last component of name (from at, see
// begin): it returns the held parent directory, the last name and whether
// name ended in '/'. The last name may be ".", ".." or lastRoot; each
// operation decides what those give.
func (p *Proc) walkParentAt(at *Loc, name string) (d loc, last string, trailing bool, err error) {
	if err := checkPath(name); err != nil {
		return loc{}, "", false, err
	}
	trimmed := strings.TrimRight(name, "/")
	trailing = len(trimmed) < len(name)
	if trimmed == "" { // the root itself
		trimmed, trailing = "/", false
	}
	i := strings.LastIndexByte(trimmed, '/')
	dir, last := trimmed[:i+1], trimmed[i+1:]
	if last == "" {
		last = lastRoot
	}
	if len(last) > NameMax {
		return loc{}, "", false, ENAMETOOLONG
	}
	d, err = p.begin(at, name)
	if err != nil {
		return loc{}, "", false, err
	}
	if d, err = p.resolve(d, splitPath(dir), true); err != nil {
		return loc{}, "", false, err
	}
	if !d.isDir() {
		d.m.put()
		return loc{}, "", false, ENOTDIR
	}
	return d, last, trailing, nil
}

func (p *Proc) rootLoc() loc {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.root.dup()
}
