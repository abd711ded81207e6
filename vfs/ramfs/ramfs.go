// Package ramfs is an in-memory filesystem for the vfs package, with
// tmpfs's semantics and limits: directories, regular files (sparse: read,
// write at offsets, append, truncate), symlinks, hard links, named pipes,
// sockets and device nodes, rename, unlink while open (the data lives
// until the last close and the last name are gone, by garbage
// collection), permission bits with setuid, setgid and sticky, ownership,
// timestamps and statfs.
//
// Register it from a module (modules/ramfs does) under any type name:
//
//	k.Register(raceless.KindFilesystem, "ramfs", ramfs.Type())
//
// Mount options, as tmpfs's:
//
//	size=N[k|m|g|t|%]  bytes of file data, rounded up to whole 4 KiB pages;
//	                   N% of the machine's memory; default 50%; 0: no limit
//	nr_inodes=N[k|m|g] inodes; default half the machine's memory in pages
//	                   (one inode per 8 KiB); 0: no limit
//	mode=OCTAL         the root directory's permission bits (default 0755)
//	uid=N, gid=N       the root directory's owner (default: the mounter's)
//
// Where the machine's memory is unknown (neither Linux nor macOS) the
// defaults are 512 MiB and 65536 inodes.
//
// # Limits
//
// A user reaching a ramfs (through FUSE) cannot make it allocate without
// bound. What the limits bound, and the answers past them:
//
//   - File data: allocated 4 KiB page by page as it is written, and counted
//     against size: a write that needs a page past the limit writes what
//     fits and fails ENOSPC, as tmpfs's write does. Holes (a truncate that
//     grows a file, a write past the end) allocate nothing: a sparse file
//     costs only the pages written.
//   - File size: at most MaxFileSize (16 TiB, ext4's limit with 4 KiB
//     blocks); a truncate past it fails EFBIG, a write across it writes
//     up to it and fails EFBIG (EFBIG alone when it starts at or past it),
//     as Linux's generic_write_checks.
//   - Inodes: every file, directory, symlink and special file takes one of
//     nr_inodes, and so does every hard link past a file's first name (a
//     name costs memory: tmpfs counts links the same way); ENOSPC when
//     none is left. A symlink target of 128 bytes or more takes a page of
//     size, as tmpfs's long symlinks do. So the memory a mount holds is at
//     most size, plus nr_inodes times a node's and a name's (under 1 KiB:
//     a name is at most 255 bytes).
//   - Names: at most vfs.NameMax (255) bytes; symlink targets under
//     vfs.PathMax (4096) bytes (the VFS refuses longer ones).
//   - Link counts: EMLINK at 2^32-1 links of a file or subdirectories of a
//     directory (unreachable while nr_inodes is below that).
//
// Depth costs nothing: no operation walks more than its path, except a
// rename of a directory, which walks up from the target directory to the
// root to refuse moving a directory under itself (EINVAL), as Linux's
// does.
//
// Reads do not update the access time (as a mount with noatime).
package ramfs

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/raceless/raceless/vfs"
)

// Limits.
const (
	// PageSize is the unit file data is allocated and counted in.
	PageSize = 4096
	// MaxFileSize is the largest file size: 16 TiB, as ext4 with 4 KiB
	// blocks (s_maxbytes); sizes past it are EFBIG.
	MaxFileSize = 1 << 44
	// maxLinks is the link count past which Link and Mkdir fail EMLINK.
	maxLinks = math.MaxUint32
	// shortSymlink is the target length from which a symlink takes a page
	// of size (tmpfs's SHORT_SYMLINK_LEN).
	shortSymlink = 128
	// the defaults where the machine's memory is unknown
	fallbackSize   = 512 << 20
	fallbackInodes = 65536
)

// Type returns the filesystem type: each Mount makes a new, empty instance
// whose root is owned by the mounter (req.Cred) unless uid= or gid= say
// otherwise.
func Type() vfs.FileSystemType {
	return vfs.FileSystemTypeFunc(func(_ context.Context, req vfs.MountRequest) (vfs.Superblock, error) {
		return New(req.Options, req.Cred)
	})
}

