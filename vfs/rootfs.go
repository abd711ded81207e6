package vfs

import (
	"io/fs"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// rootfs is the namespace's bottom filesystem: directories only, in memory,
// owned by no module (Linux's rootfs). It exists so that "/" always
// resolves and mount points can be made before anything is mounted.
type rootfs struct {
	mu   sync.Mutex // guards every rootDir's children, parent and nlink
	ino  atomic.Uint64
	root *rootDir
}

var _ WritableDir = (*rootDir)(nil)

type rootDir struct {
	fs       *rootfs
	ino      uint64
	mode     fs.FileMode
	uid, gid uint32
	mtime    time.Time
	parent   *rootDir
	children map[string]*rootDir
	removed  bool
}

func newRootfs() *rootfs {
	r := &rootfs{}
	c := processCred() // the namespace's maker owns its root, as the mounter owns a tmpfs's
	r.root = r.newDir(nil, CreateAttr{Mode: fs.ModeDir | 0o755, UID: c.UID, GID: c.GID})
	r.root.parent = r.root
	return r
}

func (r *rootfs) newDir(parent *rootDir, a CreateAttr) *rootDir {
	return &rootDir{fs: r, ino: r.ino.Add(1), mode: fs.ModeDir | a.Mode&(fs.ModePerm|fs.ModeSetgid|fs.ModeSticky),
		uid: a.UID, gid: a.GID, mtime: time.Now(), parent: parent, children: map[string]*rootDir{}}
}

func (r *rootfs) Root() Node { return r.root }
func (r *rootfs) Statfs() (Statfs, error) {
	return Statfs{Bsize: 4096, NameLen: NameMax}, nil
}
func (r *rootfs) Release() {}

func (d *rootDir) Stat() (Attr, error) {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	n := uint32(2 + len(d.children))
	if d.removed {
		n = 0
	}
	return Attr{Ino: d.ino, Mode: d.mode, Nlink: n, UID: d.uid, GID: d.gid,
		Atime: d.mtime, Mtime: d.mtime, Ctime: d.mtime, Size: 4096}, nil
}

func (d *rootDir) Lookup(name string) (Node, error) {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	switch name {
	case ".":
		return d, nil
	case "..":
		return d.parent, nil
	}
	if c, ok := d.children[name]; ok {
		return c, nil
	}
	return nil, ENOENT
}

func (d *rootDir) ReadDir() ([]DirEntry, error) {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	out := make([]DirEntry, 0, len(d.children))
	for n, c := range d.children {
		out = append(out, DirEntry{Name: n, Ino: c.ino, Mode: fs.ModeDir})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (d *rootDir) Mkdir(name string, a CreateAttr) (Node, error) {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	if d.removed {
		return nil, ENOENT
	}
	if _, ok := d.children[name]; ok {
		return nil, EEXIST
	}
	c := d.fs.newDir(d, a)
	d.children[name] = c
	return c, nil
}

func (d *rootDir) Rmdir(name string) error {
	d.fs.mu.Lock()
	defer d.fs.mu.Unlock()
	c, ok := d.children[name]
	if !ok {
		return ENOENT
	}
	if len(c.children) > 0 {
		return ENOTEMPTY
	}
	c.removed = true
	delete(d.children, name)
	return nil
}

// The rootfs holds directories only (mount points): it refuses files and
// symlinks with EPERM.
func (d *rootDir) Create(string, CreateAttr) (Node, error)          { return nil, EPERM }
func (d *rootDir) Symlink(string, string, CreateAttr) (Node, error) { return nil, EPERM }
func (d *rootDir) Unlink(name string) error {
	if _, err := d.Lookup(name); err != nil {
		return err
	}
	return EISDIR
}
func (d *rootDir) Rename(string, DirNode, string) error { return EPERM }
func (d *rootDir) Link(Node, string) error              { return EPERM }
