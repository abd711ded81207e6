// Package fusefs exposes a vfs namespace (as seen from a vfs.Proc) at a
// host directory through FUSE (go-fuse/v2's fs API).
//
// Each FUSE inode is a vfs.Loc: the kernel names a node, never a path, so
// every request acts on the node it names, as the kernel's own
// filesystems do. There is no path rebuilt in the namespace: a path as
// long as the kernel allows (PATH_MAX from a process's working directory,
// at any depth) works, and a process whose working directory is in a
// lazily unmounted raceless mount keeps using it. A FUSE inode holds no
// reference on its mount (the kernel may remember an inode long after
// its last use): once the mount is dead, requests on it fail ENOENT.
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
// # Permissions and ownership
//
// The mount has the kernel's default_permissions: the kernel checks every
// access against the mode, owner and group this server reports, with the
// caller's user, groups and capabilities, as for its own filesystems
// (generic_permission, the sticky bit, setattr_prepare's rules for chmod,
// chown and utimes, clearing setgid). A FUSE request carries only the
// caller's uid, gid and pid, not its supplementary groups nor its
// capabilities, so the server could not decide as Linux does. What the
// kernel leaves to the server, this one does: new nodes are owned by the
// caller's uid and gid (with a setgid directory's group, as the VFS's
// CreateAttr), and a write by a caller other than root clears the setuid
// bit and a group-executable file's setgid bit (the kernel's
// FUSE_WRITE_KILL_SUIDGID, which go-fuse does not pass on: root stands for
// CAP_FSETID).
//
// Without Options.AllowOther the kernel refuses every process whose uid is
// not the mounting user's (EACCES); with it (allow_other; for a mount made
// through fusermount, /etc/fuse.conf must allow it with user_allow_other),
// every user reaches the namespace and the permission bits decide.
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
	"sync"
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
	// AllowOther lets users other than the mounting one reach the mount
	// (allow_other); the permission bits then decide, as the package
	// doc says. Off by default: the mounting user's consent is needed.
	AllowOther bool
}

// Server is a running FUSE exposure of a namespace.
type Server struct {
	srv *fuse.Server
	dir string

	openMu  sync.Mutex    // guards open and changed
	open    int64         // FUSE file handles (vfs.Files) open now
	changed chan struct{} // closed (and replaced) when open changes

	p    *vfs.Proc
	wait chan struct{}

	inoMu    sync.Mutex           // guards overflow and next
	overflow map[[2]uint64]uint64 // inode numbers of (mount, ino) pairs that do not fit the packing (see ino)
	next     uint64
}

