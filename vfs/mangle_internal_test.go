package vfs

import (
	"fmt"
	"strings"
	"testing"
)

// TestMangleEveryByte: of all 256 byte values, exactly space, tab, newline
// and backslash are escaped (as a backslash and three octal digits); every
// other byte is written unchanged.
func TestMangleEveryByte(t *testing.T) {
	for c := 0; c < 256; c++ {
		var b strings.Builder
		mangle(&b, "a"+string([]byte{byte(c)})+"b")
		want := "a" + string([]byte{byte(c)}) + "b"
		switch c {
		case ' ', '\t', '\n', '\\':
			want = fmt.Sprintf(`a\%03ob`, c)
		}
		if b.String() != want {
			t.Errorf("byte %#02x: %q, want %q", c, b.String(), want)
		}
	}
}