// FS is one ramfs instance (a superblock).
type FS struct {
	mu        sync.RWMutex // guards every node's fields and the counters below
	nextIno   uint64
	inodes    int64 // inode slots in use: live nodes (linked or open) and extra links
	pages     int64 // pages of data (and long symlink targets) allocated
	maxPages  int64 // size= in pages; 0: no limit
	maxInodes int64 // nr_inodes=; 0: no limit
	root      *node
	release   func() // test hook, called by Release
}

// New returns an empty instance, its root owned by owner unless the
// options (as for Mount) say otherwise. A bad option fails EINVAL.
func New(options string, owner vfs.Cred) (*FS, error) {
	mem := physicalMemory()
	f := &FS{maxPages: fallbackSize / PageSize, maxInodes: fallbackInodes}
	if mem > 0 {
		f.maxPages = pages(percent(mem, 50))
		f.maxInodes = int64(mem / PageSize / 2)
	}
	mode := fs.FileMode(0o755)
	for _, o := range strings.Split(options, ",") {
		if o == "" {
			continue
		}
		k, v, hasValue := strings.Cut(o, "=")
		bad := func() error { return fmt.Errorf("ramfs: bad %s %q: %w", k, v, vfs.EINVAL) }
		switch k {
		case "mode":
			m, err := strconv.ParseUint(v, 8, 32)
			if err != nil || m > 0o7777 {
				return nil, bad()
			}
			mode = fs.FileMode(m&0o777) | unixSpecial(uint32(m))
		case "size":
			n, err := parseSize(v, mem, true)
			if err != nil {
				return nil, bad()
			}
			f.maxPages = pages(n)
		case "nr_inodes":
			n, err := parseSize(v, mem, false)
			if err != nil || n > math.MaxInt64 {
				return nil, bad()
			}
			f.maxInodes = int64(n)
		case "uid", "gid":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return nil, bad()
			}
			if k == "uid" {
				owner.UID = uint32(n)
			} else {
				owner.GID = uint32(n)
			}
		case "rw", "defaults":
			if hasValue {
				return nil, bad()
			}
		default:
			return nil, fmt.Errorf("ramfs: unknown option %q: %w", k, vfs.EINVAL)
		}
	}
	f.inodes = 1
	f.root = f.newNode(vfs.CreateAttr{Mode: fs.ModeDir | mode, UID: owner.UID, GID: owner.GID})
	f.root.parent = f.root
	f.root.nlink = 2
	return f, nil
}

