// Package ramfs is an in-memory filesystem for the vfs package: directories,
// regular files (read, write at offsets, append, truncate), symlinks, hard
// links, rename, unlink while open (the data lives until the last close and
// the last name are gone, by garbage collection), permission bits,
// ownership, timestamps and statfs.
//
// Register it from a module (modules/ramfs does) under any type name:
//
//	k.Register(raceless.KindFilesystem, "ramfs", ramfs.Type())
//
// Mount options: "mode=0755" (root directory permissions), "size=N" (bytes
// of file data before ENOSPC; 0 means unlimited).
package ramfs

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/raceless/raceless/vfs"
)

// Type returns the filesystem type: each Mount makes a new, empty instance.
func Type() vfs.FileSystemType {
	return vfs.FileSystemTypeFunc(func(_ context.Context, req vfs.MountRequest) (vfs.Superblock, error) {
		return New(req.Options)
	})
}

// FS is one ramfs instance (a superblock).
type FS struct {
	mu      sync.RWMutex // guards every node's fields and the counters below
	nextIno uint64
	nodes   int64 // live inodes (linked or open)
	bytes   int64 // file data in use
	limit   int64 // size= option; 0: unlimited
	root    *node
	release func() // test hook, called by Release
}

// New returns an empty instance; options as for Mount.
func New(options string) (*FS, error) {
	f := &FS{}
	mode := fs.FileMode(0o755)
	for _, o := range strings.Split(options, ",") {
		if o == "" {
			continue
		}
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "mode":
			m, err := strconv.ParseUint(v, 8, 32)
			if err != nil || m > 0o7777 {
				return nil, fmt.Errorf("ramfs: bad mode %q: %w", v, vfs.EINVAL)
			}
			mode = fs.FileMode(m)
		case "size":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("ramfs: bad size %q: %w", v, vfs.EINVAL)
			}
			f.limit = n
		case "rw", "defaults":
		default:
			return nil, fmt.Errorf("ramfs: unknown option %q: %w", k, vfs.EINVAL)
		}
	}
	f.root = f.newNode(fs.ModeDir | mode)
	f.root.parent = f.root
	f.root.nlink = 2
	return f, nil
}

// Root returns the root directory.
func (f *FS) Root() vfs.Node { return f.root }

// Release is the superblock's release: nothing to free but memory.
func (f *FS) Release() {
	if f.release != nil {
		f.release()
	}
}

// Statfs reports usage in 4 KiB blocks.
func (f *FS) Statfs() (vfs.Statfs, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	const bs = 4096
	used := uint64((f.bytes + bs - 1) / bs)
	total := used + 1<<20
	if f.limit > 0 {
		total = uint64((f.limit + bs - 1) / bs)
	}
	free := uint64(0)
	if total > used {
		free = total - used
	}
	return vfs.Statfs{Bsize: bs, Blocks: total, Bfree: free, Bavail: free,
		Files: uint64(f.nodes) + 1<<20, Ffree: 1 << 20, NameLen: vfs.NameMax}, nil
}

type node struct {
	fs    *FS
	ino   uint64
	mode  fs.FileMode
	nlink uint32
	uid   uint32
	gid   uint32
	atime time.Time
	mtime time.Time
	ctime time.Time

	parent   *node            // directories
	children map[string]*node // directories
	data     []byte           // regular files
	target   string           // symlinks
	opens    int              // open handles
}

func (f *FS) newNode(mode fs.FileMode) *node {
	f.nextIno++
	f.nodes++
	now := time.Now()
	n := &node{fs: f, ino: f.nextIno, mode: mode, nlink: 1, atime: now, mtime: now, ctime: now}
	if mode.IsDir() {
		n.children = map[string]*node{}
	}
	return n
}

func (n *node) attr() vfs.Attr {
	size := int64(len(n.data))
	switch {
	case n.mode.IsDir():
		size = 4096
	case n.mode&fs.ModeSymlink != 0:
		size = int64(len(n.target))
	}
	return vfs.Attr{Ino: n.ino, Mode: n.mode, Size: size, Nlink: n.nlink, UID: n.uid, GID: n.gid,
		Atime: n.atime, Mtime: n.mtime, Ctime: n.ctime}
}

// Stat implements vfs.Node.
func (n *node) Stat() (vfs.Attr, error) {
	n.fs.mu.RLock()
	defer n.fs.mu.RUnlock()
	return n.attr(), nil
}

