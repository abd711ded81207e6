package wasm

// The filesystem ABI: a wasm module that registers a filesystem type
// (the "fs_register" host import, during init) answers the VFS's
// operations through two exports:
//
//	raceless_fs_buf(n i32) -> ptr i32       a buffer of at least n bytes in
//	                                        the guest's memory, for the request
//	raceless_fs_op(op i32, len i32) -> i64  run operation op on the request in
//	                                        that buffer: a negated Linux errno,
//	                                        or ptr<<32 | len of the response
//
// Requests and responses are little-endian fields (u32, u64, and "str":
// a u32 length then the bytes); docs/module-authors.md lists them per
// operation. Every operation is one guest call under the instance's call
// lock, with the call deadline of symbols: calls into one instance are
// serialized, and a trap or a deadline fails the operation with EIO,
// aborts the instance, and every later operation fails with EIO too.
// After the instance is torn down (an unload, forced or not) operations
// fail with ENODEV and no guest code runs.

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"syscall"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/wasm/internal/fswire"
)

// maxFSResponse bounds a response the host copies out of the guest.
const maxFSResponse = 64 << 20

func hostFSRegister(_ context.Context, in *instance, m api.Module, s []uint64) int32 {
	name, ok := readString(m, s[0], s[1], maxName)
	if !ok || !in.initing || name == "" {
		return codeInval
	}
	if m.ExportedFunction("raceless_fs_buf") == nil || m.ExportedFunction("raceless_fs_op") == nil {
		in.logger().Debug("fs_register failed: raceless_fs_buf or raceless_fs_op not exported", "type", name)
		return codeInval
	}
	if err := in.k.Register(raceless.KindFilesystem, name, &fsType{in: in}); err != nil {
		in.logger().Debug("fs_register failed", "type", name, "err", err)
		return codeOf(err)
	}
	return 0
}

// fsType is a filesystem type a wasm module registered.
type fsType struct{ in *instance }

// fsCall runs one operation: it copies req into the guest, calls
// raceless_fs_op and copies the response out. The error is a vfs.Errno:
// the guest's, EIO for a trap, a deadline or an aborted instance, ENODEV
// once the instance is gone.
func (t *fsType) fsCall(op int32, req []byte) ([]byte, error) {
	in := t.in
	what := "fs op"
	in.lock(in.l.callTicks)
	defer in.calls.unlock()
	if in.gone.Load() {
		return nil, vfs.ENODEV
	}
	if in.aborted.Load() != nil {
		return nil, vfs.EIO
	}
	// Read under the lock, after the gone check: teardown drops mod.
	bufFn, opFn := in.mod.ExportedFunction("raceless_fs_buf"), in.mod.ExportedFunction("raceless_fs_op")
	stack := []uint64{uint64(len(req)), 0}
	if err := in.callLocked(in.root, what, &bufFn, stack); err != nil {
		return nil, fsErrno(err)
	}
	ptr := uint32(stack[0])
	if len(req) > 0 && !in.mod.Memory().Write(ptr, req) {
		in.abort("raceless_fs_buf returned a buffer outside memory")
		in.kill(ErrTrap)
		return nil, vfs.EIO
	}
	stack[0], stack[1] = uint64(uint32(op)), uint64(len(req))
	if err := in.callLocked(in.root, what, &opFn, stack); err != nil {
		return nil, fsErrno(err)
	}
	r := int64(stack[0])
	if r < 0 {
		in.takeErr()
		return nil, errnoFromLinux(-r)
	}
	rp, rn := uint32(uint64(r)>>32), uint32(r)
	if rn > maxFSResponse {
		return nil, vfs.EIO
	}
	b, ok := in.mod.Memory().Read(rp, rn)
	if !ok {
		return nil, vfs.EIO
	}
	return append([]byte(nil), b...), nil
}

// linuxErrnos are the errors a filesystem module may answer, by Linux
// number (the ABI's, whatever the host's system numbers them).
var linuxErrnos = map[int64]vfs.Errno{
	1: vfs.EPERM, 2: vfs.ENOENT, 5: vfs.EIO, 6: vfs.ENXIO, 9: vfs.EBADF, 11: vfs.EAGAIN,
	13: vfs.EACCES, 16: vfs.EBUSY, 17: vfs.EEXIST, 18: vfs.EXDEV, 19: vfs.ENODEV,
	20: vfs.ENOTDIR, 21: vfs.EISDIR, 22: vfs.EINVAL, 27: vfs.EFBIG, 28: vfs.ENOSPC,
	30: vfs.EROFS, 31: vfs.EMLINK, 36: vfs.ENAMETOOLONG, 39: vfs.ENOTEMPTY,
	40: vfs.ELOOP, 95: vfs.ENOTSUP,
	61: vfs.Errno(syscall.ENODATA), 75: vfs.Errno(syscall.EOVERFLOW), 12: vfs.Errno(syscall.ENOMEM),
}

