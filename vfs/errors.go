package vfs

import (
	"errors"
	"io/fs"
	"syscall"

	"github.com/raceless/raceless"
)

// Errno is a Linux error number returned by the VFS, always wrapped in an
// *fs.PathError naming the operation and the path. It unwraps to the
// matching syscall.Errno, so errors.Is(err, fs.ErrNotExist) and
// errors.Is(err, syscall.EBUSY) both work; EBUSY also matches
// raceless.ErrBusy and ENODEV matches raceless.ErrNotFound.
type Errno syscall.Errno

// The errors the VFS returns. Each is documented where it is returned.
const (
	EPERM        = Errno(syscall.EPERM)        // link of a directory; mkdir, mknod, symlink, link, unlink, rmdir, rename, setattr in a filesystem without the operation
	ENOENT       = Errno(syscall.ENOENT)       // no such file or directory; a detached mount has no path; a Loc whose mount is gone
	ENXIO        = Errno(syscall.ENXIO)        // open of a special file (socket, named pipe, device node) the filesystem cannot open
	EBADF        = Errno(syscall.EBADF)        // file not open for reading/writing
	EAGAIN       = Errno(syscall.EAGAIN)       // MNT_EXPIRE: mount marked for expiry
	EACCES       = Errno(syscall.EACCES)       // permission denied (the filesystem's); O_CREAT in a directory without the create operation
	EBUSY        = Errno(syscall.EBUSY)        // mount in use; mount point of rmdir/rename/unlink
	EEXIST       = Errno(syscall.EEXIST)       // file exists
	EXDEV        = Errno(syscall.EXDEV)        // rename/link across mounts
	ENODEV       = Errno(syscall.ENODEV)       // unknown filesystem type
	ENOTDIR      = Errno(syscall.ENOTDIR)      // a path component, or a mount point, is not a directory
	EISDIR       = Errno(syscall.EISDIR)       // write open of a directory
	EINVAL       = Errno(syscall.EINVAL)       // not a mount point; bad flags; rename into itself
	ENOSPC       = Errno(syscall.ENOSPC)       // filesystem full: its data or its inodes
	EFBIG        = Errno(syscall.EFBIG)        // a size or a write past the filesystem's maximum file size
	EMLINK       = Errno(syscall.EMLINK)       // a link past the filesystem's link count limit
	EROFS        = Errno(syscall.EROFS)        // read-only filesystem (returned by filesystems; the VFS has no read-only mounts)
	ENAMETOOLONG = Errno(syscall.ENAMETOOLONG) // a component over NameMax bytes, a path over PathMax
	ENOTEMPTY    = Errno(syscall.ENOTEMPTY)    // rmdir or rename over a non-empty directory
	ELOOP        = Errno(syscall.ELOOP)        // more than MaxSymlinks symlinks; move under itself
	ENOTSUP      = Errno(syscall.EOPNOTSUPP)   // the filesystem does not implement the operation
	EIO          = Errno(syscall.EIO)          // the filesystem's code panicked (a *PanicError; the module is tainted)
)

// Limits, as Linux defines them (NAME_MAX, PATH_MAX, MAXSYMLINKS).
const (
	NameMax     = 255
	PathMax     = 4096
	MaxSymlinks = 40
)

func (e Errno) Error() string { return syscall.Errno(e).Error() }

// Unwrap returns the syscall.Errno.
func (e Errno) Unwrap() error { return syscall.Errno(e) }

// Is matches the raceless sentinels that mean the same thing.
func (e Errno) Is(target error) bool {
	switch e {
	case EBUSY:
		return target == raceless.ErrBusy
	case ENODEV:
		return target == raceless.ErrNotFound
	case EINVAL:
		return target == raceless.ErrInvalid
	}
	return false
}

func pathErr(op, path string, err error) error {
	if err == nil {
		return nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Op == op && pe.Path == path {
		return err
	}
	return &fs.PathError{Op: op, Path: path, Err: err}
}

// ToErrno maps any error the VFS or a filesystem returns to the errno a
// system call would return (the FUSE view uses it). Unknown errors are EIO.
func ToErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, fs.ErrExist):
		return syscall.EEXIST
	case errors.Is(err, fs.ErrPermission):
		return syscall.EPERM
	case errors.Is(err, fs.ErrClosed):
		return syscall.EBADF
	case errors.Is(err, fs.ErrInvalid):
		return syscall.EINVAL
	case errors.Is(err, raceless.ErrBusy):
		return syscall.EBUSY
	case errors.Is(err, raceless.ErrNotFound):
		return syscall.ENODEV
	}
	return syscall.EIO
}