// unixSpecial returns the fs.FileMode bits of a Unix mode's setuid, setgid
// and sticky bits.
func unixSpecial(m uint32) fs.FileMode {
	var out fs.FileMode
	if m&0o4000 != 0 {
		out |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}

// parseSize parses a tmpfs size: a decimal number with an optional k, m,
// g, t, p or e suffix (any case: powers of 1024), or, where percent
// allows, N% of mem. A percentage where mem is unknown, or a size that
// overflows, is an error.
func parseSize(v string, mem uint64, pct bool) (uint64, error) {
	if pct && strings.HasSuffix(v, "%") {
		n, err := strconv.ParseUint(strings.TrimSuffix(v, "%"), 10, 64)
		if err != nil || mem == 0 || n > math.MaxUint64/mem {
			return 0, vfs.EINVAL
		}
		return percent(mem, n), nil
	}
	shift := 0
	if v != "" {
		if i := strings.IndexByte("kmgtpe", v[len(v)-1]|0x20); i >= 0 && v[len(v)-1] > '9' {
			shift = 10 * (i + 1)
			v = v[:len(v)-1]
		}
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > math.MaxUint64>>shift {
		return 0, vfs.EINVAL
	}
	return n << shift, nil
}

// percent is n% of mem (n*mem must not overflow: parseSize checks).
func percent(mem, n uint64) uint64 { return mem * n / 100 }

// pages is the number of pages holding n bytes, capped at MaxInt64.
func pages(n uint64) int64 {
	return int64(min(n/PageSize+min(n%PageSize, 1), math.MaxInt64))
}

// Root returns the root directory.
func (f *FS) Root() vfs.Node { return f.root }

// Release is the superblock's release: nothing to free but memory.
func (f *FS) Release() {
	if f.release != nil {
		f.release()
	}
}

// Statfs reports usage as tmpfs does: in 4 KiB blocks out of size, and
// inodes out of nr_inodes; a limit of 0 (none) reports 0 total and free.
func (f *FS) Statfs() (vfs.Statfs, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := vfs.Statfs{Bsize: PageSize, NameLen: vfs.NameMax}
	if f.maxPages > 0 {
		st.Blocks = uint64(f.maxPages)
		st.Bfree = uint64(max(f.maxPages-f.pages, 0))
		st.Bavail = st.Bfree
	}
	if f.maxInodes > 0 {
		st.Files = uint64(f.maxInodes)
		st.Ffree = uint64(max(f.maxInodes-f.inodes, 0))
	}
	return st, nil
}

// reserveInode takes an inode slot (locked): ENOSPC when none is left.
func (f *FS) reserveInode() error {
	if f.maxInodes > 0 && f.inodes >= f.maxInodes {
		return vfs.ENOSPC
	}
	f.inodes++
	return nil
}

// reservePage takes a page of size (locked): ENOSPC when none is left.
func (f *FS) reservePage() error {
	if f.maxPages > 0 && f.pages >= f.maxPages {
		return vfs.ENOSPC
	}
	f.pages++
	return nil
}

type page [PageSize]byte

type node struct {
	fs    *FS
	ino   uint64
	mode  fs.FileMode
	nlink uint32
	uid   uint32
	gid   uint32
	rdev  uint64
	atime time.Time
	mtime time.Time
	ctime time.Time

	parent   *node            // directories
	children map[string]*node // directories
	size     int64            // regular files
	data     map[int64]*page  // regular files: the pages written, by index; a hole has none. Bytes past size in a page are zero.
	target   string           // symlinks
	opens    int              // open handles
}

var (
	_ vfs.MknodDir    = (*node)(nil)
	_ vfs.SymlinkNode = (*node)(nil)
	_ vfs.OpenNode    = (*node)(nil)
	_ vfs.SetattrNode = (*node)(nil)
)

// newNode makes a node whose inode slot was reserved (locked).
func (f *FS) newNode(a vfs.CreateAttr) *node {
	f.nextIno++
	now := time.Now()
	n := &node{fs: f, ino: f.nextIno, mode: a.Mode, nlink: 1, uid: a.UID, gid: a.GID, rdev: a.Rdev,
		atime: now, mtime: now, ctime: now}
	switch {
	case a.Mode.IsDir():
		n.children = map[string]*node{}
	case a.Mode.Type() == 0:
		n.data = map[int64]*page{}
	}
	return n
}

func (n *node) attr() vfs.Attr {
	a := vfs.Attr{Ino: n.ino, Mode: n.mode, Nlink: n.nlink, UID: n.uid, GID: n.gid, Rdev: n.rdev,
		Atime: n.atime, Mtime: n.mtime, Ctime: n.ctime}
	switch {
	case n.mode.IsDir():
		a.Size = 4096
	case n.mode&fs.ModeSymlink != 0:
		a.Size = int64(len(n.target))
		if len(n.target) >= shortSymlink {
			a.Blocks = PageSize / 512
		}
	case n.mode.Type() == 0:
		a.Size = n.size
		a.Blocks = int64(len(n.data)) * (PageSize / 512)
	}
	return a
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

// add makes the node name in n (locked), taking an inode slot.
func (n *node) add(name string, a vfs.CreateAttr) (*node, error) {
	if err := n.dir(); err != nil {
		return nil, err
	}
	if _, ok := n.children[name]; ok {
		return nil, vfs.EEXIST
	}
	if a.Mode.IsDir() && n.nlink == maxLinks {
		return nil, vfs.EMLINK
	}
	if err := n.fs.reserveInode(); err != nil {
		return nil, err
	}
	c := n.fs.newNode(a)
	n.children[name] = c
	n.touch(c.ctime)
	return c, nil
}

// touch sets the modification and change times (locked).
func (n *node) touch(t time.Time) { n.mtime, n.ctime = t, t }

// Create implements vfs.WritableDir.
func (n *node) Create(name string, a vfs.CreateAttr) (vfs.Node, error) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	a.Mode &^= fs.ModeType
	return n.add(name, a)
}

// Mkdir implements vfs.WritableDir.
func (n *node) Mkdir(name string, a vfs.CreateAttr) (vfs.Node, error) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	a.Mode = fs.ModeDir | a.Mode&^fs.ModeType
	c, err := n.add(name, a)
	if err != nil {
		return nil, err
	}
	c.parent = n
	c.nlink = 2
	n.nlink++
	return c, nil
}

// Mknod implements vfs.MknodDir.
func (n *node) Mknod(name string, a vfs.CreateAttr) (vfs.Node, error) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	switch a.Mode.Type() {
	case fs.ModeNamedPipe, fs.ModeSocket, fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice:
	default:
		return nil, vfs.EINVAL
	}
	return n.add(name, a)
}

