//go:build wasip1

package sdk

import (
	"errors"
	"unsafe"

	"github.com/raceless/raceless/wasm/internal/fswire"
)

// The filesystem side of the SDK: see "Filesystems" in
// docs/module-authors.md for the ABI and for why the shape is FUSE's
// low-level one (inode numbers and file handles, not node objects).

//go:wasmimport raceless fs_register
func hostFSRegister(name unsafe.Pointer, nameLen uint32) int32

// Linux mode type bits, as Attr.Mode carries them.
const (
	ModeType    = 0o170000
	ModeSymlink = 0o120000
	ModeRegular = 0o100000
	ModeDir     = 0o040000
)

// More error codes of filesystem operations (Linux errno values, negated).
const (
	ErrNotDir      Errno = -20  // ENOTDIR
	ErrIsDir       Errno = -21  // EISDIR
	ErrNoSpace     Errno = -28  // ENOSPC
	ErrReadOnly    Errno = -30  // EROFS
	ErrNameTooLong Errno = -36  // ENAMETOOLONG
	ErrNotEmpty    Errno = -39  // ENOTEMPTY
	ErrBadHandle   Errno = -9   // EBADF
	ErrAccess      Errno = -13  // EACCES
	ErrNotSup      Errno = -95  // EOPNOTSUPP
	ErrTooBig      Errno = -27  // EFBIG
	ErrXDev        Errno = -18  // EXDEV
	ErrMLink       Errno = -31  // EMLINK
	ErrNoData      Errno = -61  // ENODATA
	ErrNoSys       Errno = -38  // ENOSYS
	ErrOverflow    Errno = -75  // EOVERFLOW
	ErrNotTTY      Errno = -25  // ENOTTY
	ErrNoExec      Errno = -8   // ENOEXEC
	ErrNoMem       Errno = -12  // ENOMEM
	ErrFault       Errno = -14  // EFAULT
	ErrSpipe       Errno = -29  // ESPIPE
	ErrStale       Errno = -116 // ESTALE
)

// Attr is a node's metadata. Mode holds Linux's st_mode bits (type and
// permissions); times are nanoseconds since the epoch.
type Attr struct {
	Ino                 uint64
	Mode                uint32
	Nlink               uint32
	UID, GID            uint32
	Size, Blocks        uint64
	Rdev                uint64
	Atime, Mtime, Ctime int64
}

// SetAttr is a setattr request: only the fields whose Set* flag is true
// change. The filesystem applies Linux's rules (see vfs.SetAttr).
type SetAttr struct {
	SetMode, SetUID, SetGID, SetSize, SetAtime, SetMtime bool

	Mode         uint32 // permission bits with setuid, setgid, sticky
	UID, GID     uint32
	Size         uint64
	Atime, Mtime int64
}

// DirEntry is one name of a directory; Mode holds the type bits.
type DirEntry struct {
	Name string
	Ino  uint64
	Mode uint32
}

// Statfs is statfs(2)'s answer.
type Statfs struct {
	Bsize, Blocks, Bfree, Bavail, Files, Ffree, NameLen uint64
}

// FS is one mounted instance of a filesystem (a superblock), addressed as
// FUSE's low-level API addresses one: nodes by inode number, open files by
// a handle the filesystem chooses. The host calls one method at a time
// (calls into an instance are serialized), so an FS needs no locks.
//
// Inode numbers must be stable while a node exists: the host may ask for
// an inode it looked up earlier at any time, and an inode that was removed
// answers ErrNotFound. Lookup of ".." returns the parent (the root returns
// itself). Errors are Errno values; any other error is EIO.
type FS interface {
	Root() uint64
	Statfs() (Statfs, error)
	Lookup(dir uint64, name string) (Attr, error)
	Getattr(ino uint64) (Attr, error)
	ReadDir(dir uint64) ([]DirEntry, error)
	Readlink(ino uint64) (string, error)
	// Open opens ino with the os.O_* flags and returns a handle;
	// Read and Write address the file through it until Release.
	Open(ino uint64, flags int) (fh uint64, err error)
	Read(fh uint64, p []byte, off int64) (int, error)
	Release(fh uint64) error
	// Unmount is called once, when the host releases the superblock.
	Unmount()
}

