package vfs

import (
	"context"
	"io/fs"
	"time"
)

// FileSystemType is what a module registers under raceless.KindFilesystem:
//
//	k.Register(raceless.KindFilesystem, "ramfs", ramfs.Type())
//
// The VFS finds it with Host.Acquire, which takes a reference on the owner
// module; the superblock Mount returns keeps that reference until it is
// released. Mount is module code: it is called with the owner's reference
// held and may block.
type FileSystemType interface {
	Mount(ctx context.Context, req MountRequest) (Superblock, error)
}

// FileSystemTypeFunc adapts a function to FileSystemType.
type FileSystemTypeFunc func(ctx context.Context, req MountRequest) (Superblock, error)

// Mount calls f.
func (f FileSystemTypeFunc) Mount(ctx context.Context, req MountRequest) (Superblock, error) {
	return f(ctx, req)
}

// MountRequest carries what mount(2) passes to a filesystem.
type MountRequest struct {
	Source  string     // the device or source string ("none" when empty)
	Options string     // comma-separated options, as given (the "data" argument)
	NS      *Namespace // the namespace being mounted in; nil for internal mounts
	Cred    Cred       // who mounts: the owner of the root directory unless options say otherwise (as tmpfs)
}

// Cred is who performs an operation: the filesystem user and group IDs
// (fsuid, fsgid), as a FUSE request's header carries them. The VFS makes
// new nodes owned by it; it checks no permissions itself (see
// "Permissions" in the package doc).
type Cred struct {
	UID, GID uint32
}

// CreateAttr is what a new node is made with. The VFS computes it as
// Linux's inode_init_owner does: the owner is the caller's Cred, except
// that in a directory with the setgid bit the group is the directory's,
// and a new directory there gets the setgid bit too.
type CreateAttr struct {
	// Mode is the new node's whole mode: the type bits (none for a
	// regular file; fs.ModeDir, fs.ModeSymlink; for Mknod fs.ModeNamedPipe,
	// fs.ModeSocket, fs.ModeDevice with or without fs.ModeCharDevice) and
	// the permission bits with setuid, setgid and sticky, masked as
	// mkdir(2), open(2) and mknod(2) mask them (a symlink is always 0777).
	Mode     fs.FileMode
	UID, GID uint32
	Rdev     uint64 // the device number of a device node, as Attr.Rdev; 0 otherwise
}

// Superblock is one instance of a filesystem. Its Release is the module's
// release operation: the VFS calls it exactly once, after the last mount
// and the last open file of it are gone, and only then drops the module
// reference (outside module code).
type Superblock interface {
	Root() Node
	Statfs() (Statfs, error)
	Release()
}

// Statfs is statfs(2)'s answer.
type Statfs struct {
	Bsize, Blocks, Bfree, Bavail, Files, Ffree uint64
	NameLen                                    uint64
}

// Attr is a node's metadata. Ino must be unique and stable within a
// superblock: the VFS keys mount points by it.
type Attr struct {
	Ino                 uint64
	Dev                 uint64      // filled by the VFS (the superblock's number); filesystems leave it 0
	Mode                fs.FileMode // type bits and permission bits
	Size                int64
	Nlink               uint32
	UID, GID            uint32
	Rdev                uint64 // device number of a device node, as stat(2)'s st_rdev (FUSE carries the low 32 bits)
	Blocks              int64  // 512-byte blocks allocated (st_blocks): less than Size/512 for a sparse file
	Atime, Mtime, Ctime time.Time
}

// SetAttr changes metadata: nil fields stay as they are. A filesystem
// applies it as Linux's setattr does: the change time becomes now,
// except for a Size equal to the current size given alone (truncate(2)
// to the same size changes nothing); a Size that changes the size also
// sets the modification time to now, unless Mtime is given.
type SetAttr struct {
	Mode         *fs.FileMode // permission bits only
	Size         *int64
	UID, GID     *uint32
	Atime, Mtime *time.Time
}

