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
	Atime, Mtime, Ctime time.Time
}

// SetAttr changes metadata: nil fields stay as they are.
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
// components, never "." or "..", at most NameMax bytes.
type WritableDir interface {
	DirNode
	Create(name string, mode fs.FileMode) (Node, error) // EEXIST if it exists
	Mkdir(name string, mode fs.FileMode) (Node, error)
	Symlink(target, name string) (Node, error)
	Unlink(name string) error // EISDIR for a directory
	Rmdir(name string) error  // ENOTEMPTY, ENOTDIR
	// Rename moves oldName to newDir/newName; newDir is of the same
	// superblock. Replacing follows rename(2).
	Rename(oldName string, newDir DirNode, newName string) error
	Link(target Node, name string) error
}

// SymlinkNode is a symbolic link.
type SymlinkNode interface {
	Node
	Readlink() (string, error)
}

// OpenNode can be opened for I/O. flag is the os.O_* flag set.
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