// WritableFS is an FS whose files and directories can change. Without
// it every change answers ErrReadOnly. The host decides a new node's
// mode and owner (Linux's rules) and passes them in; mode includes the
// type bits.
type WritableFS interface {
	FS
	Setattr(ino uint64, s SetAttr) error
	// Write writes p at off; a short write returns the count and
	// ErrTooBig or ErrNoSpace.
	Write(fh uint64, p []byte, off int64) (int, error)
	Create(dir uint64, name string, mode, uid, gid uint32) (Attr, error)
	Mkdir(dir uint64, name string, mode, uid, gid uint32) (Attr, error)
	Symlink(dir uint64, name, target string, uid, gid uint32) (Attr, error)
	Unlink(dir uint64, name string) error
	Rmdir(dir uint64, name string) error
	Rename(oldDir uint64, oldName string, newDir uint64, newName string) error
	Link(ino, dir uint64, name string) error
}

// MknodFS is a WritableFS that makes special files (named pipes,
// sockets, device nodes: mode's type bits say which, rdev is a device's
// number). Without it mknod answers ErrPermission, as Linux does for a
// filesystem without the operation.
type MknodFS interface {
	WritableFS
	Mknod(dir uint64, name string, mode, uid, gid uint32, rdev uint64) (Attr, error)
}

// MountFunc makes a new superblock for mount(2)'s source and options
// (the "data" argument), mounted by uid and gid.
type MountFunc func(source, options string, uid, gid uint32) (FS, error)

var (
	fsMount  MountFunc
	fsSupers = map[uint64]FS{}
	fsNextSB uint64
	fsBuf    []byte
	fsOut    []byte
)

// RegisterFS registers the filesystem type name, whose mounts mount
// makes. Valid only during init, once per module.
func RegisterFS(name string, mount MountFunc) error {
	if fsMount != nil {
		return &opError{"register filesystem", name, ErrExists}
	}
	fsMount = mount
	p, n := strPtr(name)
	if err := errno(hostFSRegister(p, n)); err != nil {
		fsMount = nil
		return &opError{"register filesystem", name, err}
	}
	return nil
}

//go:wasmexport raceless_fs_buf
func abiFSBuf(n int32) int32 {
	if int(n) > cap(fsBuf) {
		fsBuf = make([]byte, n)
	}
	fsBuf = fsBuf[:cap(fsBuf)]
	if len(fsBuf) == 0 {
		fsBuf = make([]byte, 64)
	}
	return int32(uintptr(unsafe.Pointer(unsafe.SliceData(fsBuf))))
}

// attrOut is a's record (fswire.Attr) in fsOut.
func attrOut(a Attr) []byte {
	return fswire.Enc(fsOut[:0]).Attr(fswire.Attr{Ino: a.Ino, Mode: a.Mode, Nlink: a.Nlink, UID: a.UID, GID: a.GID,
		Size: a.Size, Blocks: a.Blocks, Rdev: a.Rdev, Atime: a.Atime, Mtime: a.Mtime, Ctime: a.Ctime})
}

// fsErr is the ABI code of a filesystem error.
func fsErr(err error) int64 {
	var e Errno
	if errors.As(err, &e) && e < 0 {
		return int64(e)
	}
	return int64(ErrIO)
}

//go:wasmexport raceless_fs_op
func abiFSOp(op int32, n int32) int64 {
	if n < 0 || int(n) > len(fsBuf) {
		return int64(ErrInvalid)
	}
	d := &fswire.Dec{B: fsBuf[:n]}
	out, err := fsDispatch(op, d)
	if err == nil && d.Bad {
		err = ErrInvalid
	}
	if err != nil {
		return fsErr(err)
	}
	fsOut = out
	if len(out) == 0 {
		return 0
	}
	return int64(uintptr(unsafe.Pointer(unsafe.SliceData(out))))<<32 | int64(len(out))
}