// DirEntry is one name in a directory.
type DirEntry struct {
	Name string
	Ino  uint64
	Mode fs.FileMode // type bits
}

// Node is a file, directory or symlink of a filesystem. Further abilities
// are the optional interfaces below; an operation on a node that lacks the
// interface fails with ENOTDIR (directory operations), EINVAL (Readlink) or
// ENOTSUP. Node methods are module code: the VFS calls them holding a
// mount reference (so the module is pinned), holding no VFS lock except in
// the few calls listed under "Concurrency" in the package doc (what may
// then not be called back is listed there too), and recovers their panics
// (see "Panics in filesystems" in the package doc).
type Node interface {
	Stat() (Attr, error)
}

// DirNode is a directory. Lookup("..") must return the parent directory
// (the root returns itself): the VFS walks ".." through it.
type DirNode interface {
	Node
	Lookup(name string) (Node, error)
	ReadDir() ([]DirEntry, error)
}

// WritableDir is a directory whose entries can change. Names are single
// components, never "." or "..", at most NameMax bytes, without NUL or
// '/'. The VFS decides a new node's mode and owner (CreateAttr); the
// filesystem stores them. ENOSPC when the filesystem is full (its data or
// its inodes); ENOENT when the directory was removed.
type WritableDir interface {
	DirNode
	Create(name string, a CreateAttr) (Node, error) // a regular file; EEXIST if name exists
	Mkdir(name string, a CreateAttr) (Node, error)
	Symlink(target, name string, a CreateAttr) (Node, error)
	Unlink(name string) error // EISDIR for a directory
	Rmdir(name string) error  // ENOTEMPTY, ENOTDIR
	// Rename moves oldName to newDir/newName; newDir is of the same
	// superblock. Replacing follows rename(2).
	Rename(oldName string, newDir DirNode, newName string) error
	Link(target Node, name string) error // EMLINK at the filesystem's link limit
}

// MknodDir is a WritableDir that can make special files: named pipes,
// sockets and device nodes (a.Mode's type bits say which; a.Rdev is a
// device's number). A directory without it answers mknod(2) EPERM, as
// Linux does for a filesystem without a mknod operation.
type MknodDir interface {
	WritableDir
	Mknod(name string, a CreateAttr) (Node, error)
}

// SymlinkNode is a symbolic link.
type SymlinkNode interface {
	Node
	Readlink() (string, error)
}

// OpenNode can be opened for I/O. flag is the os.O_* flag set. A special
// file (named pipe, socket, device node) the filesystem cannot open
// answers ENXIO, as Linux does for a socket or a device without a driver.
type OpenNode interface {
	Node
	Open(flag int) (Handle, error)
}

// SetattrNode accepts chmod, truncate, chown and utimes.
type SetattrNode interface {
	Node
	Setattr(a SetAttr) error
}

// Handle is an open file of a filesystem. Release is its release
// operation: the VFS calls it exactly once, at the last close, before it
// drops the mount (and with it, maybe, the module) reference.
//
// WriteAt follows write(2): a write that cannot go past the filesystem's
// maximum file size writes what fits and fails EFBIG (EFBIG alone when
// off is at or past it), one that runs out of space writes what fits and
// fails ENOSPC; n counts the bytes written either way. The VFS refuses
// negative offsets and offsets whose end overflows int64 (EINVAL) before
// calling it.
type Handle interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Release() error
}

// Appender is a Handle that appends atomically (O_APPEND); it returns the
// offset after the write.
type Appender interface {
	Append(p []byte) (n int, end int64, err error)
}

// Syncer is a Handle that can flush (fsync).
type Syncer interface {
	Sync() error
}

// SizedHandle is a Handle whose content size differs from the node's Attr
// (generated files report size 0, like procfs): SEEK_END uses it.
type SizedHandle interface {
	Size() int64
}
