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

// Each operation has one core, taking the directory a relative name starts
// from as a *Loc (nil: the working directory), as Linux's *at system calls
// take a directory file descriptor: the path methods (Mkdir) pass nil and
// the Proc's credentials, the Loc methods (MkdirAt) the Loc and the
// caller's.

// The open flags the os package lacks, with Linux's values (the FUSE view
// passes the kernel's flags through).
const (
	oNofollow  = 0x20000 // O_NOFOLLOW
	oDirectory = 0x10000 // O_DIRECTORY
)

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

// isSpecial reports whether m is a named pipe, socket or device node.
func isSpecial(m fs.FileMode) bool {
	return m&(fs.ModeNamedPipe|fs.ModeSocket|fs.ModeDevice|fs.ModeCharDevice) != 0
}

// isRegular reports whether m is a regular file's mode.
func isRegular(m fs.FileMode) bool { return m.Type() == 0 }

func (p *Proc) isMountpoint(m *Mount, ino uint64) bool {
	treeMu.RLock()
	defer treeMu.RUnlock()
	return p.ns.mountedAt(m, ino) != nil || (ino == m.rootIno && m.parent != nil)
}

// stat returns the node's attributes with Dev filled in.
func (l loc) stat() (Attr, error) {
	a, err := l.m.sb.stat(l.n)
	a.Dev = l.m.sb.id
	return a, err
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
	a, err := l.stat()
	if err != nil {
		return nil, pathErr(op, name, err)
	}
	return fileInfo{baseName(name), a}, nil
}

// Root returns the Proc's root directory, crossed down to what is mounted
// on it now, and its attributes.
func (p *Proc) Root() (Loc, Attr, error) {
	l, err := p.begin(nil, "/")
	if err != nil {
		return Loc{}, Attr{}, pathErr("stat", "/", err)
	}
	defer l.m.put()
	a, err := l.stat()
	if err != nil {
		return Loc{}, Attr{}, pathErr("stat", "/", err)
	}
	return l.export("/"), a, nil
}

// LookupAt resolves name from the directory dir (an absolute name from the
// Proc's root), not following a final symlink, as fstatat(dirfd, name,
// AT_SYMLINK_NOFOLLOW) does, crossing into what is mounted on the way; it
// returns the Loc and its attributes.
func (p *Proc) LookupAt(dir Loc, name string) (Loc, Attr, error) {
	l, err := p.walkAt(&dir, name, false)
	if err != nil {
		return Loc{}, Attr{}, pathErr("lstat", name, err)
	}
	defer l.m.put()
	a, err := l.stat()
	if err != nil {
		return Loc{}, Attr{}, pathErr("lstat", name, err)
	}
	return l.export(baseName(name)), a, nil
}

// Stat returns the node's metadata (fstat).
func (l Loc) Stat() (Attr, error) {
	h, err := l.hold()
	if err != nil {
		return Attr{}, pathErr("stat", l.name, err)
	}
	defer h.m.put()
	a, err := h.stat()
	return a, pathErr("stat", l.name, err)
}

// Open opens name with os.O_* flags; perm is used when O_CREATE creates
// it. The File holds a reference on its mount until Close.
func (p *Proc) Open(name string, flag int, perm fs.FileMode) (*File, error) {
	return p.openat(nil, name, flag, perm, p.cred)
}

// OpenAt opens name from the directory dir as openat(2) does; a file it
// creates is owned by c.
func (p *Proc) OpenAt(dir Loc, name string, flag int, perm fs.FileMode, c Cred) (*File, error) {
	return p.openat(&dir, name, flag, perm, c)
}

// Open opens the node itself (FUSE's OPEN: the kernel resolved the name),
// with os.O_* flags; O_CREATE and O_EXCL mean nothing here.
func (l Loc) Open(flag int) (*File, error) {
	h, err := l.hold()
	if err != nil {
		return nil, pathErr("open", l.name, err)
	}
	f, err := openLoc(h, l.name, flag)
	if err != nil {
		h.m.put()
		return nil, pathErr("open", l.name, err)
	}
	return f, nil
}

