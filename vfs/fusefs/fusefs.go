// Package fusefs exposes a vfs namespace (as seen from a vfs.Proc) at a
// host directory through FUSE (go-fuse/v2's fs API).
//
// Every FUSE open is one vfs.File, so a process holding a file open pins the
// mount, the superblock and the filesystem's module exactly as an in-process
// open file does; the release comes when the kernel sends RELEASE (after the
// process's last descriptor closes). Entry, attribute and negative timeouts
// are zero, so the kernel asks again on every lookup and mounts, moves and
// unmounts inside the namespace are visible at once. The kernel sees one
// filesystem, so rename and link across internal mounts fail EXDEV here,
// as the VFS decides.
//
//	srv, err := fusefs.Mount("/mnt/raceless", ns.Proc, nil)
//	...
//	err = srv.Unmount() // fails EBUSY while the kernel has files open; see Unmount
package fusefs

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/raceless/raceless/vfs"
)

// Options tunes the FUSE mount. The zero value is the right one for
// almost everything.
type Options struct {
	Name  string // fsname shown by the host's /proc/mounts; default "raceless"
	Debug bool   // log every FUSE request
}

// Server is a running FUSE exposure of a namespace.
type Server struct {
	srv  *fuse.Server
	dir  string
	open atomic.Int64 // FUSE file handles (vfs.Files) open now

	inoMu sync.Mutex           // guards inos and next
	inos  map[[2]uint64]uint64 // (superblock, ino) -> FUSE inode number
	next  uint64
	p     *vfs.Proc
	wait  chan struct{}
}

// Mount exposes p's view of its namespace at dir (which must exist). It
// uses go-fuse's DirectMount (needs root), falling back to fusermount.
func Mount(dir string, p *vfs.Proc, o *Options) (*Server, error) {
	if o == nil {
		o = &Options{}
	}
	name := o.Name
	if name == "" {
		name = "raceless"
	}
	s := &Server{dir: dir, p: p, inos: map[[2]uint64]uint64{}, next: 1, wait: make(chan struct{})}
	zero := time.Duration(0)
	root := &node{s: s}
	srv, err := gofs.Mount(dir, root, &gofs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			DirectMount:              true,
			FsName:                   name,
			Name:                     "raceless",
			Debug:                    o.Debug,
			DisableXAttrs:            true,
			MaxBackground:            12,
			EnableLocks:              false,
			ExplicitDataCacheControl: false,
		},
	})
	if err != nil {
		return nil, err
	}
	s.srv = srv
	go func() { srv.Wait(); close(s.wait) }()
	return s, nil
}

// OpenFiles reports how many FUSE file handles (each one vfs.File) are open.
func (s *Server) OpenFiles() int64 { return s.open.Load() }

// Unmount unmounts the FUSE filesystem. Like umount(2) it fails (EBUSY)
// while processes have files open or working directories in it; then the
// host's lazy unmount (umount -l dir) detaches it and the server sees the
// last releases. Unmount waits for the server loop to end.
func (s *Server) Unmount() error {
	if err := s.srv.Unmount(); err != nil {
		return err
	}
	<-s.wait
	return nil
}

// Wait blocks until the filesystem is unmounted (by Unmount or from outside).
func (s *Server) Wait() { <-s.wait }

func (s *Server) fuseIno(a vfs.Attr) uint64 {
	k := [2]uint64{a.Dev, a.Ino}
	s.inoMu.Lock()
	defer s.inoMu.Unlock()
	if i, ok := s.inos[k]; ok {
		return i
	}
	s.next++
	s.inos[k] = s.next
	return s.next
}

type node struct {
	gofs.Inode
	s *Server
}

func (n *node) path() string { return "/" + n.Path(nil) }

func (n *node) child(name string) string { return path.Join(n.path(), name) }

func errno(err error) syscall.Errno { return vfs.ToErrno(err) }

func unixMode(m fs.FileMode) uint32 {
	out := uint32(m.Perm())
	switch {
	case m.IsDir():
		out |= syscall.S_IFDIR
	case m&fs.ModeSymlink != 0:
		out |= syscall.S_IFLNK
	case m&fs.ModeNamedPipe != 0:
		out |= syscall.S_IFIFO
	case m&fs.ModeSocket != 0:
		out |= syscall.S_IFSOCK
	case m&fs.ModeCharDevice != 0:
		out |= syscall.S_IFCHR
	case m&fs.ModeDevice != 0:
		out |= syscall.S_IFBLK
	default:
		out |= syscall.S_IFREG
	}
	if m&fs.ModeSetuid != 0 {
		out |= syscall.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		out |= syscall.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		out |= syscall.S_ISVTX
	}
	return out
}

