package vfs

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"time"
)

var errClosed = fs.ErrClosed

// fileInfo is the fs.FileInfo of a node; Sys returns its Attr.
type fileInfo struct {
	name string
	a    Attr
}

func (fi fileInfo) Name() string       { return fi.name }
func (fi fileInfo) Size() int64        { return fi.a.Size }
func (fi fileInfo) Mode() fs.FileMode  { return fi.a.Mode }
func (fi fileInfo) ModTime() time.Time { return fi.a.Mtime }
func (fi fileInfo) IsDir() bool        { return fi.a.Mode.IsDir() }
func (fi fileInfo) Sys() any           { return fi.a }

func baseName(name string) string {
	return path.Base(name)
}

func (p *Proc) isMountpoint(m *Mount, ino uint64) bool {
	treeMu.RLock()
	defer treeMu.RUnlock()
	return p.ns.mountedAt(m, ino) != nil || (ino == m.rootIno && m.parent != nil)
}

// Stat returns the metadata of name, following symlinks.
func (p *Proc) Stat(name string) (fs.FileInfo, error) { return p.stat("stat", name, true) }

// Lstat returns the metadata of name without following a final symlink.
func (p *Proc) Lstat(name string) (fs.FileInfo, error) { return p.stat("lstat", name, false) }

func (p *Proc) stat(op, name string, follow bool) (fs.FileInfo, error) {
	l, err := p.walk(name, follow)
	if err != nil {
		return nil, pathErr(op, name, err)
	}
	defer l.m.put()
	a, err := l.m.sb.stat(l.n)
	if err != nil {
		return nil, pathErr(op, name, err)
	}
	a.Dev = l.m.sb.id
	return fileInfo{baseName(name), a}, nil
}

// Open opens name with os.O_* flags; perm is used when O_CREATE creates
// it. The File holds a reference on its mount until Close.
func (p *Proc) Open(name string, flag int, perm fs.FileMode) (*File, error) {
	f, err := p.open(name, flag, perm)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	return f, nil
}

func (p *Proc) open(name string, flag int, perm fs.FileMode) (*File, error) {
	const nofollow = 0x20000 // O_NOFOLLOW
	l, err := p.walk(name, flag&nofollow == 0)
	if err == nil && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0 {
		l.m.put()
		return nil, EEXIST
	}
	if err == ENOENT && flag&os.O_CREATE != 0 {
		d, last, perr := p.walkParent(name)
		if perr != nil {
			return nil, perr
		}
		if last == "." || last == ".." {
			d.m.put()
			return nil, EISDIR
		}
		wd, ok := d.n.(WritableDir)
		if !ok {
			d.m.put()
			return nil, EROFS
		}
		n, cerr := guard(d.m.sb, "create", func() (Node, error) { return wd.Create(last, perm.Perm()) })
		if cerr == EEXIST && flag&os.O_EXCL == 0 {
			n, cerr = d.m.sb.lookup(wd, last)
		}
		if cerr != nil {
			d.m.put()
			return nil, cerr
		}
		a, serr := d.m.sb.stat(n)
		if serr != nil {
			d.m.put()
			return nil, serr
		}
		l, err = loc{m: d.m, n: n, ino: a.Ino, rel: path.Join(d.rel, last)}, nil
		flag &^= os.O_TRUNC
	}
	if err != nil {
		return nil, err
	}
	f, err := openLoc(l, name, flag)
	if err != nil {
		l.m.put()
		return nil, err
	}
	return f, nil
}

// openLoc opens a held loc; on success the File owns the reference.
func openLoc(l loc, name string, flag int) (*File, error) {
	a, err := l.m.sb.stat(l.n)
	if err != nil {
		return nil, err
	}
	acc := flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
	if a.Mode.IsDir() && (acc != os.O_RDONLY || flag&os.O_TRUNC != 0) {
		return nil, EISDIR
	}
	const odirectory = 0x10000 // O_DIRECTORY
	if flag&odirectory != 0 && !a.Mode.IsDir() {
		return nil, ENOTDIR
	}
	if a.Mode&fs.ModeSymlink != 0 {
		return nil, ELOOP // O_NOFOLLOW on a symlink
	}
	var h Handle
	if !a.Mode.IsDir() {
		on, ok := l.n.(OpenNode)
		if !ok {
			return nil, ENOTSUP
		}
		if h, err = l.m.sb.open(on, flag); err != nil {
			return nil, err
		}
		if h == nil {
			return nil, fmt.Errorf("%s open returned no handle: %w", l.m.sb.fstype, EIO)
		}
		if flag&os.O_TRUNC != 0 && acc != os.O_RDONLY {
			if err := truncateNode(l.m.sb, l.n, 0); err != nil {
				guard0(l.m.sb, "release", h.Release)
				return nil, err
			}
		}
	}
	return &File{m: l.m, n: l.n, h: h, name: name, flag: flag, dir: a.Mode.IsDir()}, nil
}