// createMask and mkdirMask are the mode bits open(2) and mknod(2), and
// mkdir(2), keep (Linux: S_IALLUGO, and S_IRWXUGO|S_ISVTX).
const (
	createMask = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	mkdirMask  = fs.ModePerm | fs.ModeSticky
)

// initOwner is Linux's inode_init_owner: a node made in the directory
// whose attributes are dir, with mode, by c. In a setgid directory the
// group is the directory's, and a directory inherits the setgid bit.
// (Clearing a setgid bit the caller may not set is done before, by the
// kernel for FUSE requests; Procs are not permission-checked.)
func initOwner(dir Attr, mode fs.FileMode, c Cred) CreateAttr {
	a := CreateAttr{Mode: mode, UID: c.UID, GID: c.GID}
	if dir.Mode&fs.ModeSetgid != 0 {
		a.GID = dir.GID
		if mode.IsDir() {
			a.Mode |= fs.ModeSetgid
		}
	}
	return a
}

func (p *Proc) openat(at *Loc, name string, flag int, perm fs.FileMode, c Cred) (*File, error) {
	f, err := p.openat1(at, name, flag, perm, c)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	return f, nil
}

func (p *Proc) openat1(at *Loc, name string, flag int, perm fs.FileMode, c Cred) (*File, error) {
	creat := flag&os.O_CREATE != 0
	if creat && len(name) > 0 && name[len(name)-1] == '/' {
		if err := checkPath(name); err != nil {
			return nil, err
		}
		return nil, EISDIR // O_CREAT with a trailing slash, whether it exists or not
	}
	l, err := p.walkAt(at, name, flag&oNofollow == 0)
	if err == nil && creat && flag&os.O_EXCL != 0 {
		l.m.put()
		return nil, EEXIST
	}
	if err == ENOENT && creat {
		var d loc
		var last string
		d, last, _, err = p.walkParentAt(at, name)
		if err != nil {
			return nil, err
		}
		if last == "." || last == ".." || last == lastRoot {
			d.m.put()
			return nil, EISDIR
		}
		if l, err = createIn(d, last, perm, flag&os.O_EXCL != 0, c); err != nil {
			d.m.put()
			return nil, err
		}
		flag &^= os.O_TRUNC // just made: nothing to truncate
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

// createIn creates the regular file last in the held directory d, or,
// unless excl, finds the one another caller just made; the returned loc
// owns d's reference.
func createIn(d loc, last string, perm fs.FileMode, excl bool, c Cred) (loc, error) {
	wd, ok := d.n.(WritableDir)
	if !ok {
		return loc{}, EACCES // Linux: a directory without a create operation
	}
	da, err := d.stat()
	if err != nil {
		return loc{}, err
	}
	ca := initOwner(da, perm&createMask, c)
	n, err := guard(d.m.sb, "create", func() (Node, error) { return wd.Create(last, ca) })
	if err == EEXIST && !excl {
		n, err = d.m.sb.lookup(wd, last)
	}
	if err == nil && n == nil {
		err = fmt.Errorf("%s create returned no node: %w", d.m.sb.fstype, EIO)
	}
	if err != nil {
		return loc{}, err
	}
	a, err := d.m.sb.stat(n)
	if err != nil {
		return loc{}, err
	}
	return loc{m: d.m, n: n, ino: a.Ino, rel: joinRel(d.rel, last)}, nil
}

// joinRel is the rel of a child named last of a node whose rel is dir.
func joinRel(dir, last string) string {
	if dir == "" {
		return "" // unknown
	}
	return path.Join(dir, last)
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
	if flag&oDirectory != 0 && !a.Mode.IsDir() {
		return nil, ENOTDIR
	}
	if a.Mode&fs.ModeSymlink != 0 {
		return nil, ELOOP // O_NOFOLLOW on a symlink
	}
	var h Handle
	if !a.Mode.IsDir() {
		on, ok := l.n.(OpenNode)
		if !ok {
			if isSpecial(a.Mode) {
				return nil, ENXIO
			}
			return nil, ENOTSUP
		}
		if h, err = l.m.sb.open(on, flag); err != nil {
			return nil, err
		}
		if h == nil {
			return nil, fmt.Errorf("%s open returned no handle: %w", l.m.sb.fstype, EIO)
		}
		// Linux truncates a regular file opened with O_TRUNC whatever
		// the access mode (O_TRUNC asks for write permission), and sets
		// its times as ftruncate does.
		if flag&os.O_TRUNC != 0 && isRegular(a.Mode) {
			if err := truncateNode(l.m.sb, l.n, 0, true); err != nil {
				guard0(l.m.sb, "release", h.Release)
				return nil, err
			}
		}
	}
	return &File{m: l.m, n: l.n, ino: l.ino, h: h, name: name, flag: flag, dir: a.Mode.IsDir()}, nil
}

// truncateNode sets the size of a regular file; now also sets its
// modification time, as ftruncate(2) and open(O_TRUNC) do even when the
// size does not change (truncate(2) leaves the times to the filesystem).
func truncateNode(sb *superblock, n Node, size int64, now bool) error {
	a := SetAttr{Size: &size}
	if now {
		t := time.Now()
		a.Mtime = &t
	}
	return setattrNode(sb, n, a)
}

// setattrNode applies a to n, checking a size change as truncate(2) does:
// EINVAL for a negative size, EISDIR for a directory, EINVAL for anything
// but a regular file. A node without SetattrNode answers EPERM.
func setattrNode(sb *superblock, n Node, a SetAttr) error {
	if a.Size != nil {
		if *a.Size < 0 {
			return EINVAL
		}
		at, err := sb.stat(n)
		if err != nil {
			return err
		}
		if at.Mode.IsDir() {
			return EISDIR
		}
		if !isRegular(at.Mode) {
			return EINVAL
		}
	}
	sn, ok := n.(SetattrNode)
	if !ok {
		return EPERM
	}
	return sb.setattr(sn, a)
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

// dirOp runs fn on the parent directory of name (from at, see begin), a
// WritableDir, and the last name, which is never ".", ".." or the root:
// those get Linux's answer for op first. A parent that cannot change
// answers EPERM, as Linux does for a directory without the operation.
func (p *Proc) dirOp(op string, at *Loc, name string, fn func(d loc, wd WritableDir, last string, trailing bool) error) error {
	d, last, trailing, err := p.walkParentAt(at, name)
	if err != nil {
		return pathErr(op, name, err)
	}
	defer d.m.put()
	if last == "." || last == ".." || last == lastRoot {
		return pathErr(op, name, dotsErr(op, last))
	}
	wd, ok := d.n.(WritableDir)
	if !ok {
		return pathErr(op, name, EPERM)
	}
	return pathErr(op, name, fn(d, wd, last, trailing))
}

// dotsErr is Linux's answer to op on a last component that is ".", ".."
// or the root (LAST_DOT, LAST_DOTDOT, LAST_ROOT).
func dotsErr(op, last string) error {
	switch op {
	case "mkdir", "mknod", "symlink", "link":
		return EEXIST // filename_create
	case "unlink":
		return EISDIR
	case "rmdir":
		switch last {
		case ".":
			return EINVAL
		case "..":
			return ENOTEMPTY
		}
		return EBUSY
	}
	return EINVAL
}

// makeAt creates the node name (from at) with make, the filesystem call;
// mode is the new node's mode (type and masked permission bits). A
// trailing slash is allowed only for a directory; otherwise it gives
// EEXIST for an existing name and ENOENT for a missing one, as Linux's
// filename_create. It returns the new node's Loc and attributes.
func (p *Proc) makeAt(op string, at *Loc, name string, mode fs.FileMode, c Cred, mk func(wd WritableDir, last string, a CreateAttr) (Node, error)) (Loc, Attr, error) {
	var out Loc
	var attr Attr
	err := p.dirOp(op, at, name, func(d loc, wd WritableDir, last string, trailing bool) error {
		if trailing && !mode.IsDir() {
			if _, err := d.m.sb.lookup(wd, last); err == nil {
				return EEXIST
			}
			return ENOENT
		}
		da, err := d.stat()
		if err != nil {
			return err
		}
		ca := initOwner(da, mode, c)
		n, err := guard(d.m.sb, op, func() (Node, error) { return mk(wd, last, ca) })
		if err == nil && n == nil {
			err = fmt.Errorf("%s %s returned no node: %w", d.m.sb.fstype, op, EIO)
		}
		if err != nil {
			return err
		}
		if attr, err = d.m.sb.stat(n); err != nil {
			return err
		}
		attr.Dev = d.m.sb.id
		out = Loc{m: d.m, n: n, ino: attr.Ino, name: last}
		return nil
	})
	return out, attr, err
}

// Mkdir creates a directory.
func (p *Proc) Mkdir(name string, perm fs.FileMode) error {
	_, _, err := p.mkdirAt(nil, name, perm, p.cred)
	return err
}

// MkdirAt creates the directory name from dir, owned by c.
func (p *Proc) MkdirAt(dir Loc, name string, perm fs.FileMode, c Cred) (Loc, Attr, error) {
	return p.mkdirAt(&dir, name, perm, c)
}

func (p *Proc) mkdirAt(at *Loc, name string, perm fs.FileMode, c Cred) (Loc, Attr, error) {
	return p.makeAt("mkdir", at, name, fs.ModeDir|perm&mkdirMask, c, func(wd WritableDir, last string, a CreateAttr) (Node, error) {
		return wd.Mkdir(last, a)
	})
}

// Mknod creates a special file, as mknod(2): mode's type bits say which
// (fs.ModeNamedPipe, fs.ModeSocket, fs.ModeDevice with fs.ModeCharDevice
// for a character device, alone for a block device; none for a regular
// file), dev is a device's number. A directory type is EPERM, any other
// type EINVAL; a filesystem without MknodDir answers EPERM.
func (p *Proc) Mknod(name string, mode fs.FileMode, dev uint64) error {
	_, _, err := p.mknodAt(nil, name, mode, dev, p.cred)
	return err
}

// MknodAt is Mknod of name from dir, owned by c.
func (p *Proc) MknodAt(dir Loc, name string, mode fs.FileMode, dev uint64, c Cred) (Loc, Attr, error) {
	return p.mknodAt(&dir, name, mode, dev, c)
}

func (p *Proc) mknodAt(at *Loc, name string, mode fs.FileMode, dev uint64, c Cred) (Loc, Attr, error) {
	switch t := mode.Type(); t {
	case 0:
		return p.makeAt("mknod", at, name, mode&createMask, c, func(wd WritableDir, last string, a CreateAttr) (Node, error) {
			return wd.Create(last, a)
		})
	case fs.ModeNamedPipe, fs.ModeSocket, fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice:
		return p.makeAt("mknod", at, name, t|mode&createMask, c, func(wd WritableDir, last string, a CreateAttr) (Node, error) {
			md, ok := wd.(MknodDir)
			if !ok {
				return nil, EPERM
			}
			if t&fs.ModeDevice != 0 {
				a.Rdev = dev
			}
			return md.Mknod(last, a)
		})
	case fs.ModeDir:
		return Loc{}, Attr{}, pathErr("mknod", name, EPERM)
	}
	return Loc{}, Attr{}, pathErr("mknod", name, EINVAL)
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

// busyChild looks last up in d and returns its attributes, or EBUSY when
// it is a mount point. mpMu must be held, so that nothing is mounted on it
// meanwhile.
func (p *Proc) busyChild(d loc, last string) (Attr, error) {
	dn := d.n.(DirNode)
	c, err := d.m.sb.lookup(dn, last)
	if err != nil {
		return Attr{}, err
	}
	a, err := d.m.sb.stat(c)
	if err != nil {
		return Attr{}, err
	}
	if p.isMountpoint(d.m, a.Ino) {
		return a, EBUSY
	}
	return a, nil
}

// Rmdir removes an empty directory; a mount point gives EBUSY.
func (p *Proc) Rmdir(name string) error { return p.rmdirAt(nil, name) }

// RmdirAt removes the empty directory name from dir.
func (p *Proc) RmdirAt(dir Loc, name string) error { return p.rmdirAt(&dir, name) }

func (p *Proc) rmdirAt(at *Loc, name string) error {
	return p.dirOp("rmdir", at, name, func(d loc, wd WritableDir, last string, _ bool) error {
		mpMu.Lock()
		defer mpMu.Unlock()
		a, err := p.busyChild(d, last)
		if err != nil && err != EBUSY {
			return err
		}
		if !a.Mode.IsDir() { // Linux's may_delete answers before the mount point check
			return ENOTDIR
		}
		if err != nil {
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
func (p *Proc) Unlink(name string) error { return p.unlinkAt(nil, name) }

// UnlinkAt removes the name of a non-directory from dir.
func (p *Proc) UnlinkAt(dir Loc, name string) error { return p.unlinkAt(&dir, name) }

func (p *Proc) unlinkAt(at *Loc, name string) error {
	return p.dirOp("unlink", at, name, func(d loc, wd WritableDir, last string, trailing bool) error {
		mpMu.Lock()
		defer mpMu.Unlock()
		a, err := p.busyChild(d, last)
		if err != nil && err != EBUSY {
			return err
		}
		// Linux's may_delete answers before the mount point check
		switch {
		case a.Mode.IsDir():
			return EISDIR
		case trailing: // a trailing slash names a directory
			return ENOTDIR
		case err != nil:
			return err // a file something is bind-mounted on: EBUSY
		}
		return guard0(d.m.sb, "unlink", func() error { return wd.Unlink(last) })
	})
}

// Symlink creates newname as a symbolic link to target. A target of
// PathMax bytes or more is ENAMETOOLONG, an empty one ENOENT.
func (p *Proc) Symlink(target, newname string) error {
	_, _, err := p.symlinkAt(target, nil, newname, p.cred)
	return err
}

// SymlinkAt creates name from dir as a symbolic link to target, owned by c.
func (p *Proc) SymlinkAt(target string, dir Loc, name string, c Cred) (Loc, Attr, error) {
	return p.symlinkAt(target, &dir, name, c)
}

func (p *Proc) symlinkAt(target string, at *Loc, name string, c Cred) (Loc, Attr, error) {
	if err := checkNUL("symlink", target, name); err != nil {
		return Loc{}, Attr{}, err
	}
	if err := checkPath(target); err != nil {
		return Loc{}, Attr{}, pathErr("symlink", name, err)
	}
	return p.makeAt("symlink", at, name, fs.ModeSymlink|fs.ModePerm, c, func(wd WritableDir, last string, a CreateAttr) (Node, error) {
		return wd.Symlink(target, last, a)
	})
}

// Readlink returns a symlink's target.
func (p *Proc) Readlink(name string) (string, error) {
	l, err := p.walk(name, false)
	if err != nil {
		return "", pathErr("readlink", name, err)
	}
	defer l.m.put()
	t, err := readlinkLoc(l)
	return t, pathErr("readlink", name, err)
}

// Readlink returns the target of the symlink.
func (l Loc) Readlink() (string, error) {
	h, err := l.hold()
	if err != nil {
		return "", pathErr("readlink", l.name, err)
	}
	defer h.m.put()
	t, err := readlinkLoc(h)
	return t, pathErr("readlink", l.name, err)
}

func readlinkLoc(l loc) (string, error) {
	sl, ok := l.n.(SymlinkNode)
	if !ok {
		return "", EINVAL
	}
	return l.m.sb.readlink(sl)
}

// Rename renames oldname to newname. Across mounts (even two mounts of one
// filesystem) it fails EXDEV; a mount point, on either side, EBUSY.
func (p *Proc) Rename(oldname, newname string) error { return p.renameAt(nil, oldname, nil, newname) }

// RenameAt renames oldname from oldDir to newname from newDir.
func (p *Proc) RenameAt(oldDir Loc, oldname string, newDir Loc, newname string) error {
	return p.renameAt(&oldDir, oldname, &newDir, newname)
}

func (p *Proc) renameAt(oat *Loc, oldname string, nat *Loc, newname string) error {
	if err := checkNUL("rename", oldname, newname); err != nil {
		return err
	}
	od, olast, otrail, err := p.walkParentAt(oat, oldname)
	if err != nil {
		return pathErr("rename", oldname, err)
	}
	defer od.m.put()
	nd, nlast, ntrail, err := p.walkParentAt(nat, newname)
	if err != nil {
		return pathErr("rename", newname, err)
	}
	defer nd.m.put()
	// Linux's order (do_renameat2): mounts, then dots, then the lookups.
	if od.m != nd.m {
		return pathErr("rename", oldname, EXDEV)
	}
	for _, n := range []string{olast, nlast} {
		if n == "." || n == ".." || n == lastRoot {
			return pathErr("rename", oldname, EBUSY)
		}
	}
	owd, ok1 := od.n.(WritableDir)
	nwd, ok2 := nd.n.(DirNode)
	if !ok1 || !ok2 {
		return pathErr("rename", oldname, EPERM)
	}
	mpMu.Lock()
	defer mpMu.Unlock()
	// Linux's order (vfs_rename): the source, then the target's type,
	// then a mount point on either side.
	oa, oerr := p.busyChild(od, olast)
	if oerr != nil && oerr != EBUSY {
		return pathErr("rename", oldname, oerr)
	}
	if (otrail || ntrail) && !oa.Mode.IsDir() {
		return pathErr("rename", oldname, ENOTDIR) // a trailing slash names a directory
	}
	na, nerr := p.busyChild(nd, nlast)
	if nerr == nil || nerr == EBUSY {
		switch {
		case na.Ino == oa.Ino:
			return nil // two names of one file: rename(2) does nothing
		case oa.Mode.IsDir() && !na.Mode.IsDir():
			return pathErr("rename", newname, ENOTDIR)
		case !oa.Mode.IsDir() && na.Mode.IsDir():
			return pathErr("rename", newname, EISDIR)
		}
	}
	if oerr == EBUSY {
		return pathErr("rename", oldname, oerr)
	}
	if nerr == EBUSY {
		return pathErr("rename", newname, nerr)
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
	_, _, err = p.linkAt(ol, nil, newname)
	return err
}

// LinkAt creates name from dir as a hard link to target.
func (p *Proc) LinkAt(target Loc, dir Loc, name string) (Loc, Attr, error) {
	t, err := target.hold()
	if err != nil {
		return Loc{}, Attr{}, pathErr("link", target.name, err)
	}
	defer t.m.put()
	return p.linkAt(t, &dir, name)
}

// linkAt links the held loc t as name (from at).
func (p *Proc) linkAt(t loc, at *Loc, name string) (Loc, Attr, error) {
	if t.isDir() {
		return Loc{}, Attr{}, pathErr("link", name, EPERM)
	}
	var out Loc
	var attr Attr
	err := p.dirOp("link", at, name, func(d loc, wd WritableDir, last string, trailing bool) error {
		if d.m != t.m {
			return EXDEV
		}
		if trailing { // as filename_create: the name must not exist, and cannot be made
			if _, err := d.m.sb.lookup(wd, last); err == nil {
				return EEXIST
			}
			return ENOENT
		}
		if err := guard0(d.m.sb, "link", func() error { return wd.Link(t.n, last) }); err != nil {
			return err
		}
		a, err := t.stat()
		if err != nil {
			return err
		}
		out, attr = Loc{m: t.m, n: t.n, ino: t.ino, name: last}, a
		return nil
	})
	return out, attr, err
}

// setattr applies a to name.
func (p *Proc) setattr(op, name string, follow bool, a SetAttr) error {
	l, err := p.walk(name, follow)
	if err != nil {
		return pathErr(op, name, err)
	}
	defer l.m.put()
	return pathErr(op, name, setattrNode(l.m.sb, l.n, a))
}

// Setattr applies a to name (following symlinks). A Size is checked as
// truncate(2) checks it.
func (p *Proc) Setattr(name string, a SetAttr) error {
	return p.setattr("setattr", name, true, a)
}

// Lsetattr applies a to name, not following a final symlink.
func (p *Proc) Lsetattr(name string, a SetAttr) error {
	return p.setattr("setattr", name, false, a)
}

// Setattr applies a to the node (a Size is checked as truncate(2) checks
// it).
func (l Loc) Setattr(a SetAttr) error {
	h, err := l.hold()
	if err != nil {
		return pathErr("setattr", l.name, err)
	}
	defer h.m.put()
	return pathErr("setattr", l.name, setattrNode(h.m.sb, h.n, a))
}

// Chmod changes the permission bits (with setuid, setgid and sticky).
func (p *Proc) Chmod(name string, mode fs.FileMode) error {
	m := mode & createMask
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

// Truncate changes a file's size, as truncate(2): EINVAL for a negative
// size or anything but a regular file, EISDIR for a directory, EFBIG past
// the filesystem's maximum file size.
func (p *Proc) Truncate(name string, size int64) error {
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

// rawDir lists the held directory l, sorted by name, without "." and "..".
func rawDir(l loc) ([]DirEntry, error) {
	d, ok := l.n.(DirNode)
	if !ok {
		return nil, ENOTDIR
	}
	raw, err := l.m.sb.readDir(d)
	if err != nil {
		return nil, err
	}
	out := raw[:0:0]
	for _, e := range raw {
		if e.Name != "." && e.Name != ".." {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ReadDir lists the directory as getdents(2) does: "." and ".." first,
// then the entries sorted by name. Like Linux's, it lists what the
// directory's own filesystem has: ".." of a filesystem's root is the root
// itself, and a name something is mounted on has the inode number of the
// directory it covers.
func (l Loc) ReadDir() ([]DirEntry, error) {
	h, err := l.hold()
	if err != nil {
		return nil, pathErr("readdirent", l.name, err)
	}
	defer h.m.put()
	ents, err := rawDir(h)
	if err != nil {
		return nil, pathErr("readdirent", l.name, err)
	}
	d := h.n.(DirNode)
	parent, err := h.m.sb.lookup(d, "..")
	var pa Attr
	if err == nil {
		pa, err = h.m.sb.stat(parent)
	}
	if err != nil {
		return nil, pathErr("readdirent", l.name, err)
	}
	return append([]DirEntry{{Name: ".", Ino: h.ino, Mode: fs.ModeDir}, {Name: "..", Ino: pa.Ino, Mode: fs.ModeDir}}, ents...), nil
}

func readDirLoc(p *Proc, l loc) ([]fs.DirEntry, error) {
	raw, err := rawDir(l)
	if err != nil {
		return nil, err
	}
	out := make([]fs.DirEntry, 0, len(raw))
	for _, e := range raw {
		out = append(out, &dirEntry{p: p, dir: l, e: e})
	}
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

// Statfs reports the statistics of the node's filesystem.
func (l Loc) Statfs() (Statfs, error) {
	h, err := l.hold()
	if err != nil {
		return Statfs{}, pathErr("statfs", l.name, err)
	}
	defer h.m.put()
	s, err := h.m.sb.statfs()
	return s, pathErr("statfs", l.name, err)
}