// rootIno is the root's inode number, FUSE's root node ID.
const rootIno = fuse.FUSE_ROOT_ID

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
	s := &Server{dir: dir, p: p, overflow: map[[2]uint64]uint64{}, wait: make(chan struct{}), changed: make(chan struct{})}
	zero := time.Duration(0)
	root := &node{s: s, root: true}
	srv, err := gofs.Mount(dir, root, &gofs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		// the modes are the filesystem's: 0 stays 0 (go-fuse would
		// otherwise show 0644 and 0755)
		NullPermissions: true,
		RootStableAttr:  &gofs.StableAttr{Ino: rootIno},
		MountOptions: fuse.MountOptions{
			DirectMount:              true,
			FsName:                   name,
			Name:                     "raceless",
			Debug:                    o.Debug,
			AllowOther:               o.AllowOther,
			Options:                  []string{"default_permissions"},
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
func (s *Server) OpenFiles() int64 {
	s.openMu.Lock()
	defer s.openMu.Unlock()
	return s.open
}

// WaitOpenFiles blocks until at most n FUSE file handles are open, or ctx
// ends (its error). The kernel releases a file after the process's close
// returned (FUSE's RELEASE is asynchronous): waiting for 0 is waiting for
// the releases of every file closed so far, which an unmount does not.
func (s *Server) WaitOpenFiles(ctx context.Context, n int64) error {
	for {
		s.openMu.Lock()
		open, changed := s.open, s.changed
		s.openMu.Unlock()
		if open <= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// addOpen counts a handle opened (+1) or released (-1), waking waiters.
func (s *Server) addOpen(d int64) {
	s.openMu.Lock()
	defer s.openMu.Unlock()
	s.open += d
	close(s.changed)
	s.changed = make(chan struct{})
}

// Unmount unmounts the FUSE filesystem. Like umount(2) it fails (EBUSY)
// while processes have files open or working directories in it; then the
// host's lazy unmount (umount -l dir) detaches it and the server sees the
// last releases. Unmount waits for the server loop to end. A release the
// kernel had not sent yet when the unmount succeeded is lost, and its
// vfs.File stays open: call WaitOpenFiles(ctx, 0) first.
func (s *Server) Unmount() error {
	if err := s.srv.Unmount(); err != nil {
		return err
	}
	<-s.wait
	return nil
}

// Wait blocks until the filesystem is unmounted (by Unmount or from outside).
func (s *Server) Wait() { <-s.wait }

// ino is the inode number the kernel sees for a node: one per (mount, inode
// of its filesystem), since the kernel sees the whole namespace as one
// filesystem. It is packed, mount number << 40 | inode, when the mount
// number is below 2^23 and the inode number below 2^40 (never 1, the
// root's), so that a node keeps its number for the server's life with no
// table; a pair that does not fit gets a number from 2^63 up, from a table
// that is never pruned (such pairs come only from filesystems with huge
// inode numbers, as the procfs view's hashed ones).
func (s *Server) ino(m *vfs.Mount, ino uint64) uint64 {
	mid := m.ID()
	if mid < 1<<23 && ino < 1<<40 {
		return mid<<40 | ino
	}
	k := [2]uint64{mid, ino}
	s.inoMu.Lock()
	defer s.inoMu.Unlock()
	if i, ok := s.overflow[k]; ok {
		return i
	}
	s.next++
	s.overflow[k] = 1<<63 | s.next
	return s.overflow[k]
}

// node is a FUSE inode: a vfs.Loc, or the root, which is resolved at each
// request (a mount on "/" changes it).
type node struct {
	gofs.Inode
	s    *Server
	root bool
	loc  vfs.Loc // immutable; unset for the root
}

// at returns the node's Loc.
func (n *node) at() (vfs.Loc, syscall.Errno) {
	if !n.root {
		return n.loc, 0
	}
	l, _, err := n.s.p.Root()
	if err != nil {
		return vfs.Loc{}, errno(err)
	}
	return l, 0
}

func errno(err error) syscall.Errno { return vfs.ToErrno(err) }

// cred is the credentials of the process making the request.
func cred(ctx context.Context) vfs.Cred {
	if c, ok := fuse.FromContext(ctx); ok {
		return vfs.Cred{UID: c.Uid, GID: c.Gid}
	}
	return vfs.Cred{}
}

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

// fsMode converts a Unix mode, type bits included, to an fs.FileMode.
func fsMode(m uint32) fs.FileMode {
	out := fs.FileMode(m & 0o777)
	switch m & syscall.S_IFMT {
	case syscall.S_IFDIR:
		out |= fs.ModeDir
	case syscall.S_IFLNK:
		out |= fs.ModeSymlink
	case syscall.S_IFIFO:
		out |= fs.ModeNamedPipe
	case syscall.S_IFSOCK:
		out |= fs.ModeSocket
	case syscall.S_IFCHR:
		out |= fs.ModeDevice | fs.ModeCharDevice
	case syscall.S_IFBLK:
		out |= fs.ModeDevice
	case 0, syscall.S_IFREG:
	default:
		out |= fs.ModeIrregular
	}
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

// fill converts the attributes of the node at l.
func (s *Server) fill(l vfs.Loc, a vfs.Attr, out *fuse.Attr) {
	out.Ino = s.ino(l.Mount(), l.Ino())
	out.Mode = unixMode(a.Mode)
	out.Size = uint64(a.Size)
	out.Blocks = uint64(a.Blocks)
	out.Nlink = a.Nlink
	out.Owner = fuse.Owner{Uid: a.UID, Gid: a.GID}
	out.Rdev = uint32(a.Rdev)
	out.SetTimes(&a.Atime, &a.Mtime, &a.Ctime)
	out.Blksize = 4096
}

// newChild answers a lookup or a creation: the node at l, with attributes a.
func (n *node) newChild(ctx context.Context, l vfs.Loc, a vfs.Attr, out *fuse.EntryOut) *gofs.Inode {
	n.s.fill(l, a, &out.Attr)
	return n.NewInode(ctx, &node{s: n.s, loc: l}, gofs.StableAttr{Mode: out.Attr.Mode & syscall.S_IFMT, Ino: out.Attr.Ino})
}

// loc returns the Loc of another node of this server (a rename's or a
// link's other side).
func (s *Server) loc(e gofs.InodeEmbedder) (vfs.Loc, syscall.Errno) {
	o, ok := e.(*node)
	if !ok || o.s != s {
		return vfs.Loc{}, syscall.EXDEV
	}
	return o.at()
}

var (
	_ gofs.NodeLookuper   = (*node)(nil)
	_ gofs.NodeGetattrer  = (*node)(nil)
	_ gofs.NodeSetattrer  = (*node)(nil)
	_ gofs.NodeOpener     = (*node)(nil)
	_ gofs.NodeCreater    = (*node)(nil)
	_ gofs.NodeMkdirer    = (*node)(nil)
	_ gofs.NodeMknoder    = (*node)(nil)
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
	d, e := n.at()
	if e != 0 {
		return nil, e
	}
	l, a, err := n.s.p.LookupAt(d, name)
	if err != nil {
		return nil, errno(err)
	}
	return n.newChild(ctx, l, a, out), 0
}

func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if h, ok := f.(*handle); ok {
		return h.Getattr(ctx, out)
	}
	l, e := n.at()
	if e != 0 {
		return e
	}
	a, err := l.Stat()
	if err != nil {
		return errno(err)
	}
	n.s.fill(l, a, &out.Attr)
	if n.root {
		out.Ino = rootIno
	}
	return 0
}

func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var a vfs.SetAttr
	if m, ok := in.GetMode(); ok {
		fm := fsMode(m) &^ fs.ModeType
		a.Mode = &fm
	}
	if sz, ok := in.GetSize(); ok {
		if sz > 1<<63-1 {
			return syscall.EFBIG
		}
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
		l, e := n.at()
		if e != 0 {
			return e
		}
		err = l.Setattr(a)
	}
	if err != nil {
		return errno(err)
	}
	return n.Getattr(ctx, f, out)
}

// newHandle counts the open file f as a FUSE handle.
func (s *Server) newHandle(f *vfs.File) *handle {
	s.addOpen(1)
	return &handle{s: s, f: f}
}

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	l, e := n.at()
	if e != 0 {
		return nil, 0, e
	}
	// The kernel resolved the name to this node: it is opened itself.
	f, err := l.Open(int(flags) &^ (os.O_CREATE | os.O_EXCL))
	if err != nil {
		return nil, 0, errno(err)
	}
	return n.s.newHandle(f), fuse.FOPEN_DIRECT_IO, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	d, e := n.at()
	if e != 0 {
		return nil, nil, 0, e
	}
	f, err := n.s.p.OpenAt(d, name, int(flags)|os.O_CREATE|syscall.O_NOFOLLOW, fsMode(mode), cred(ctx))
	if err != nil {
		return nil, nil, 0, errno(err)
	}
	h := n.s.newHandle(f)
	fi, err := f.Stat()
	if err != nil {
		h.Release(ctx)
		return nil, nil, 0, errno(err)
	}
	return n.newChild(ctx, f.Loc(), fi.Sys().(vfs.Attr), out), h, fuse.FOPEN_DIRECT_IO, 0
}

// made answers a creation: the new node's Loc and attributes, or its error.
func (n *node) made(ctx context.Context, l vfs.Loc, a vfs.Attr, err error, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if err != nil {
		return nil, errno(err)
	}
	return n.newChild(ctx, l, a, out), 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	d, e := n.at()
	if e != 0 {
		return nil, e
	}
	l, a, err := n.s.p.MkdirAt(d, name, fsMode(mode), cred(ctx))
	return n.made(ctx, l, a, err, out)
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	d, e := n.at()
	if e != 0 {
		return nil, e
	}
	l, a, err := n.s.p.MknodAt(d, name, fsMode(mode), uint64(dev), cred(ctx))
	return n.made(ctx, l, a, err, out)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	d, e := n.at()
	if e != 0 {
		return nil, e
	}
	l, a, err := n.s.p.SymlinkAt(target, d, name, cred(ctx))
	return n.made(ctx, l, a, err, out)
}

func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	d, e := n.at()
	if e != 0 {
		return nil, e
	}
	t, e := n.s.loc(target)
	if e != 0 {
		return nil, e
	}
	l, a, err := n.s.p.LinkAt(t, d, name)
	return n.made(ctx, l, a, err, out)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	d, e := n.at()
	if e != 0 {
		return e
	}
	return errno(n.s.p.RmdirAt(d, name))
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	d, e := n.at()
	if e != 0 {
		return e
	}
	return errno(n.s.p.UnlinkAt(d, name))
}

func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if flags != 0 {
		return syscall.EINVAL // RENAME_NOREPLACE, RENAME_EXCHANGE: not supported, as a filesystem without them answers
	}
	d, e := n.at()
	if e != 0 {
		return e
	}
	nd, e := n.s.loc(newParent)
	if e != 0 {
		return e
	}
	return errno(n.s.p.RenameAt(d, name, nd, newName))
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	l, e := n.at()
	if e != 0 {
		return nil, e
	}
	t, err := l.Readlink()
	if err != nil {
		return nil, errno(err)
	}
	return []byte(t), 0
}

