//go:build wasip1

// Command memfs is a WebAssembly module that provides the writable,
// in-memory filesystem type "memfs": mount -t memfs none /m. It runs the
// project's ramfs implementation (package vfs/ramfs, with its Linux
// semantics and its mount options) inside the guest, adapted to the
// SDK's inode-number interface (sdk.WritableFS): everything a memfs
// holds lives in the module's linear memory and goes away with it.
package main

import (
	"io/fs"
	"time"

	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/vfs/ramfs"
	"github.com/raceless/raceless/wasm/sdk"
)

func main() {}

func init() {
	sdk.OnInit(func() error {
		return sdk.RegisterFS("memfs", mount)
	})
}

func mount(_, options string, uid, gid uint32) (sdk.FS, error) {
	f, err := ramfs.New(options, vfs.Cred{UID: uid, GID: gid})
	if err != nil {
		return nil, errnoOf(err)
	}
	m := &memfs{f: f, nodes: map[uint64]vfs.Node{}, files: map[uint64]*file{}}
	a, err := f.Root().Stat()
	if err != nil {
		return nil, errnoOf(err)
	}
	m.root = a.Ino
	m.nodes[a.Ino] = f.Root()
	return m, nil
}

// memfs maps inode numbers to the ramfs nodes the host has seen (a node
// stays in the map while it is linked or open) and handles to open files.
type memfs struct {
	f      *ramfs.FS
	root   uint64
	nodes  map[uint64]vfs.Node
	files  map[uint64]*file
	nextFH uint64
}

type file struct {
	ino uint64
	h   vfs.Handle
}

func attrOf(a vfs.Attr) sdk.Attr {
	return sdk.Attr{
		Ino: a.Ino, Mode: linuxMode(a.Mode), Nlink: a.Nlink, UID: a.UID, GID: a.GID,
		Size: uint64(a.Size), Blocks: uint64(a.Blocks), Rdev: a.Rdev,
		Atime: a.Atime.UnixNano(), Mtime: a.Mtime.UnixNano(), Ctime: a.Ctime.UnixNano(),
	}
}

func linuxMode(m fs.FileMode) uint32 {
	l := uint32(m.Perm())
	switch {
	case m.IsDir():
		l |= sdk.ModeDir
	case m&fs.ModeSymlink != 0:
		l |= sdk.ModeSymlink
	case m&fs.ModeNamedPipe != 0:
		l |= 0o010000
	case m&fs.ModeSocket != 0:
		l |= 0o140000
	case m&fs.ModeCharDevice != 0:
		l |= 0o020000
	case m&fs.ModeDevice != 0:
		l |= 0o060000
	default:
		l |= sdk.ModeRegular
	}
	if m&fs.ModeSetuid != 0 {
		l |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		l |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		l |= 0o1000
	}
	return l
}