// errnoFromLinux returns the VFS error of a Linux errno a module
// answered: EIO for one the ABI does not know.
func errnoFromLinux(e int64) vfs.Errno {
	if v, ok := linuxErrnos[e]; ok {
		return v
	}
	return vfs.EIO
}

func fsErrno(err error) error {
	if errors.Is(err, raceless.ErrGone) {
		return vfs.ENODEV
	}
	return vfs.EIO
}

// Mount asks the guest for a new superblock.
func (t *fsType) Mount(_ context.Context, req vfs.MountRequest) (vfs.Superblock, error) {
	src := req.Source
	if src == "" {
		src = "none"
	}
	b, err := t.fsCall(fswire.OpMount, fswire.Enc(nil).Str(src).Str(req.Options).U32(req.Cred.UID).U32(req.Cred.GID))
	if err != nil {
		return nil, err
	}
	d := fswire.Dec{B: b}
	sb := &fsSuper{t: t, id: d.U64()}
	root := d.U64()
	if d.Bad {
		return nil, vfs.EIO
	}
	a, err := sb.getattr(root)
	if err != nil {
		return nil, err
	}
	sb.root = sb.node(a)
	return sb, nil
}

type fsSuper struct {
	t    *fsType
	id   uint64
	root vfs.Node
}

func (sb *fsSuper) call(op int32, req fswire.Enc) ([]byte, error) { return sb.t.fsCall(op, req) }
func (sb *fsSuper) req() fswire.Enc                               { return fswire.Enc(nil).U64(sb.id) }

func (sb *fsSuper) Root() vfs.Node { return sb.root }

func (sb *fsSuper) Statfs() (vfs.Statfs, error) {
	b, err := sb.call(fswire.OpStatfs, sb.req())
	if err != nil {
		return vfs.Statfs{}, err
	}
	d := fswire.Dec{B: b}
	s := vfs.Statfs{Bsize: d.U64(), Blocks: d.U64(), Bfree: d.U64(), Bavail: d.U64(), Files: d.U64(), Ffree: d.U64(), NameLen: d.U64()}
	if d.Bad {
		return vfs.Statfs{}, vfs.EIO
	}
	return s, nil
}

// Release tells the guest the superblock is gone (an error, for example
// of a gone instance, changes nothing).
func (sb *fsSuper) Release() { _, _ = sb.call(fswire.OpUmount, sb.req()) }

// Linux's mode type bits.
const (
	sIFMT   = 0o170000
	sIFSOCK = 0o140000
	sIFLNK  = 0o120000
	sIFREG  = 0o100000
	sIFBLK  = 0o060000
	sIFDIR  = 0o040000
	sIFCHR  = 0o020000
	sIFIFO  = 0o010000
	sISUID  = 0o4000
	sISGID  = 0o2000
	sISVTX  = 0o1000
)

