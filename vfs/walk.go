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
	rel string // path of n within m, from m's root ("/" for the root)
}

func (l loc) dup() loc { l.m.get(); return l }

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
	return loc{m: l.m, n: pn, ino: a.Ino, rel: path.Dir(l.rel)}, nil
}

// walk resolves name to a held loc. follow says whether a symlink in the
// last component is followed. Errors are bare Errnos (callers wrap them);
// a NUL byte in name is EINVAL.
func (p *Proc) walk(name string, follow bool) (loc, error) {
	if hasNUL(name) {
		return loc{}, EINVAL
	}
	if name == "" {
		return loc{}, ENOENT
	}
	if len(name) >= PathMax {
		return loc{}, ENAMETOOLONG
	}
	cur, err := p.start(name)
	if err != nil {
		return loc{}, err
	}
	cur = p.crossDown(cur)
	comps := splitPath(name)
	links := 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		last := len(comps) == 0
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
		cur = p.crossDown(loc{m: cur.m, n: child, ino: a.Ino, rel: path.Join(cur.rel, c)})
	}
	return cur, nil
}

// walkParent resolves all but the last component of name: it returns the
// held parent directory and the last name (never "", "." or "..": those
// give EINVAL... or EEXIST for creation, decided by the caller).
func (p *Proc) walkParent(name string) (loc, string, error) {
	if hasNUL(name) {
		return loc{}, "", EINVAL
	}
	if name == "" {
		return loc{}, "", ENOENT
	}
	if len(name) >= PathMax {
		return loc{}, "", ENAMETOOLONG
	}
	trimmed := strings.TrimRight(name, "/")
	if trimmed == "" {
		return loc{}, "", EBUSY // the root itself
	}
	i := strings.LastIndexByte(trimmed, '/')
	dir, last := trimmed[:i+1], trimmed[i+1:]
	if len(last) > NameMax {
		return loc{}, "", ENAMETOOLONG
	}
	if dir == "" {
		dir = "."
	}
	d, err := p.walk(dir, true)
	if err != nil {
		return loc{}, "", err
	}
	if !d.isDir() {
		d.m.put()
		return loc{}, "", ENOTDIR
	}
	return d, last, nil
}

func (p *Proc) start(name string) (loc, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return loc{}, errClosedProc
	}
	if strings.HasPrefix(name, "/") {
		return p.root.dup(), nil
	}
	return p.cwd.dup(), nil
}

func (p *Proc) rootLoc() loc {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.root.dup()
}