func fsDispatch(op int32, d *fswire.Dec) ([]byte, error) {
	if op == fswire.OpMount {
		src, opts, uid, gid := d.Str(), d.Str(), d.U32(), d.U32()
		if d.Bad || fsMount == nil {
			return nil, ErrInvalid
		}
		f, err := fsMount(src, opts, uid, gid)
		if err != nil {
			return nil, err
		}
		fsNextSB++
		fsSupers[fsNextSB] = f
		return fswire.Enc(nil).U64(fsNextSB).U64(f.Root()), nil
	}
	sb := d.U64()
	f, ok := fsSupers[sb]
	if !ok {
		return nil, ErrInvalid
	}
	w, writable := f.(WritableFS)
	attr := func(a Attr, err error) ([]byte, error) {
		if err != nil {
			return nil, err
		}
		return attrOut(a), nil
	}
	switch op {
	case fswire.OpUmount:
		delete(fsSupers, sb)
		f.Unmount()
		return nil, nil
	case fswire.OpStatfs:
		s, err := f.Statfs()
		if err != nil {
			return nil, err
		}
		b := fswire.Enc(fsOut[:0])
		for _, v := range []uint64{s.Bsize, s.Blocks, s.Bfree, s.Bavail, s.Files, s.Ffree, s.NameLen} {
			b = b.U64(v)
		}
		return b, nil
	case fswire.OpLookup:
		dir, name := d.U64(), d.Str()
		return attr(f.Lookup(dir, name))
	case fswire.OpGetattr:
		return attr(f.Getattr(d.U64()))
	case fswire.OpSetattr:
		ino, valid := d.U64(), d.U32()
		s := SetAttr{Mode: d.U32(), UID: d.U32(), GID: d.U32(), Size: d.U64(), Atime: int64(d.U64()), Mtime: int64(d.U64())}
		s.SetMode, s.SetUID, s.SetGID = valid&fswire.SetMode != 0, valid&fswire.SetUID != 0, valid&fswire.SetGID != 0
		s.SetSize, s.SetAtime, s.SetMtime = valid&fswire.SetSize != 0, valid&fswire.SetAtime != 0, valid&fswire.SetMtime != 0
		if !writable {
			return nil, ErrReadOnly
		}
		return nil, w.Setattr(ino, s)
	case fswire.OpReaddir:
		es, err := f.ReadDir(d.U64())
		if err != nil {
			return nil, err
		}
		b := fswire.Enc(fsOut[:0]).U32(uint32(len(es)))
		for _, e := range es {
			b = b.U64(e.Ino).U32(e.Mode).Str(e.Name)
		}
		return b, nil
	case fswire.OpOpen:
		ino, flags := d.U64(), d.U32()
		if !writable && flags&3 != 0 {
			return nil, ErrReadOnly
		}
		fh, err := f.Open(ino, int(flags))
		if err != nil {
			return nil, err
		}
		return fswire.Enc(fsOut[:0]).U64(fh), nil
	case fswire.OpRead:
		fh, off, cnt := d.U64(), int64(d.U64()), d.U32()
		if cap(fsOut) < int(cnt) {
			fsOut = make([]byte, cnt)
		}
		n, err := f.Read(fh, fsOut[:cnt], off)
		if err != nil {
			return nil, err
		}
		return fsOut[:n], nil
	case fswire.OpWrite:
		fh, off, p := d.U64(), int64(d.U64()), d.Bytes()
		if !writable {
			return nil, ErrReadOnly
		}
		n, err := w.Write(fh, p, off)
		var e uint32
		if err != nil {
			if n == 0 {
				return nil, err
			}
			e = uint32(-fsErr(err))
		}
		return fswire.Enc(fsOut[:0]).U32(uint32(n)).U32(e), nil
	case fswire.OpRelease:
		return nil, f.Release(d.U64())
	case fswire.OpReadlink:
		s, err := f.Readlink(d.U64())
		if err != nil {
			return nil, err
		}
		return append(fsOut[:0], s...), nil
	}
	if !writable {
		switch op {
		case fswire.OpCreate, fswire.OpMkdir, fswire.OpSymlink, fswire.OpUnlink, fswire.OpRmdir, fswire.OpRename, fswire.OpLink, fswire.OpMknod:
			return nil, ErrReadOnly
		}
		return nil, ErrNotSup
	}
	switch op {
	case fswire.OpCreate, fswire.OpMkdir, fswire.OpSymlink:
		dir, name, mode, uid, gid, extra := d.U64(), d.Str(), d.U32(), d.U32(), d.U32(), d.Str()
		switch op {
		case fswire.OpCreate:
			return attr(w.Create(dir, name, mode, uid, gid))
		case fswire.OpMkdir:
			return attr(w.Mkdir(dir, name, mode, uid, gid))
		}
		return attr(w.Symlink(dir, name, extra, uid, gid))
	case fswire.OpMknod:
		dir, name, mode, uid, gid, rdev := d.U64(), d.Str(), d.U32(), d.U32(), d.U32(), d.U64()
		mk, ok := f.(MknodFS)
		if !ok {
			return nil, ErrPermission
		}
		return attr(mk.Mknod(dir, name, mode, uid, gid, rdev))
	case fswire.OpUnlink:
		dir, name := d.U64(), d.Str()
		return nil, w.Unlink(dir, name)
	case fswire.OpRmdir:
		dir, name := d.U64(), d.Str()
		return nil, w.Rmdir(dir, name)
	case fswire.OpRename:
		od, on, nd, nn := d.U64(), d.Str(), d.U64(), d.Str()
		return nil, w.Rename(od, on, nd, nn)
	case fswire.OpLink:
		ino, dir, name := d.U64(), d.U64(), d.Str()
		return nil, w.Link(ino, dir, name)
	}
	return nil, ErrNotSup
}