func truncateNode(sb *superblock, n Node, size int64) error {
	sn, ok := n.(SetattrNode)
	if !ok {
		return ENOTSUP
	}
	return sb.setattr(sn, SetAttr{Size: &size})
}

// Create creates or truncates name (mode 0666), opened read-write.
func (p *Proc) Create(name string) (*File, error) {
	return p.Open(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}

// ReadFile reads the whole of name.
func (p *Proc) ReadFile(name string) ([]byte, error) {
	f, err := p.Open(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if f.dir {
		return nil, pathErr("read", name, EISDIR)
	}
	return io.ReadAll(f)
}

// WriteFile writes data to name, creating it with perm or truncating it.
func (p *Proc) WriteFile(name string, data []byte, perm fs.FileMode) error {
	f, err := p.Open(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// dirOp runs fn on the parent directory of name.
func (p *Proc) dirOp(op, name string, fn func(d loc, wd WritableDir, last string) error) error {
	d, last, err := p.walkParent(name)
	if err != nil {
		return pathErr(op, name, err)
	}
	defer d.m.put()
	if last == "." || last == ".." {
		if op == "mkdir" || op == "symlink" || op == "link" {
			return pathErr(op, name, EEXIST)
		}
		if op == "rmdir" && last == ".." {
			return pathErr(op, name, ENOTEMPTY)
		}
		return pathErr(op, name, EINVAL)
	}
	wd, ok := d.n.(WritableDir)
	if !ok {
		return pathErr(op, name, EROFS)
	}
	return pathErr(op, name, fn(d, wd, last))
}

// Mkdir creates a directory.
func (p *Proc) Mkdir(name string, perm fs.FileMode) error {
	return p.dirOp("mkdir", name, func(d loc, wd WritableDir, last string) error {
		_, err := guard(d.m.sb, "mkdir", func() (Node, error) { return wd.Mkdir(last, perm.Perm()) })
		return err
	})
}

// MkdirAll creates name and any missing parents.
func (p *Proc) MkdirAll(name string, perm fs.FileMode) error {
	if err := checkNUL("mkdir", name); err != nil {
		return err // before any parent is made
	}
	if fi, err := p.Stat(name); err == nil {
		if !fi.IsDir() {
			return pathErr("mkdir", name, ENOTDIR)
		}
		return nil
	}
	if parent := path.Dir(name); parent != name && parent != "." && parent != "/" {
		if err := p.MkdirAll(parent, perm); err != nil {
			return err
		}
	}
	err := p.Mkdir(name, perm)
	if err != nil {
		if fi, serr := p.Lstat(name); serr == nil && fi.IsDir() {
			return nil
		}
	}
	return err
}

// busyChild looks last up in d and reports EBUSY when it is a mount
// point. mpMu must be held, so that nothing is mounted on it meanwhile.
func (p *Proc) busyChild(d loc, last string) error {
	dn := d.n.(DirNode)
	c, err := d.m.sb.lookup(dn, last)
	if err != nil {
		return err
	}
	a, err := d.m.sb.stat(c)
	if err != nil {
		return err
	}
	if p.isMountpoint(d.m, a.Ino) {
		return EBUSY
	}
	return nil
}

// Rmdir removes an empty directory; a mount point gives EBUSY.
func (p *Proc) Rmdir(name string) error {
	return p.dirOp("rmdir", name, func(d loc, wd WritableDir, last string) error {
		mpMu.Lock()
		defer mpMu.Unlock()
		if err := p.busyChild(d, last); err != nil {
			return err
		}
		return guard0(d.m.sb, "rmdir", func() error { return wd.Rmdir(last) })
	})
}

// Remove unlinks a file, or removes an empty directory.
func (p *Proc) Remove(name string) error {
	if fi, err := p.Lstat(name); err == nil && fi.IsDir() {
		return p.Rmdir(name)
	}
	return p.Unlink(name)
}

// Unlink removes a name of a non-directory. Open files of it keep their
// data until the last close.
func (p *Proc) Unlink(name string) error {
	return p.dirOp("unlink", name, func(d loc, wd WritableDir, last string) error {
		mpMu.Lock()
		defer mpMu.Unlock()
		if err := p.busyChild(d, last); err != nil {
			return err
		}
		return guard0(d.m.sb, "unlink", func() error { return wd.Unlink(last) })
	})
}

// Symlink creates newname as a symbolic link to target.
func (p *Proc) Symlink(target, newname string) error {
	if err := checkNUL("symlink", target, newname); err != nil {
		return err
	}
	if target == "" {
		return pathErr("symlink", newname, ENOENT)
	}
	return p.dirOp("symlink", newname, func(d loc, wd WritableDir, last string) error {
		_, err := guard(d.m.sb, "symlink", func() (Node, error) { return wd.Symlink(target, last) })
		return err
	})
}

// Readlink returns a symlink's target.
func (p *Proc) Readlink(name string) (string, error) {
	l, err := p.walk(name, false)
	if err != nil {
		return "", pathErr("readlink", name, err)
	}
	defer l.m.put()
	sl, ok := l.n.(SymlinkNode)
	if !ok {
		return "", pathErr("readlink", name, EINVAL)
	}
	t, err := l.m.sb.readlink(sl)
	return t, pathErr("readlink", name, err)
}

// Rename renames oldname to newname. Across mounts (even two mounts of one
// filesystem) it fails EXDEV; a mount point, on either side, EBUSY.
func (p *Proc) Rename(oldname, newname string) error {
	if err := checkNUL("rename", oldname, newname); err != nil {
		return err
	}
	od, olast, err := p.walkParent(oldname)
	if err != nil {
		return pathErr("rename", oldname, err)
	}
	defer od.m.put()
	nd, nlast, err := p.walkParent(newname)
	if err != nil {
		return pathErr("rename", newname, err)
	}
	defer nd.m.put()
	for _, n := range []string{olast, nlast} {
		if n == "." || n == ".." {
			return pathErr("rename", oldname, EBUSY)
		}
	}
	if od.m != nd.m {
		return pathErr("rename", oldname, EXDEV)
	}
	owd, ok1 := od.n.(WritableDir)
	nwd, ok2 := nd.n.(DirNode)
	if !ok1 || !ok2 {
		return pathErr("rename", oldname, EROFS)
	}
	mpMu.Lock()
	defer mpMu.Unlock()
	if err := p.busyChild(od, olast); err != nil {
		return pathErr("rename", oldname, err)
	}
	if err := p.busyChild(nd, nlast); err == EBUSY {
		return pathErr("rename", newname, err)
	}
	return pathErr("rename", oldname, guard0(od.m.sb, "rename", func() error { return owd.Rename(olast, nwd, nlast) }))
}

// Link creates newname as a hard link to oldname (not following a final
// symlink). Across mounts: EXDEV; of a directory: EPERM.
func (p *Proc) Link(oldname, newname string) error {
	if err := checkNUL("link", oldname, newname); err != nil {
		return err
	}
	ol, err := p.walk(oldname, false)
	if err != nil {
		return pathErr("link", oldname, err)
	}
	defer ol.m.put()
	if ol.isDir() {
		return pathErr("link", oldname, EPERM)
	}
	return p.dirOp("link", newname, func(d loc, wd WritableDir, last string) error {
		if d.m != ol.m {
			return EXDEV
		}
		return guard0(d.m.sb, "link", func() error { return wd.Link(ol.n, last) })
	})
}

// setattr applies a to name.
func (p *Proc) setattr(op, name string, follow bool, a SetAttr) error {
	l, err := p.walk(name, follow)
	if err != nil {
		return pathErr(op, name, err)
	}
	defer l.m.put()
	sn, ok := l.n.(SetattrNode)
	if !ok {
		return pathErr(op, name, EPERM)
	}
	return pathErr(op, name, l.m.sb.setattr(sn, a))
}

// Setattr applies a to name (following symlinks).
func (p *Proc) Setattr(name string, a SetAttr) error {
	return p.setattr("setattr", name, true, a)
}

// Lsetattr applies a to name, not following a final symlink.
func (p *Proc) Lsetattr(name string, a SetAttr) error {
	return p.setattr("setattr", name, false, a)
}

// Chmod changes the permission bits.
func (p *Proc) Chmod(name string, mode fs.FileMode) error {
	m := mode.Perm()
	return p.setattr("chmod", name, true, SetAttr{Mode: &m})
}

// Chown changes owner and group.
func (p *Proc) Chown(name string, uid, gid uint32) error {
	return p.setattr("chown", name, true, SetAttr{UID: &uid, GID: &gid})
}

// Chtimes changes the access and modification times.
func (p *Proc) Chtimes(name string, atime, mtime time.Time) error {
	return p.setattr("chtimes", name, true, SetAttr{Atime: &atime, Mtime: &mtime})
}

// Truncate changes a file's size.
func (p *Proc) Truncate(name string, size int64) error {
	if size < 0 {
		return pathErr("truncate", name, EINVAL)
	}
	if fi, err := p.Stat(name); err == nil && fi.IsDir() {
		return pathErr("truncate", name, EISDIR)
	}
	return p.setattr("truncate", name, true, SetAttr{Size: &size})
}

// ReadDir lists a directory, sorted by name. Names covered by mounts are
// listed as the underlying directory has them (as readdir(2) does).
func (p *Proc) ReadDir(name string) ([]fs.DirEntry, error) {
	l, err := p.walk(name, true)
	if err != nil {
		return nil, pathErr("readdirent", name, err)
	}
	defer l.m.put()
	ents, err := readDirLoc(p, l)
	return ents, pathErr("readdirent", name, err)
}

func readDirLoc(p *Proc, l loc) ([]fs.DirEntry, error) {
	d, ok := l.n.(DirNode)
	if !ok {
		return nil, ENOTDIR
	}
	raw, err := l.m.sb.readDir(d)
	if err != nil {
		return nil, err
	}
	out := make([]fs.DirEntry, 0, len(raw))
	for _, e := range raw {
		if e.Name == "." || e.Name == ".." {
			continue
		}
		out = append(out, &dirEntry{p: p, dir: l, e: e})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

// dirEntry is an fs.DirEntry; Info stats the entry (crossing mounts).
type dirEntry struct {
	p   *Proc
	dir loc // not held: Info takes its own references
	e   DirEntry
}

func (d *dirEntry) Name() string      { return d.e.Name }
func (d *dirEntry) IsDir() bool       { return d.e.Mode.IsDir() }
func (d *dirEntry) Type() fs.FileMode { return d.e.Mode.Type() }
func (d *dirEntry) Info() (fs.FileInfo, error) {
	dn := d.dir.n.(DirNode)
	sb := d.dir.m.sb
	c, err := sb.lookup(dn, d.e.Name)
	if err != nil {
		return nil, pathErr("stat", d.e.Name, err)
	}
	a, err := sb.stat(c)
	if err != nil {
		return nil, pathErr("stat", d.e.Name, err)
	}
	if top := coveredBy(d.dir.m, a.Ino); top != nil {
		// a mount point: stat what is mounted there, as stat(2) would
		a, err = top.sb.stat(top.root)
		a.Dev = top.sb.id
		top.put()
		if err != nil {
			return nil, pathErr("stat", d.e.Name, err)
		}
	}
	if a.Dev == 0 {
		a.Dev = d.dir.m.sb.id
	}
	return fileInfo{d.e.Name, a}, nil
}

// coveredBy returns the top mount covering (m, ino), held, or nil.
func coveredBy(m *Mount, ino uint64) *Mount {
	treeMu.RLock()
	defer treeMu.RUnlock()
	if m.ns == nil {
		return nil
	}
	var top *Mount
	for c := m.ns.mountedAt(m, ino); c != nil; c = m.ns.mountedAt(c, c.rootIno) {
		top = c
	}
	if top != nil {
		top.get()
	}
	return top
}
func (d *dirEntry) String() string { return fs.FormatDirEntry(d) }

// Statfs reports the filesystem statistics of the mount holding name.
func (p *Proc) Statfs(name string) (Statfs, error) {
	l, err := p.walk(name, true)
	if err != nil {
		return Statfs{}, pathErr("statfs", name, err)
	}
	defer l.m.put()
	s, err := l.m.sb.statfs()
	return s, pathErr("statfs", name, err)
}
