//go:build wasip1

package sdk

import (
	"encoding/binary"
	"errors"
	"unsafe"
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

type fsDec struct {
	b   []byte
	bad bool
}

func (d *fsDec) u32() uint32 {
	if len(d.b) < 4 {
		d.bad = true
		return 0
	}
	v := binary.LittleEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *fsDec) u64() uint64 {
	if len(d.b) < 8 {
		d.bad = true
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *fsDec) bytes() []byte {
	n := d.u32()
	if uint32(len(d.b)) < n {
		d.bad = true
		return nil
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}

func (d *fsDec) str() string { return string(d.bytes()) }

func putU32(b []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(b, v) }
func putU64(b []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(b, v) }

func putAttr(b []byte, a Attr) []byte {
	b = putU64(b, a.Ino)
	b = putU32(b, a.Mode)
	b = putU32(b, a.Nlink)
	b = putU32(b, a.UID)
	b = putU32(b, a.GID)
	b = putU64(b, a.Size)
	b = putU64(b, a.Blocks)
	b = putU64(b, a.Rdev)
	b = putU64(b, uint64(a.Atime))
	b = putU64(b, uint64(a.Mtime))
	return putU64(b, uint64(a.Ctime))
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
	d := &fsDec{b: fsBuf[:n]}
	out, err := fsDispatch(op, d)
	if err == nil && d.bad {
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

func fsDispatch(op int32, d *fsDec) ([]byte, error) {
	if op == 1 { // mount
		src, opts, uid, gid := d.str(), d.str(), d.u32(), d.u32()
		if d.bad || fsMount == nil {
			return nil, ErrInvalid
		}
		f, err := fsMount(src, opts, uid, gid)
		if err != nil {
			return nil, err
		}
		fsNextSB++
		fsSupers[fsNextSB] = f
		return putU64(putU64(nil, fsNextSB), f.Root()), nil
	}
	sb := d.u64()
	f, ok := fsSupers[sb]
	if !ok {
		return nil, ErrInvalid
	}
	w, writable := f.(WritableFS)
	attr := func(a Attr, err error) ([]byte, error) {
		if err != nil {
			return nil, err
		}
		return putAttr(fsOut[:0], a), nil
	}
	switch op {
	case 2: // umount
		delete(fsSupers, sb)
		f.Unmount()
		return nil, nil
	case 3: // statfs
		s, err := f.Statfs()
		if err != nil {
			return nil, err
		}
		b := fsOut[:0]
		for _, v := range []uint64{s.Bsize, s.Blocks, s.Bfree, s.Bavail, s.Files, s.Ffree, s.NameLen} {
			b = putU64(b, v)
		}
		return b, nil
	case 4: // lookup
		dir, name := d.u64(), d.str()
		return attr(f.Lookup(dir, name))
	case 5: // getattr
		return attr(f.Getattr(d.u64()))
	case 6: // setattr
		ino, valid := d.u64(), d.u32()
		s := SetAttr{Mode: d.u32(), UID: d.u32(), GID: d.u32(), Size: d.u64(), Atime: int64(d.u64()), Mtime: int64(d.u64())}
		s.SetMode, s.SetUID, s.SetGID = valid&1 != 0, valid&2 != 0, valid&4 != 0
		s.SetSize, s.SetAtime, s.SetMtime = valid&8 != 0, valid&16 != 0, valid&32 != 0
		if !writable {
			return nil, ErrReadOnly
		}
		return nil, w.Setattr(ino, s)
	case 7: // readdir
		es, err := f.ReadDir(d.u64())
		if err != nil {
			return nil, err
		}
		b := putU32(fsOut[:0], uint32(len(es)))
		for _, e := range es {
			b = putU64(b, e.Ino)
			b = putU32(b, e.Mode)
			b = append(putU32(b, uint32(len(e.Name))), e.Name...)
		}
		return b, nil
	case 8: // open
		ino, flags := d.u64(), d.u32()
		if !writable && flags&3 != 0 {
			return nil, ErrReadOnly
		}
		fh, err := f.Open(ino, int(flags))
		if err != nil {
			return nil, err
		}
		return putU64(fsOut[:0], fh), nil
	case 9: // read
		fh, off, cnt := d.u64(), int64(d.u64()), d.u32()
		if cap(fsOut) < int(cnt) {
			fsOut = make([]byte, cnt)
		}
		n, err := f.Read(fh, fsOut[:cnt], off)
		if err != nil {
			return nil, err
		}
		return fsOut[:n], nil
	case 10: // write
		fh, off, p := d.u64(), int64(d.u64()), d.bytes()
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
		return putU32(putU32(fsOut[:0], uint32(n)), e), nil
	case 11: // release
		return nil, f.Release(d.u64())
	case 15: // readlink
		s, err := f.Readlink(d.u64())
		if err != nil {
			return nil, err
		}
		return append(fsOut[:0], s...), nil
	}
	if !writable {
		switch op {
		case 12, 13, 14, 16, 17, 18, 19, 20:
			return nil, ErrReadOnly
		}
		return nil, ErrNotSup
	}
	switch op {
	case 12, 13, 14: // create, mkdir, symlink
		dir, name, mode, uid, gid, extra := d.u64(), d.str(), d.u32(), d.u32(), d.u32(), d.str()
		switch op {
		case 12:
			return attr(w.Create(dir, name, mode, uid, gid))
		case 13:
			return attr(w.Mkdir(dir, name, mode, uid, gid))
		}
		return attr(w.Symlink(dir, name, extra, uid, gid))
	case 20: // mknod
		dir, name, mode, uid, gid, rdev := d.u64(), d.str(), d.u32(), d.u32(), d.u32(), d.u64()
		mk, ok := f.(MknodFS)
		if !ok {
			return nil, ErrPermission
		}
		return attr(mk.Mknod(dir, name, mode, uid, gid, rdev))
	case 16:
		dir, name := d.u64(), d.str()
		return nil, w.Unlink(dir, name)
	case 17:
		dir, name := d.u64(), d.str()
		return nil, w.Rmdir(dir, name)
	case 18:
		od, on, nd, nn := d.u64(), d.str(), d.u64(), d.str()
		return nil, w.Rename(od, on, nd, nn)
	case 19:
		ino, dir, name := d.u64(), d.u64(), d.str()
		return nil, w.Link(ino, dir, name)
	}
	return nil, ErrNotSup
}
