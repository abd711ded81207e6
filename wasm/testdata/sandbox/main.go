//go:build wasip1

// Command sandbox is a test module that tries what a module may get from
// its host through WASI. Its parameter "path" is the file its file symbols
// open. Each symbol returns a count (bytes, entries) or the negated WASI
// errno of the failure (-44 ENOENT, -8 EBADF, -76 ENOTCAPABLE, ...).
//
//	read_os    os.ReadFile(path): Go's path handling (it cleans the path)
//	open_raw   path_open(3, path) as given, then fd_read to the end: the
//	           host's own handling of "..", absolute paths and symlinks
//	write_os   open path for writing and write one byte
//	hold       open path and keep it open; read_held reads it from the
//	           start; release closes it
//	preopens   how many preopened directories it has
//	environ    len(os.Environ()); args: len(os.Args)
//	clock      the wall clock in ns; random: 8 random bytes as an int64
package main

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/raceless/raceless/wasm/sdk"
)

func init() {
	sdk.OnInit(func() error {
		path, _ = sdk.Param("path")
		for _, s := range []string{"read_os", "open_raw", "write_os", "hold", "read_held", "release", "preopens", "environ", "args", "clock", "random"} {
			if err := sdk.Export(s); err != nil {
				return err
			}
		}
		return nil
	})
	sdk.OnExit(func() (int, error) { return 0, nil })
}

var (
	path string
	held *os.File
)

// errno returns the negated WASI errno of err, or -1000.
func errno(err error) int64 {
	var e syscall.Errno
	if errors.As(err, &e) {
		return -int64(e)
	}
	return -1000
}

//go:wasmexport read_os
func readOS() int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return errno(err)
	}
	return int64(len(b))
}

//go:wasmimport wasi_snapshot_preview1 path_open
func pathOpen(fd int32, dirflags int32, path unsafe.Pointer, pathLen int32, oflags int32, rightsBase uint64, rightsInheriting uint64, fdflags int32, result unsafe.Pointer) int32

//go:wasmimport wasi_snapshot_preview1 fd_read
func fdRead(fd int32, iovs unsafe.Pointer, iovsLen int32, nread unsafe.Pointer) int32

//go:wasmimport wasi_snapshot_preview1 fd_close
func fdClose(fd int32) int32

//go:wasmimport wasi_snapshot_preview1 fd_prestat_get
func fdPrestatGet(fd int32, buf unsafe.Pointer) int32

// iovec is WASI's: a pointer and a length, 32 bits each.
type iovec struct {
	buf uint32
	len uint32
}

//go:wasmexport open_raw
func openRaw() int64 {
	var fd int32
	p := append([]byte(path), 0) // never empty: a valid pointer even for ""
	const symlinkFollow, rightsFdRead = 1, 1 << 1
	if e := pathOpen(3, symlinkFollow, unsafe.Pointer(&p[0]), int32(len(path)), 0, rightsFdRead, 0, 0, unsafe.Pointer(&fd)); e != 0 {
		return -int64(e)
	}
	defer fdClose(fd)
	buf := make([]byte, 4096)
	total := int64(0)
	for {
		iov := iovec{buf: uint32(uintptr(unsafe.Pointer(&buf[0]))), len: uint32(len(buf))}
		var n uint32
		if e := fdRead(fd, unsafe.Pointer(&iov), 1, unsafe.Pointer(&n)); e != 0 {
			return -int64(e)
		}
		if n == 0 {
			return total
		}
		total += int64(n)
	}
}

//go:wasmexport write_os
func writeOS() int64 {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return errno(err)
	}
	defer f.Close()
	n, err := f.Write([]byte("x"))
	if err != nil {
		return errno(err)
	}
	return int64(n)
}

//go:wasmexport hold
func hold() int64 {
	f, err := os.Open(path)
	if err != nil {
		return errno(err)
	}
	held = f
	return 0
}

//go:wasmexport read_held
func readHeld() int64 {
	if held == nil {
		return -1000
	}
	buf := make([]byte, 1<<16)
	n, err := held.ReadAt(buf, 0)
	if n == 0 && err != nil {
		return errno(err)
	}
	return int64(n)
}

//go:wasmexport release
func release() int64 {
	if held == nil {
		return -1000
	}
	err := held.Close()
	held = nil
	if err != nil {
		return errno(err)
	}
	return 0
}

//go:wasmexport preopens
func preopens() int64 {
	var buf [8]byte
	n := int64(0)
	for fd := int32(3); fdPrestatGet(fd, unsafe.Pointer(&buf)) == 0; fd++ {
		n++
	}
	return n
}

//go:wasmexport environ
func environ() int64 { return int64(len(os.Environ())) }

//go:wasmexport args
func args() int64 { return int64(len(os.Args)) }

//go:wasmexport clock
func clock() int64 { return time.Now().UnixNano() }

//go:wasmexport random
func random() int64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return -1
	}
	return int64(binary.LittleEndian.Uint64(b[:]))
}

func main() {}