// Symlink implements vfs.WritableDir.
func (n *node) Symlink(target, name string, a vfs.CreateAttr) (vfs.Node, error) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	long := len(target) >= shortSymlink
	if long {
		if err := n.fs.reservePage(); err != nil {
			return nil, err
		}
	}
	a.Mode = fs.ModeSymlink | fs.ModePerm
	c, err := n.add(name, a)
	if err != nil {
		if long {
			n.fs.pages--
		}
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

// dropLink removes one name of the non-directory c (locked): a name past
// the first gives back its inode slot now, the last one when the node is
// freed.
func (f *FS) dropLink(c *node, now time.Time) {
	if c.nlink > 1 {
		f.inodes--
	}
	c.nlink--
	c.ctime = now
	f.maybeFree(c)
}

// maybeFree frees a node with no name and no open handle (locked): its
// inode slot and its pages come back, and its memory is garbage once no
// one refers to it. It happens once: a freed node cannot be opened or
// linked again (ENOENT), so it never gets a name or a handle back. What a
// Loc may still ask of it (stat, readlink) it still answers.
func (f *FS) maybeFree(c *node) {
	if c.nlink == 0 && c.opens == 0 {
		f.inodes--
		f.pages -= int64(len(c.data))
		if len(c.target) >= shortSymlink {
			f.pages--
		}
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
	now := time.Now()
	n.touch(now)
	n.fs.dropLink(c, now)
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
	now := time.Now()
	n.touch(now)
	c.nlink = 0
	c.ctime = now
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
			return nil // two names of one file: rename(2) does nothing
		}
		switch {
		case c.mode.IsDir() && !old.mode.IsDir():
			return vfs.ENOTDIR
		case !c.mode.IsDir() && old.mode.IsDir():
			return vfs.EISDIR
		case old.mode.IsDir() && len(old.children) > 0:
			return vfs.ENOTEMPTY
		}
	} else if c.mode.IsDir() && n != nd && nd.nlink == maxLinks {
		return vfs.EMLINK
	}
	now := time.Now()
	if exists {
		if old.mode.IsDir() {
			old.nlink = 0
			old.ctime = now
			nd.nlink--
			f.maybeFree(old)
		} else {
			f.dropLink(old, now)
		}
	}
	delete(n.children, oldName)
	nd.children[newName] = c
	if c.mode.IsDir() && n != nd {
		n.nlink--
		nd.nlink++
		c.parent = nd
	}
	n.touch(now)
	nd.touch(now)
	c.ctime = now
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
	if t.nlink == maxLinks {
		return vfs.EMLINK
	}
	if err := n.fs.reserveInode(); err != nil {
		return err
	}
	n.children[name] = t
	t.nlink++
	now := time.Now()
	t.ctime = now
	n.touch(now)
	return nil
}