// Readdir lists the directory as getdents(2) does on Linux ("." and ".."
// first), with the inode numbers of ino, the root's being rootIno.
func (n *node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	l, e := n.at()
	if e != 0 {
		return nil, e
	}
	ents, err := l.ReadDir()
	if err != nil {
		return nil, errno(err)
	}
	root, _, err := n.s.p.Root()
	if err != nil {
		return nil, errno(err)
	}
	m := l.Mount()
	out := make([]fuse.DirEntry, 0, len(ents))
	for _, ent := range ents {
		ino := n.s.ino(m, ent.Ino)
		if m == root.Mount() && ent.Ino == root.Ino() {
			ino = rootIno // ".." of a directory in the root, and the root's own dots
		}
		out = append(out, fuse.DirEntry{Name: ent.Name, Ino: ino, Mode: unixMode(ent.Mode)})
	}
	return gofs.NewListDirStream(out), 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	l, e := n.at()
	if e != 0 {
		return e
	}
	st, err := l.Statfs()
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

// Write writes as write(2) answers: a short count when part was written
// (the error, EFBIG or ENOSPC, is for the next write), the error when
// nothing was. A caller other than root first loses the file's setuid bit,
// and its setgid bit when group-executable, as the kernel's
// file_remove_privs does for its own filesystems.
func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if cred(ctx).UID != 0 {
		if e := h.killPriv(); e != 0 {
			return 0, e
		}
	}
	n, err := h.f.WriteAt(data, off)
	if err != nil && n == 0 {
		return 0, errno(err)
	}
	return uint32(n), 0
}

// killPriv clears the setuid bit, and the setgid bit of a
// group-executable file (should_remove_suid's rule).
func (h *handle) killPriv() syscall.Errno {
	fi, err := h.f.Stat()
	if err != nil {
		return errno(err)
	}
	m := fi.Mode()
	kill := m & fs.ModeSetuid
	if m&fs.ModeSetgid != 0 && m&0o010 != 0 {
		kill |= fs.ModeSetgid
	}
	if kill == 0 {
		return 0
	}
	nm := m &^ fs.ModeType &^ kill
	return errno(h.f.Setattr(vfs.SetAttr{Mode: &nm}))
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	err := h.f.Close()
	h.s.addOpen(-1)
	return errno(err)
}

func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	fi, err := h.f.Stat()
	if err != nil {
		return errno(err)
	}
	h.s.fill(h.f.Loc(), fi.Sys().(vfs.Attr), &out.Attr)
	return 0
}

func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno { return errno(h.f.Sync()) }
func (h *handle) Flush(ctx context.Context) syscall.Errno               { return 0 }