func fsMode(m uint32) fs.FileMode {
	out := fs.FileMode(m & 0o777)
	if m&syscall.S_ISUID != 0 {
		out |= fs.ModeSetuid
	}
	if m&syscall.S_ISGID != 0 {
		out |= fs.ModeSetgid
	}
	if m&syscall.S_ISVTX != 0 {
		out |= fs.ModeSticky
	}
	return out
}

func (s *Server) fill(fi fs.FileInfo, out *fuse.Attr) {
	a := fi.Sys().(vfs.Attr)
	out.Ino = s.fuseIno(a)
	out.Mode = unixMode(a.Mode)
	out.Size = uint64(a.Size)
	out.Nlink = a.Nlink
	out.Owner = fuse.Owner{Uid: a.UID, Gid: a.GID}
	out.SetTimes(&a.Atime, &a.Mtime, &a.Ctime)
	out.Blksize = 4096
	out.Blocks = (uint64(a.Size) + 511) / 512
}

func (n *node) newChild(ctx context.Context, fi fs.FileInfo, out *fuse.EntryOut) *gofs.Inode {
	n.s.fill(fi, &out.Attr)
	return n.NewInode(ctx, &node{s: n.s}, gofs.StableAttr{Mode: out.Attr.Mode & syscall.S_IFMT, Ino: out.Attr.Ino})
}

var (
	_ gofs.NodeLookuper   = (*node)(nil)
	_ gofs.NodeGetattrer  = (*node)(nil)
	_ gofs.NodeSetattrer  = (*node)(nil)
	_ gofs.NodeOpener     = (*node)(nil)
	_ gofs.NodeCreater    = (*node)(nil)
	_ gofs.NodeMkdirer    = (*node)(nil)
	_ gofs.NodeRmdirer    = (*node)(nil)
	_ gofs.NodeUnlinker   = (*node)(nil)
	_ gofs.NodeRenamer    = (*node)(nil)
	_ gofs.NodeLinker     = (*node)(nil)
	_ gofs.NodeSymlinker  = (*node)(nil)
	_ gofs.NodeReadlinker = (*node)(nil)
	_ gofs.NodeReaddirer  = (*node)(nil)
	_ gofs.NodeStatfser   = (*node)(nil)
)

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	fi, err := n.s.p.Lstat(n.child(name))
	if err != nil {
		return nil, errno(err)
	}
	return n.newChild(ctx, fi, out), 0
}

func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var fi fs.FileInfo
	var err error
	if h, ok := f.(*handle); ok {
		fi, err = h.f.Stat()
	} else {
		fi, err = n.s.p.Lstat(n.path())
	}
	if err != nil {
		return errno(err)
	}
	n.s.fill(fi, &out.Attr)
	return 0
}

func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var a vfs.SetAttr
	if m, ok := in.GetMode(); ok {
		fm := fsMode(m)
		a.Mode = &fm
	}
	if sz, ok := in.GetSize(); ok {
		s := int64(sz)
		a.Size = &s
	}
	if u, ok := in.GetUID(); ok {
		a.UID = &u
	}
	if g, ok := in.GetGID(); ok {
		a.GID = &g
	}
	if t, ok := in.GetATime(); ok {
		a.Atime = &t
	}
	if t, ok := in.GetMTime(); ok {
		a.Mtime = &t
	}
	var err error
	if h, ok := f.(*handle); ok {
		err = h.f.Setattr(a)
	} else {
		err = n.s.p.Lsetattr(n.path(), a)
	}
	if err != nil {
		return errno(err)
	}
	return n.Getattr(ctx, f, out)
}