// Setattr implements vfs.SetattrNode, as vfs.SetAttr says. A failing size
// (EFBIG, EINVAL) changes nothing.
func (n *node) Setattr(a vfs.SetAttr) error {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	ctime := true
	if a.Size != nil {
		switch {
		case n.mode.Type() != 0 || *a.Size < 0:
			return vfs.EINVAL
		case *a.Size > MaxFileSize:
			return vfs.EFBIG
		case *a.Size == n.size:
			// truncate(2) to the same size changes no time
			ctime = a.Mode != nil || a.UID != nil || a.GID != nil || a.Atime != nil || a.Mtime != nil
		default:
			n.truncate(*a.Size)
			n.mtime = now
		}
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
	if ctime {
		n.ctime = now
	}
	return nil
}

// truncate sets the size of a regular file (locked; size is within
// MaxFileSize). Growing allocates nothing (a hole); shrinking frees the
// pages past the end and zeroes the rest of the last page, so that bytes
// past size are zero (the data invariant).
func (n *node) truncate(size int64) {
	if size < n.size {
		last := (size + PageSize - 1) / PageSize // first page wholly past the end
		for i := range n.data {
			if i >= last {
				delete(n.data, i)
				n.fs.pages--
			}
		}
		if off := size % PageSize; off != 0 {
			if pg := n.data[size/PageSize]; pg != nil {
				clear(pg[off:])
			}
		}
	}
	n.size = size
}

// Open implements vfs.OpenNode: regular files only; a special file is
// ENXIO (ramfs has no driver behind a device node, and keeps no pipe or
// socket: through FUSE the kernel opens those itself).
func (n *node) Open(flag int) (vfs.Handle, error) {
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	switch {
	case n.mode.IsDir():
		return nil, vfs.EISDIR
	case n.mode.Type() != 0:
		return nil, vfs.ENXIO
	case n.nlink == 0 && n.opens == 0:
		return nil, vfs.ENOENT // freed: unlinked before this open (see maybeFree)
	}
	n.opens++
	return &handle{n: n}, nil
}

type handle struct {
	n *node
}

var _ vfs.Appender = (*handle)(nil)

func (h *handle) ReadAt(p []byte, off int64) (int, error) {
	n := h.n
	n.fs.mu.RLock()
	defer n.fs.mu.RUnlock()
	if off >= n.size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := n.size - off; int64(want) > rest {
		want = int(rest)
	}
	done := 0
	for done < want {
		pos := off + int64(done)
		in := int(pos % PageSize)
		c := min(PageSize-in, want-done)
		if pg := n.data[pos/PageSize]; pg != nil {
			copy(p[done:done+c], pg[in:])
		} else {
			clear(p[done : done+c]) // a hole reads as zeros
		}
		done += c
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

func (h *handle) WriteAt(p []byte, off int64) (int, error) {
	n := h.n
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	return n.writeAt(p, off)
}

// writeAt writes p at off (locked), as Handle.WriteAt says: up to
// MaxFileSize (EFBIG past it) and while pages can be had (ENOSPC after).
// The times change when something was written.
func (n *node) writeAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if off >= MaxFileSize {
		return 0, vfs.EFBIG
	}
	var limit error
	if int64(len(p)) > MaxFileSize-off {
		p, limit = p[:MaxFileSize-off], vfs.EFBIG
	}
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		idx, in := pos/PageSize, int(pos%PageSize)
		pg := n.data[idx]
		if pg == nil {
			if err := n.fs.reservePage(); err != nil {
				limit = err
				break
			}
			pg = new(page)
			n.data[idx] = pg
		}
		done += copy(pg[in:], p[done:])
	}
	if done > 0 {
		if end := off + int64(done); end > n.size {
			n.size = end
		}
		n.touch(time.Now())
	}
	return done, limit
}

// Append implements vfs.Appender: the end is found and written under one lock.
func (h *handle) Append(p []byte) (int, int64, error) {
	n := h.n
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	off := n.size
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