func (n *node) dir() error {
	if !n.mode.IsDir() {
		return vfs.ENOTDIR
	}
	if n.nlink == 0 {
		return vfs.ENOENT
	}
	return nil
}

// Lookup implements vfs.DirNode.
func (n *node) Lookup(name string) (vfs.Node, error) {
	n.fs.mu.RLock()
	defer n.fs.mu.RUnlock()
	if !n.mode.IsDir() {
		return nil, vfs.ENOTDIR
	}
	switch name {
	case ".":
		return n, nil
	case "..":
		return n.parent, nil
	}
	if c, ok := n.children[name]; ok {
		return c, nil
	}
	return nil, vfs.ENOENT
}

// ReadDir implements vfs.DirNode.
func (n *node) ReadDir() ([]vfs.DirEntry, error) {
	n.fs.mu.RLock()
	defer n.fs.mu.RUnlock()
	if err := n.dir(); err != nil {
		return nil, err
	}
	out := make([]vfs.DirEntry, 0, len(n.children))
	for name, c := range n.children {
		out = append(out, vfs.DirEntry{Name: name, Ino: c.ino, Mode: c.mode.Type()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (n *node) add(name string, mode fs.FileMode) (*node, error) {
	if err := n.dir(); err != nil {
		return nil, err
	}
	if _, ok := n.children[name]; ok {
		return nil, vfs.EEXIST
	}
	c := n.fs.newNode(mode)
	n.children[name] = c
	n.touch()
	return c, nil
}

func (n *node) touch() {
	now := time.Now()
	n.mtime, n.ctime = now, now
}

// Create implements vfs.WritableDir.
func (n *node) Create(name string, mode fs.FileMode) (vfs.Node, error) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	return n.add(name, mode.Perm())
}

// Mkdir implements vfs.WritableDir.
func (n *node) Mkdir(name string, mode fs.FileMode) (vfs.Node, error) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	c, err := n.add(name, fs.ModeDir|mode.Perm())
	if err != nil {
		return nil, err
	}
	c.parent = n
	c.nlink = 2
	n.nlink++
	return c, nil
}

// Symlink implements vfs.WritableDir.
func (n *node) Symlink(target, name string) (vfs.Node, error) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	c, err := n.add(name, fs.ModeSymlink|0o777)
	if err != nil {
		return nil, err
	}
	c.target = target
	return c, nil
}

// Readlink implements vfs.SymlinkNode.
func (n *node) Readlink() (string, error) {
	n.fs.mu.RLock()
	defer n.fs.mu.RUnlock()
	if n.mode&fs.ModeSymlink == 0 {
		return "", vfs.EINVAL
	}
	return n.target, nil
}

// drop removes one name of c (locked).
func (f *FS) dropLink(c *node) {
	c.nlink--
	c.ctime = time.Now()
	f.maybeFree(c)
}

// maybeFree accounts for a node with no name and no open handle: its data
// is garbage now.
func (f *FS) maybeFree(c *node) {
	if c.nlink == 0 && c.opens == 0 {
		f.nodes--
		f.bytes -= int64(len(c.data))
		c.data = nil
	}
}

// Unlink implements vfs.WritableDir.
func (n *node) Unlink(name string) error {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if err := n.dir(); err != nil {
		return err
	}
	c, ok := n.children[name]
	if !ok {
		return vfs.ENOENT
	}
	if c.mode.IsDir() {
		return vfs.EISDIR
	}
	delete(n.children, name)
	n.touch()
	n.fs.dropLink(c)
	return nil
}

// Rmdir implements vfs.WritableDir.
func (n *node) Rmdir(name string) error {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if err := n.dir(); err != nil {
		return err
	}
	c, ok := n.children[name]
	if !ok {
		return vfs.ENOENT
	}
	if !c.mode.IsDir() {
		return vfs.ENOTDIR
	}
	if len(c.children) > 0 {
		return vfs.ENOTEMPTY
	}
	delete(n.children, name)
	n.nlink--
	n.touch()
	c.nlink = 0
	n.fs.maybeFree(c)
	return nil
}

// Rename implements vfs.WritableDir, with rename(2)'s rules.
func (n *node) Rename(oldName string, newDir vfs.DirNode, newName string) error {
	nd, ok := newDir.(*node)
	if !ok || nd.fs != n.fs {
		return vfs.EXDEV
	}
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := n.dir(); err != nil {
		return err
	}
	if err := nd.dir(); err != nil {
		return err
	}
	c, ok := n.children[oldName]
	if !ok {
		return vfs.ENOENT
	}
	if c.mode.IsDir() {
		for a := nd; ; a = a.parent { // no moving a directory under itself
			if a == c {
				return vfs.EINVAL
			}
			if a == a.parent {
				break
			}
		}
	}
	old, exists := nd.children[newName]
	if exists {
		if old == c {
			return nil
		}
		switch {
		case c.mode.IsDir() && !old.mode.IsDir():
			return vfs.ENOTDIR
		case !c.mode.IsDir() && old.mode.IsDir():
			return vfs.EISDIR
		case old.mode.IsDir() && len(old.children) > 0:
			return vfs.ENOTEMPTY
		}
		if old.mode.IsDir() {
			old.nlink = 0
			nd.nlink--
			f.maybeFree(old)
		} else {
			f.dropLink(old)
		}
	}
	delete(n.children, oldName)
	nd.children[newName] = c
	if c.mode.IsDir() && n != nd {
		n.nlink--
		nd.nlink++
		c.parent = nd
	}
	n.touch()
	nd.touch()
	c.ctime = time.Now()
	return nil
}

// Link implements vfs.WritableDir.
func (n *node) Link(target vfs.Node, name string) error {
	t, ok := target.(*node)
	if !ok || t.fs != n.fs {
		return vfs.EXDEV
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if err := n.dir(); err != nil {
		return err
	}
	if t.mode.IsDir() {
		return vfs.EPERM
	}
	if t.nlink == 0 {
		return vfs.ENOENT
	}
	if _, ok := n.children[name]; ok {
		return vfs.EEXIST
	}
	n.children[name] = t
	t.nlink++
	t.ctime = time.Now()
	n.touch()
	return nil
}

// Setattr implements vfs.SetattrNode.
func (n *node) Setattr(a vfs.SetAttr) error {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if a.Size != nil {
		if n.mode.IsDir() {
			return vfs.EISDIR
		}
		if n.mode&fs.ModeSymlink != 0 || *a.Size < 0 {
			return vfs.EINVAL
		}
		if err := n.resize(*a.Size); err != nil {
			return err
		}
		n.touch()
	}
	if a.Mode != nil {
		n.mode = n.mode.Type() | *a.Mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)
	}
	if a.UID != nil {
		n.uid = *a.UID
	}
	if a.GID != nil {
		n.gid = *a.GID
	}
	if a.Atime != nil {
		n.atime = *a.Atime
	}
	if a.Mtime != nil {
		n.mtime = *a.Mtime
	}
	n.ctime = time.Now()
	return nil
}

// resize changes the data length (locked), keeping the size limit.
func (n *node) resize(size int64) error {
	cur := int64(len(n.data))
	if size > cur && n.fs.limit > 0 && n.fs.bytes+size-cur > n.fs.limit {
		return vfs.ENOSPC
	}
	n.fs.bytes += size - cur
	if size <= int64(cap(n.data)) {
		if size > cur {
			clear(n.data[cur:size])
		}
		n.data = n.data[:size]
		return nil
	}
	d := make([]byte, size, size+size/4)
	copy(d, n.data)
	n.data = d
	return nil
}

// Open implements vfs.OpenNode.
func (n *node) Open(flag int) (vfs.Handle, error) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if n.mode.IsDir() {
		return nil, vfs.EISDIR
	}
	n.opens++
	return &handle{n: n}, nil
}

type handle struct {
	n *node
}

func (h *handle) ReadAt(p []byte, off int64) (int, error) {
	n := h.n
	n.fs.mu.RLock()
	defer n.fs.mu.RUnlock()
	if off >= int64(len(n.data)) {
		return 0, io.EOF
	}
	c := copy(p, n.data[off:])
	if c < len(p) {
		return c, io.EOF
	}
	return c, nil
}

func (h *handle) WriteAt(p []byte, off int64) (int, error) {
	n := h.n
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	return n.writeAt(p, off)
}

func (n *node) writeAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > int64(len(n.data)) {
		if err := n.resize(end); err != nil {
			return 0, err
		}
	}
	copy(n.data[off:], p)
	n.touch()
	return len(p), nil
}

// Append implements vfs.Appender: the end is found and written under one lock.
func (h *handle) Append(p []byte) (int, int64, error) {
	n := h.n
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	off := int64(len(n.data))
	c, err := n.writeAt(p, off)
	return c, off + int64(c), err
}

func (h *handle) Release() error {
	n := h.n
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	n.opens--
	n.fs.maybeFree(n)
	return nil
}
