// Package fswire is the wire format of the filesystem ABI (the calls
// raceless_fs_op carries, docs/module-authors.md), shared by its two
// sides: the host (package wasm) and the guest SDK for Go (package
// wasm/sdk, built with GOOS=wasip1), so that the layout is written once.
//
// A request or a response is a sequence of little-endian u32 and u64
// values and byte strings (a u32 length, then the bytes). A request begins
// with the superblock's id (u64), except OpMount's. Dec never reads past
// its buffer: a short message sets Bad and the values read are zero.
package fswire

import "encoding/binary"

// Operation numbers of raceless_fs_op.
const (
	OpMount    = 1
	OpUmount   = 2
	OpStatfs   = 3
	OpLookup   = 4
	OpGetattr  = 5
	OpSetattr  = 6
	OpReaddir  = 7
	OpOpen     = 8
	OpRead     = 9
	OpWrite    = 10
	OpRelease  = 11
	OpCreate   = 12
	OpMkdir    = 13
	OpSymlink  = 14
	OpReadlink = 15
	OpUnlink   = 16
	OpRmdir    = 17
	OpRename   = 18
	OpLink     = 19
	OpMknod    = 20
)

// OpSetattr's valid bits: which of its values apply.
const (
	SetMode  = 1 << 0
	SetUID   = 1 << 1
	SetGID   = 1 << 2
	SetSize  = 1 << 3
	SetAtime = 1 << 4
	SetMtime = 1 << 5
)

// Enc appends values to a message.
type Enc []byte

func (e Enc) U32(v uint32) Enc   { return binary.LittleEndian.AppendUint32(e, v) }
func (e Enc) U64(v uint64) Enc   { return binary.LittleEndian.AppendUint64(e, v) }
func (e Enc) Str(s string) Enc   { return append(e.U32(uint32(len(s))), s...) }
func (e Enc) Bytes(b []byte) Enc { return append(e.U32(uint32(len(b))), b...) }

// Dec reads the values of a message in order.
type Dec struct {
	B   []byte // what is left to read
	Bad bool   // a value was missing: the message was short
}

func (d *Dec) U32() uint32 {
	if len(d.B) < 4 {
		d.Bad = true
		return 0
	}
	v := binary.LittleEndian.Uint32(d.B)
	d.B = d.B[4:]
	return v
}

func (d *Dec) U64() uint64 {
	if len(d.B) < 8 {
		d.Bad = true
		return 0
	}
	v := binary.LittleEndian.Uint64(d.B)
	d.B = d.B[8:]
	return v
}

// Bytes returns a byte string, aliasing the message.
func (d *Dec) Bytes() []byte {
	n := d.U32()
	if uint32(len(d.B)) < n {
		d.Bad = true
		return nil
	}
	b := d.B[:n:n]
	d.B = d.B[n:]
	return b
}

func (d *Dec) Str() string { return string(d.Bytes()) }

// Attr is an attribute record as the ABI carries it: the mode in Linux's
// bits (S_IFMT and permissions), times in nanoseconds since the epoch.
type Attr struct {
	Ino                 uint64
	Mode, Nlink         uint32
	UID, GID            uint32
	Size, Blocks, Rdev  uint64
	Atime, Mtime, Ctime int64
}

// Attr appends a: ino u64, mode u32, nlink u32, uid u32, gid u32, size
// u64, blocks u64, rdev u64, atime, mtime, ctime (u64 each).
func (e Enc) Attr(a Attr) Enc {
	return e.U64(a.Ino).U32(a.Mode).U32(a.Nlink).U32(a.UID).U32(a.GID).
		U64(a.Size).U64(a.Blocks).U64(a.Rdev).
		U64(uint64(a.Atime)).U64(uint64(a.Mtime)).U64(uint64(a.Ctime))
}

// Attr reads an attribute record (see Enc.Attr).
func (d *Dec) Attr() Attr {
	var a Attr
	a.Ino = d.U64()
	a.Mode, a.Nlink = d.U32(), d.U32()
	a.UID, a.GID = d.U32(), d.U32()
	a.Size, a.Blocks, a.Rdev = d.U64(), d.U64(), d.U64()
	a.Atime, a.Mtime, a.Ctime = int64(d.U64()), int64(d.U64()), int64(d.U64())
	return a
}
