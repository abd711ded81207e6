// Package panicfs is a test filesystem module: ramfs whose every
// filesystem operation panics on demand, to test that the VFS recovers a
// panic in module code (an error wrapping EIO, the module tainted, the host
// and the FUSE server going on).
//
//	src, trap := panicfs.Source("panicmod", "panicfs")
//	h.Load(ctx, src, nil)
//	trap.Arm("read") // the next ReadAt of any panicfs file panics
package panicfs

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/vfs/ramfs"
)

// Ops lists every operation a Trap can make panic, by the names the VFS
// gives them in a *vfs.PanicError.
var Ops = []string{
	"mount", "root", "statfs", "superblock release",
	"stat", "lookup", "readdir", "create", "mkdir", "symlink", "readlink",
	"unlink", "rmdir", "rename", "link", "mknod", "setattr", "open",
	"read", "write", "append", "size", "sync", "release",
}

// Trap says which operation panics: at most one at a time.
type Trap struct {
	armed atomic.Pointer[string]
	hits  atomic.Int64
}

// Arm makes every later call of op panic, until Disarm.
func (t *Trap) Arm(op string) { t.armed.Store(&op) }

// Disarm stops the panics.
func (t *Trap) Disarm() { t.armed.Store(nil) }

// Hits reports how many panics the trap raised.
func (t *Trap) Hits() int64 { return t.hits.Load() }

// Value is what the trap passes to panic for op.
func Value(op string) string { return "panicfs: " + op }

func (t *Trap) at(op string) {
	if p := t.armed.Load(); p != nil && *p == op {
		t.hits.Add(1)
		panic(Value(op))
	}
}

// Source returns a native module named module that registers panicfs under
// the filesystem type fstype, and the trap of its filesystems.
func Source(module, fstype string) (raceless.Source, *Trap) {
	t := &Trap{}
	info := raceless.Info{Name: module, Version: "1.0", License: "MIT", Description: "ramfs that panics on demand (" + fstype + ")"}
	return raceless.Native(info, func() raceless.Module { return &mod{fstype: fstype, t: t} }), t
}

type mod struct {
	fstype string
	t      *Trap
}

func (m *mod) Init(k *raceless.Kernel) error {
	return k.Register(raceless.KindFilesystem, m.fstype, vfs.FileSystemTypeFunc(
		func(ctx context.Context, req vfs.MountRequest) (vfs.Superblock, error) {
			m.t.at("mount")
			f, err := ramfs.New(req.Options, req.Cred)
			if err != nil {
				return nil, err
			}
			return &sb{f: f, t: m.t}, nil
		}))
}

func (m *mod) Exit() (int, error) { return 0, nil }

type sb struct {
	f *ramfs.FS
	t *Trap
}

func (s *sb) Root() vfs.Node {
	s.t.at("root")
	return s.wrap(s.f.Root())
}

func (s *sb) Statfs() (vfs.Statfs, error) {
	s.t.at("statfs")
	return s.f.Statfs()
}

func (s *sb) Release() {
	s.t.at("superblock release")
	s.f.Release()
}

// ramfsNode is every node interface: ramfs nodes implement them all; so
// does node.
type ramfsNode interface {
	vfs.MknodDir
	vfs.SymlinkNode
	vfs.OpenNode
	vfs.SetattrNode
}

var _ ramfsNode = (*node)(nil)

type node struct {
	s *sb
	n ramfsNode
}

func (s *sb) wrap(n vfs.Node) vfs.Node {
	if n == nil {
		return nil
	}
	return &node{s: s, n: n.(ramfsNode)}
}

func (s *sb) wrapped(n vfs.Node, err error) (vfs.Node, error) {
	if err != nil {
		return nil, err
	}
	return s.wrap(n), nil
}

func unwrap(n vfs.Node) vfs.Node {
	if w, ok := n.(*node); ok {
		return w.n
	}
	return n
}

func (n *node) Stat() (vfs.Attr, error) {
	n.s.t.at("stat")
	return n.n.Stat()
}

func (n *node) Lookup(name string) (vfs.Node, error) {
	n.s.t.at("lookup")
	return n.s.wrapped(n.n.Lookup(name))
}

func (n *node) ReadDir() ([]vfs.DirEntry, error) {
	n.s.t.at("readdir")
	return n.n.ReadDir()
}

func (n *node) Create(name string, a vfs.CreateAttr) (vfs.Node, error) {
	n.s.t.at("create")
	return n.s.wrapped(n.n.Create(name, a))
}

func (n *node) Mkdir(name string, a vfs.CreateAttr) (vfs.Node, error) {
	n.s.t.at("mkdir")
	return n.s.wrapped(n.n.Mkdir(name, a))
}

func (n *node) Mknod(name string, a vfs.CreateAttr) (vfs.Node, error) {
	n.s.t.at("mknod")
	return n.s.wrapped(n.n.Mknod(name, a))
}

func (n *node) Symlink(target, name string, a vfs.CreateAttr) (vfs.Node, error) {
	n.s.t.at("symlink")
	return n.s.wrapped(n.n.Symlink(target, name, a))
}

func (n *node) Readlink() (string, error) {
	n.s.t.at("readlink")
	return n.n.Readlink()
}

func (n *node) Unlink(name string) error {
	n.s.t.at("unlink")
	return n.n.Unlink(name)
}

func (n *node) Rmdir(name string) error {
	n.s.t.at("rmdir")
	return n.n.Rmdir(name)
}

func (n *node) Rename(oldName string, newDir vfs.DirNode, newName string) error {
	n.s.t.at("rename")
	d, ok := unwrap(newDir).(vfs.DirNode)
	if !ok {
		return fmt.Errorf("panicfs: rename into a %T: %w", newDir, vfs.EXDEV)
	}
	return n.n.Rename(oldName, d, newName)
}

func (n *node) Link(target vfs.Node, name string) error {
	n.s.t.at("link")
	return n.n.Link(unwrap(target), name)
}

func (n *node) Setattr(a vfs.SetAttr) error {
	n.s.t.at("setattr")
	return n.n.Setattr(a)
}

func (n *node) Open(flag int) (vfs.Handle, error) {
	n.s.t.at("open")
	h, err := n.n.Open(flag)
	if err != nil {
		return nil, err
	}
	return &handle{n: n, h: h}, nil
}

// handle implements vfs.Handle, vfs.Appender, vfs.Syncer and vfs.SizedHandle.
type handle struct {
	n *node
	h vfs.Handle
}

func (h *handle) ReadAt(p []byte, off int64) (int, error) {
	h.n.s.t.at("read")
	return h.h.ReadAt(p, off)
}

func (h *handle) WriteAt(p []byte, off int64) (int, error) {
	h.n.s.t.at("write")
	return h.h.WriteAt(p, off)
}

func (h *handle) Append(p []byte) (int, int64, error) {
	h.n.s.t.at("append")
	return h.h.(vfs.Appender).Append(p)
}

func (h *handle) Sync() error {
	h.n.s.t.at("sync")
	return nil
}

func (h *handle) Size() int64 {
	h.n.s.t.at("size")
	a, err := h.n.n.Stat()
	if err != nil {
		return 0
	}
	return a.Size
}

func (h *handle) Release() error {
	h.n.s.t.at("release")
	return h.h.Release()
}