func modeFromLinux(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & sIFMT {
	case sIFDIR:
		mode |= fs.ModeDir
	case sIFLNK:
		mode |= fs.ModeSymlink
	case sIFIFO:
		mode |= fs.ModeNamedPipe
	case sIFSOCK:
		mode |= fs.ModeSocket
	case sIFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case sIFBLK:
		mode |= fs.ModeDevice
	}
	if m&sISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&sISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&sISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

func modeToLinux(mode fs.FileMode) uint32 {
	m := uint32(mode.Perm())
	switch {
	case mode&fs.ModeDir != 0:
		m |= sIFDIR
	case mode&fs.ModeSymlink != 0:
		m |= sIFLNK
	case mode&fs.ModeNamedPipe != 0:
		m |= sIFIFO
	case mode&fs.ModeSocket != 0:
		m |= sIFSOCK
	case mode&fs.ModeCharDevice != 0:
		m |= sIFCHR
	case mode&fs.ModeDevice != 0:
		m |= sIFBLK
	default:
		m |= sIFREG
	}
	if mode&fs.ModeSetuid != 0 {
		m |= sISUID
	}
	if mode&fs.ModeSetgid != 0 {
		m |= sISGID
	}
	if mode&fs.ModeSticky != 0 {
		m |= sISVTX
	}
	return m
}

// decAttr reads an attribute record.
func decAttr(d *fswire.Dec) (vfs.Attr, bool) {
	w := d.Attr()
	return vfs.Attr{
		Ino: w.Ino, Mode: modeFromLinux(w.Mode), Nlink: w.Nlink, UID: w.UID, GID: w.GID,
		Size: int64(w.Size), Blocks: int64(w.Blocks), Rdev: w.Rdev,
		Atime: time.Unix(0, w.Atime), Mtime: time.Unix(0, w.Mtime), Ctime: time.Unix(0, w.Ctime),
	}, !d.Bad
}

func (sb *fsSuper) attrCall(op int32, req fswire.Enc) (vfs.Attr, error) {
	b, err := sb.call(op, req)
	if err != nil {
		return vfs.Attr{}, err
	}
	a, ok := decAttr(&fswire.Dec{B: b})
	if !ok {
		return vfs.Attr{}, vfs.EIO
	}
	return a, nil
}

func (sb *fsSuper) getattr(ino uint64) (vfs.Attr, error) {
	return sb.attrCall(fswire.OpGetattr, sb.req().U64(ino))
}

// node makes the host's node for a, of the type its mode says.
func (sb *fsSuper) node(a vfs.Attr) vfs.Node {
	n := fsNode{sb: sb, ino: a.Ino}
	switch {
	case a.Mode.IsDir():
		return &fsDir{n}
	case a.Mode&fs.ModeSymlink != 0:
		return &fsLink{n}
	default:
		return &fsFile{n}
	}
}

type fsNode struct {
	sb  *fsSuper
	ino uint64
}

func (n *fsNode) Stat() (vfs.Attr, error) { return n.sb.getattr(n.ino) }

func (n *fsNode) Setattr(s vfs.SetAttr) error {
	var valid, mode, uid, gid uint32
	var size, atime, mtime uint64
	if s.Mode != nil {
		valid |= fswire.SetMode
		mode = modeToLinux(*s.Mode) & 0o7777
	}
	if s.UID != nil {
		valid |= fswire.SetUID
		uid = *s.UID
	}
	if s.GID != nil {
		valid |= fswire.SetGID
		gid = *s.GID
	}
	if s.Size != nil {
		valid |= fswire.SetSize
		size = uint64(*s.Size)
	}
	if s.Atime != nil {
		valid |= fswire.SetAtime
		atime = uint64(s.Atime.UnixNano())
	}
	if s.Mtime != nil {
		valid |= fswire.SetMtime
		mtime = uint64(s.Mtime.UnixNano())
	}
	_, err := n.sb.call(fswire.OpSetattr, n.sb.req().U64(n.ino).U32(valid).U32(mode).U32(uid).U32(gid).U64(size).U64(atime).U64(mtime))
	return err
}

type fsFile struct{ fsNode }
type fsLink struct{ fsNode }
type fsDir struct{ fsNode }

var (
	_ vfs.OpenNode    = (*fsFile)(nil)
	_ vfs.SetattrNode = (*fsFile)(nil)
	_ vfs.SymlinkNode = (*fsLink)(nil)
	_ vfs.MknodDir    = (*fsDir)(nil)
	_ vfs.OpenNode    = (*fsDir)(nil)
)

func (n *fsLink) Readlink() (string, error) {
	b, err := n.sb.call(fswire.OpReadlink, n.sb.req().U64(n.ino))
	return string(b), err
}

func (n *fsFile) Open(flag int) (vfs.Handle, error) { return n.open(flag) }
func (n *fsDir) Open(flag int) (vfs.Handle, error)  { return n.open(flag) }

func (n *fsNode) open(flag int) (vfs.Handle, error) {
	b, err := n.sb.call(fswire.OpOpen, n.sb.req().U64(n.ino).U32(uint32(flag)))
	if err != nil {
		return nil, err
	}
	d := fswire.Dec{B: b}
	fh := d.U64()
	if d.Bad {
		return nil, vfs.EIO
	}
	return &fsHandle{sb: n.sb, fh: fh}, nil
}

func (n *fsDir) Lookup(name string) (vfs.Node, error) {
	a, err := n.sb.attrCall(fswire.OpLookup, n.sb.req().U64(n.ino).Str(name))
	if err != nil {
		return nil, err
	}
	return n.sb.node(a), nil
}

func (n *fsDir) ReadDir() ([]vfs.DirEntry, error) {
	b, err := n.sb.call(fswire.OpReaddir, n.sb.req().U64(n.ino))
	if err != nil {
		return nil, err
	}
	d := fswire.Dec{B: b}
	cnt := d.U32()
	if d.Bad || uint64(cnt) > uint64(len(b)) {
		return nil, vfs.EIO
	}
	out := make([]vfs.DirEntry, 0, cnt)
	for range cnt {
		e := vfs.DirEntry{Ino: d.U64(), Mode: modeFromLinux(d.U32()).Type(), Name: d.Str()}
		if d.Bad {
			return nil, vfs.EIO
		}
		out = append(out, e)
	}
	return out, nil
}

func (n *fsDir) make(op int32, name string, a vfs.CreateAttr, extra string) (vfs.Node, error) {
	req := n.sb.req().U64(n.ino).Str(name).U32(modeToLinux(a.Mode)).U32(a.UID).U32(a.GID).Str(extra)
	at, err := n.sb.attrCall(op, req)
	if err != nil {
		return nil, err
	}
	return n.sb.node(at), nil
}

func (n *fsDir) Create(name string, a vfs.CreateAttr) (vfs.Node, error) {
	return n.make(fswire.OpCreate, name, a, "")
}

func (n *fsDir) Mkdir(name string, a vfs.CreateAttr) (vfs.Node, error) {
	return n.make(fswire.OpMkdir, name, a, "")
}

func (n *fsDir) Symlink(target, name string, a vfs.CreateAttr) (vfs.Node, error) {
	return n.make(fswire.OpSymlink, name, a, target)
}

// Mknod makes a special file; a module without the operation answers
// EPERM.
func (n *fsDir) Mknod(name string, a vfs.CreateAttr) (vfs.Node, error) {
	req := n.sb.req().U64(n.ino).Str(name).U32(modeToLinux(a.Mode)).U32(a.UID).U32(a.GID).U64(a.Rdev)
	at, err := n.sb.attrCall(fswire.OpMknod, req)
	if err != nil {
		return nil, err
	}
	return n.sb.node(at), nil
}

func (n *fsDir) Unlink(name string) error {
	_, err := n.sb.call(fswire.OpUnlink, n.sb.req().U64(n.ino).Str(name))
	return err
}

func (n *fsDir) Rmdir(name string) error {
	_, err := n.sb.call(fswire.OpRmdir, n.sb.req().U64(n.ino).Str(name))
	return err
}

func (n *fsDir) Rename(oldName string, newDir vfs.DirNode, newName string) error {
	nd, ok := newDir.(*fsDir)
	if !ok || nd.sb != n.sb {
		return vfs.EXDEV
	}
	_, err := n.sb.call(fswire.OpRename, n.sb.req().U64(n.ino).Str(oldName).U64(nd.ino).Str(newName))
	return err
}

func (n *fsDir) Link(target vfs.Node, name string) error {
	var ino uint64
	switch t := target.(type) {
	case *fsFile:
		ino = t.ino
	case *fsLink:
		ino = t.ino
	case *fsDir:
		return vfs.EPERM
	default:
		return vfs.EXDEV
	}
	_, err := n.sb.call(fswire.OpLink, n.sb.req().U64(ino).U64(n.ino).Str(name))
	return err
}

type fsHandle struct {
	sb *fsSuper
	fh uint64
}

func (h *fsHandle) ReadAt(p []byte, off int64) (int, error) {
	b, err := h.sb.call(fswire.OpRead, h.sb.req().U64(h.fh).U64(uint64(off)).U32(uint32(min(len(p), maxFSResponse))))
	if err != nil {
		return 0, err
	}
	if len(b) > len(p) {
		return 0, vfs.EIO
	}
	n := copy(p, b)
	if n < len(p) {
		return n, io.EOF // io.ReaderAt: a short read says why
	}
	return n, nil
}

// WriteAt sends p; the guest answers the bytes written (u32) and an
// errno (u32, 0 for none) for a short write (EFBIG, ENOSPC).
func (h *fsHandle) WriteAt(p []byte, off int64) (int, error) {
	req := h.sb.req().U64(h.fh).U64(uint64(off))
	req = req.Bytes(p)
	b, err := h.sb.call(fswire.OpWrite, req)
	if err != nil {
		return 0, err
	}
	d := fswire.Dec{B: b}
	n, e := d.U32(), d.U32()
	if d.Bad || int(n) > len(p) {
		return 0, vfs.EIO
	}
	if e != 0 {
		return int(n), errnoFromLinux(int64(e))
	}
	return int(n), nil
}

func (h *fsHandle) Release() error {
	_, err := h.sb.call(fswire.OpRelease, h.sb.req().U64(h.fh))
	if errors.Is(err, vfs.ENODEV) {
		return nil // the instance and its handles are gone
	}
	return err
}