func goMode(l uint32) fs.FileMode {
	m := fs.FileMode(l & 0o777)
	switch l & sdk.ModeType {
	case sdk.ModeDir:
		m |= fs.ModeDir
	case sdk.ModeSymlink:
		m |= fs.ModeSymlink
	case 0o010000:
		m |= fs.ModeNamedPipe
	case 0o140000:
		m |= fs.ModeSocket
	case 0o020000:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case 0o060000:
		m |= fs.ModeDevice
	}
	if l&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if l&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if l&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

func (m *memfs) node(ino uint64) (vfs.Node, error) {
	n, ok := m.nodes[ino]
	if !ok {
		return nil, sdk.ErrNotFound
	}
	return n, nil
}

func (m *memfs) dir(ino uint64) (vfs.WritableDir, error) {
	n, err := m.node(ino)
	if err != nil {
		return nil, err
	}
	d, ok := n.(vfs.WritableDir)
	if !ok {
		return nil, sdk.ErrNotDir
	}
	return d, nil
}

// remember records n and returns its attributes.
func (m *memfs) remember(n vfs.Node, err error) (sdk.Attr, error) {
	if err != nil {
		return sdk.Attr{}, errnoOf(err)
	}
	a, err := n.Stat()
	if err != nil {
		return sdk.Attr{}, errnoOf(err)
	}
	m.nodes[a.Ino] = n
	return attrOf(a), nil
}

// forget drops a file's or a symlink's entry once its last link is
// removed and no file has it open (its data is freed by ramfs then).
func (m *memfs) forget(n vfs.Node) {
	if n == nil {
		return
	}
	a, err := n.Stat()
	if err != nil || a.Nlink > 0 || a.Mode.IsDir() {
		// A removed directory stays known: the host may still hold it
		// (a working directory), and the ABI has no forget operation;
		// ramfs answers ENOENT for what is made in it.
		return
	}
	for _, f := range m.files {
		if f.ino == a.Ino {
			return
		}
	}
	delete(m.nodes, a.Ino)
}

func (m *memfs) child(d vfs.WritableDir, name string) vfs.Node {
	n, err := d.Lookup(name)
	if err != nil {
		return nil
	}
	return n
}

func (m *memfs) Root() uint64 { return m.root }

func (m *memfs) Statfs() (sdk.Statfs, error) {
	s, err := m.f.Statfs()
	if err != nil {
		return sdk.Statfs{}, errnoOf(err)
	}
	return sdk.Statfs{Bsize: s.Bsize, Blocks: s.Blocks, Bfree: s.Bfree, Bavail: s.Bavail, Files: s.Files, Ffree: s.Ffree, NameLen: s.NameLen}, nil
}

func (m *memfs) Lookup(dir uint64, name string) (sdk.Attr, error) {
	d, err := m.dir(dir)
	if err != nil {
		return sdk.Attr{}, err
	}
	return m.remember(d.Lookup(name))
}

func (m *memfs) Getattr(ino uint64) (sdk.Attr, error) {
	n, err := m.node(ino)
	if err != nil {
		return sdk.Attr{}, err
	}
	a, err := n.Stat()
	if err != nil {
		return sdk.Attr{}, errnoOf(err)
	}
	return attrOf(a), nil
}

func (m *memfs) Setattr(ino uint64, s sdk.SetAttr) error {
	n, err := m.node(ino)
	if err != nil {
		return err
	}
	sn, ok := n.(vfs.SetattrNode)
	if !ok {
		return sdk.ErrPermission
	}
	var a vfs.SetAttr
	if s.SetMode {
		mode := goMode(s.Mode)
		a.Mode = &mode
	}
	if s.SetUID {
		a.UID = &s.UID
	}
	if s.SetGID {
		a.GID = &s.GID
	}
	if s.SetSize {
		size := int64(s.Size)
		a.Size = &size
	}
	if s.SetAtime {
		t := time.Unix(0, s.Atime)
		a.Atime = &t
	}
	if s.SetMtime {
		t := time.Unix(0, s.Mtime)
		a.Mtime = &t
	}
	return errnoOf(sn.Setattr(a))
}

func (m *memfs) ReadDir(dir uint64) ([]sdk.DirEntry, error) {
	d, err := m.dir(dir)
	if err != nil {
		return nil, err
	}
	es, err := d.ReadDir()
	if err != nil {
		return nil, errnoOf(err)
	}
	out := make([]sdk.DirEntry, len(es))
	for i, e := range es {
		out[i] = sdk.DirEntry{Name: e.Name, Ino: e.Ino, Mode: linuxMode(e.Mode)}
	}
	return out, nil
}

func (m *memfs) Readlink(ino uint64) (string, error) {
	n, err := m.node(ino)
	if err != nil {
		return "", err
	}
	l, ok := n.(vfs.SymlinkNode)
	if !ok {
		return "", sdk.ErrInvalid
	}
	s, err := l.Readlink()
	return s, errnoOf(err)
}

func (m *memfs) Open(ino uint64, flags int) (uint64, error) {
	n, err := m.node(ino)
	if err != nil {
		return 0, err
	}
	o, ok := n.(vfs.OpenNode)
	if !ok {
		return 0, sdk.ErrNotSup
	}
	h, err := o.Open(flags)
	if err != nil {
		return 0, errnoOf(err)
	}
	m.nextFH++
	m.files[m.nextFH] = &file{ino: ino, h: h}
	return m.nextFH, nil
}

func (m *memfs) Read(fh uint64, p []byte, off int64) (int, error) {
	f, ok := m.files[fh]
	if !ok {
		return 0, sdk.ErrBadHandle
	}
	n, err := f.h.ReadAt(p, off)
	if err != nil && n == 0 && !isEOF(err) {
		return 0, errnoOf(err)
	}
	return n, nil
}

func (m *memfs) Write(fh uint64, p []byte, off int64) (int, error) {
	f, ok := m.files[fh]
	if !ok {
		return 0, sdk.ErrBadHandle
	}
	n, err := f.h.WriteAt(p, off)
	return n, errnoOf(err)
}

func (m *memfs) Release(fh uint64) error {
	f, ok := m.files[fh]
	if !ok {
		return sdk.ErrBadHandle
	}
	delete(m.files, fh)
	err := f.h.Release()
	m.forget(m.nodes[f.ino])
	return errnoOf(err)
}

func (m *memfs) Unmount() { m.f.Release() }

func (m *memfs) Create(dir uint64, name string, mode, uid, gid uint32) (sdk.Attr, error) {
	d, err := m.dir(dir)
	if err != nil {
		return sdk.Attr{}, err
	}
	return m.remember(d.Create(name, vfs.CreateAttr{Mode: goMode(mode), UID: uid, GID: gid}))
}

func (m *memfs) Mkdir(dir uint64, name string, mode, uid, gid uint32) (sdk.Attr, error) {
	d, err := m.dir(dir)
	if err != nil {
		return sdk.Attr{}, err
	}
	return m.remember(d.Mkdir(name, vfs.CreateAttr{Mode: goMode(mode), UID: uid, GID: gid}))
}

func (m *memfs) Symlink(dir uint64, name, target string, uid, gid uint32) (sdk.Attr, error) {
	d, err := m.dir(dir)
	if err != nil {
		return sdk.Attr{}, err
	}
	return m.remember(d.Symlink(target, name, vfs.CreateAttr{Mode: fs.ModeSymlink | 0o777, UID: uid, GID: gid}))
}

func (m *memfs) Unlink(dir uint64, name string) error {
	d, err := m.dir(dir)
	if err != nil {
		return err
	}
	c := m.child(d, name)
	if err := d.Unlink(name); err != nil {
		return errnoOf(err)
	}
	m.forget(c)
	return nil
}

func (m *memfs) Rmdir(dir uint64, name string) error {
	d, err := m.dir(dir)
	if err != nil {
		return err
	}
	c := m.child(d, name)
	if err := d.Rmdir(name); err != nil {
		return errnoOf(err)
	}
	m.forget(c)
	return nil
}

func (m *memfs) Rename(oldDir uint64, oldName string, newDir uint64, newName string) error {
	od, err := m.dir(oldDir)
	if err != nil {
		return err
	}
	nd, err := m.dir(newDir)
	if err != nil {
		return err
	}
	c := m.child(nd, newName)
	if err := od.Rename(oldName, nd, newName); err != nil {
		return errnoOf(err)
	}
	m.forget(c)
	return nil
}

func (m *memfs) Link(ino, dir uint64, name string) error {
	d, err := m.dir(dir)
	if err != nil {
		return err
	}
	n, err := m.node(ino)
	if err != nil {
		return err
	}
	return errnoOf(d.Link(n, name))
}

func (m *memfs) Mknod(dir uint64, name string, mode, uid, gid uint32, rdev uint64) (sdk.Attr, error) {
	d, err := m.dir(dir)
	if err != nil {
		return sdk.Attr{}, err
	}
	md, ok := d.(vfs.MknodDir)
	if !ok {
		return sdk.Attr{}, sdk.ErrPermission
	}
	return m.remember(md.Mknod(name, vfs.CreateAttr{Mode: goMode(mode), UID: uid, GID: gid, Rdev: rdev}))
}
