//go:build wasip1

package main

import (
	"errors"
	"io"

	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/wasm/sdk"
)

// linuxErrno maps the VFS's errors to the ABI's codes. In the guest
// (GOOS=wasip1) syscall.Errno values are WASI's numbers, not Linux's, so
// the mapping goes by name.
var linuxErrno = map[vfs.Errno]sdk.Errno{
	vfs.EPERM: -1, vfs.ENOENT: -2, vfs.ENXIO: -6, vfs.EBADF: -9, vfs.EAGAIN: -11,
	vfs.EACCES: -13, vfs.EBUSY: -16, vfs.EEXIST: -17, vfs.EXDEV: -18, vfs.ENODEV: -19,
	vfs.ENOTDIR: -20, vfs.EISDIR: -21, vfs.EINVAL: -22, vfs.EFBIG: -27, vfs.ENOSPC: -28,
	vfs.EROFS: -30, vfs.EMLINK: -31, vfs.ENAMETOOLONG: -36, vfs.ENOTEMPTY: -39,
	vfs.ELOOP: -40, vfs.ENOTSUP: -95, vfs.EIO: -5,
}

// errnoOf returns the ABI code of a ramfs error (EIO for any other).
func errnoOf(err error) error {
	if err == nil {
		return nil
	}
	var e vfs.Errno
	if errors.As(err, &e) {
		if c, ok := linuxErrno[e]; ok {
			return c
		}
	}
	return sdk.ErrIO
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }
