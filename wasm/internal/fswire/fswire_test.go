package fswire

import (
	"testing"
)

// What Enc writes, Dec reads back in order, and a short message sets Bad
// without reading past its end.
func TestRoundTripAndShort(t *testing.T) {
	a := Attr{Ino: 7, Mode: 0o100644, Nlink: 1, UID: 1000, GID: 100, Size: 1 << 40, Blocks: 8, Rdev: 3, Atime: -1, Mtime: 2, Ctime: 3}
	msg := Enc(nil).U32(1).U64(2).Str("name").Bytes([]byte{9, 8}).Attr(a)
	d := Dec{B: msg}
	if d.U32() != 1 || d.U64() != 2 || d.Str() != "name" || string(d.Bytes()) != "\x09\x08" || d.Attr() != a || d.Bad || len(d.B) != 0 {
		t.Fatalf("round trip: %+v", d)
	}
	for n := range len(msg) {
		d := Dec{B: msg[:n]}
		d.U32()
		d.U64()
		d.Str()
		d.Bytes()
		d.Attr()
		if !d.Bad {
			t.Fatalf("a message cut to %d of %d bytes read whole", n, len(msg))
		}
	}
	d = Dec{B: Enc(nil).U32(100).Str("x")[:6]}
	if d.Bytes() != nil || !d.Bad {
		t.Fatal("a string longer than the message was read")
	}
}