func (n *node) openFile(name string, flags int, mode fs.FileMode) (*handle, syscall.Errno) {
	f, err := n.s.p.Open(name, flags, mode)
	if err != nil {
		return nil, errno(err)
	}
	n.s.open.Add(1)
	return &handle{s: n.s, f: f}, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	// The kernel resolved symlinks already: never follow one here (a
	// symlink swapped in since the lookup must not be opened through).
	h, e := n.openFile(n.path(), int(flags)&^syscall.O_CREAT|syscall.O_NOFOLLOW, 0)
	if e != 0 {
		return nil, 0, e
	}
	// and the path must still name this inode. If it names another one,
	// the inode the kernel asked for was unlinked from that name since its
	// lookup: ENOENT, as an open racing an unlink gets on a local
	// filesystem. (ESTALE would make the kernel revalidate and retry
	// once, and surface ESTALE to the caller if the race repeats.)
	if fi, err := h.f.Stat(); err != nil || n.s.fuseIno(fi.Sys().(vfs.Attr)) != n.StableAttr().Ino {
		h.Release(ctx)
		return nil, 0, syscall.ENOENT
	}
	return h, fuse.FOPEN_DIRECT_IO, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	p := n.child(name)
	h, e := n.openFile(p, int(flags)|os.O_CREATE|syscall.O_NOFOLLOW, fsMode(mode))
	if e != 0 {
		return nil, nil, 0, e
	}
	fi, err := h.f.Stat()
	if err != nil {
		h.Release(ctx)
		return nil, nil, 0, errno(err)
	}
	return n.newChild(ctx, fi, out), h, fuse.FOPEN_DIRECT_IO, 0
}

func (n *node) entry(ctx context.Context, p string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	fi, err := n.s.p.Lstat(p)
	if err != nil {
		return nil, errno(err)
	}
	return n.newChild(ctx, fi, out), 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := n.child(name)
	if err := n.s.p.Mkdir(p, fsMode(mode)); err != nil {
		return nil, errno(err)
	}
	return n.entry(ctx, p, out)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return errno(n.s.p.Rmdir(n.child(name)))
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return errno(n.s.p.Unlink(n.child(name)))
}

func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if flags != 0 {
		return syscall.EINVAL // RENAME_NOREPLACE / RENAME_EXCHANGE are not implemented
	}
	np := "/" + newParent.EmbeddedInode().Path(nil)
	return errno(n.s.p.Rename(n.child(name), path.Join(np, newName)))
}

func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := n.child(name)
	if err := n.s.p.Link("/"+target.EmbeddedInode().Path(nil), p); err != nil {
		return nil, errno(err)
	}
	return n.entry(ctx, p, out)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := n.child(name)
	if err := n.s.p.Symlink(target, p); err != nil {
		return nil, errno(err)
	}
	return n.entry(ctx, p, out)
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, err := n.s.p.Readlink(n.path())
	if err != nil {
		return nil, errno(err)
	}
	return []byte(t), 0
}

func (n *node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ents, err := n.s.p.ReadDir(n.path())
	if err != nil {
		return nil, errno(err)
	}
	out := make([]fuse.DirEntry, 0, len(ents))
	for _, e := range ents {
		de := fuse.DirEntry{Name: e.Name(), Mode: unixMode(e.Type())}
		if fi, err := e.Info(); err == nil {
			de.Ino = n.s.fuseIno(fi.Sys().(vfs.Attr))
			de.Mode = unixMode(fi.Mode())
		}
		out = append(out, de)
	}
	return gofs.NewListDirStream(out), 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	st, err := n.s.p.Statfs(n.path())
	if err != nil {
		return errno(err)
	}
	out.Bsize, out.Blocks, out.Bfree, out.Bavail = uint32(st.Bsize), st.Blocks, st.Bfree, st.Bavail
	out.Files, out.Ffree, out.NameLen, out.Frsize = st.Files, st.Ffree, uint32(st.NameLen), uint32(st.Bsize)
	return 0
}

// handle is one FUSE open: one vfs.File.
type handle struct {
	s *Server
	f *vfs.File
}

var (
	_ gofs.FileReader    = (*handle)(nil)
	_ gofs.FileWriter    = (*handle)(nil)
	_ gofs.FileReleaser  = (*handle)(nil)
	_ gofs.FileGetattrer = (*handle)(nil)
	_ gofs.FileFsyncer   = (*handle)(nil)
	_ gofs.FileFlusher   = (*handle)(nil)
)

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.f.ReadAt(dest, off)
	if err != nil && err != io.EOF {
		return nil, errno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := h.f.WriteAt(data, off)
	if err != nil {
		return uint32(n), errno(err)
	}
	return uint32(n), 0
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	err := h.f.Close()
	h.s.open.Add(-1)
	return errno(err)
}

func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	fi, err := h.f.Stat()
	if err != nil {
		return errno(err)
	}
	h.s.fill(fi, &out.Attr)
	return 0
}

func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno { return errno(h.f.Sync()) }
func (h *handle) Flush(ctx context.Context) syscall.Errno               { return 0 }
