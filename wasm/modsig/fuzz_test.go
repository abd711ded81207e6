package modsig_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/raceless/raceless/wasm/modinfo"
	"github.com/raceless/raceless/wasm/modsig"
)

// FuzzParse checks that Parse and Check never panic, that what Parse
// accepts is laid out as the format says, and, for any structurally valid
// module, that signing it gives a module the signer's keyring trusts and
// that one byte changed anywhere in it gives a bad signature. Seeds:
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	pub, priv := testKey(7)
	ring := keyring(f, pub)
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := modsig.Parse(b)
		r := ring.Check(b)
		switch {
		case err == nil:
			if s.Start >= s.Signed || s.Signed+len(s.Sig)+len(modsig.Marker) != len(b) || !bytes.HasSuffix(b, []byte(modsig.Marker)) {
				t.Fatalf("accepted a signature at %d, signed %d, of a %d-byte file", s.Start, s.Signed, len(b))
			}
			if r.KeyID != s.KeyID() {
				t.Fatalf("key id %q, Parse's %q", r.KeyID, s.KeyID())
			}
		case errors.Is(err, modsig.ErrUnsigned):
			if r.Status != modsig.Unsigned {
				t.Fatalf("unsigned, but Check says %v", r.Status)
			}
		case errors.Is(err, modsig.ErrBadSignature):
			if r.Status != modsig.Bad {
				t.Fatalf("bad signature, but Check says %v", r.Status)
			}
		default:
			t.Fatalf("an error of no sentinel: %v", err)
		}
		if _, err := modinfo.Sections(b); err != nil {
			return
		}
		signed, err := modsig.Sign(b, priv)
		if err != nil {
			t.Fatalf("sign of a valid module: %v", err)
		}
		if r := ring.Check(signed); r.Status != modsig.Trusted {
			t.Fatalf("signed just now: %v (%v)", r.Status, r.Err)
		}
		i := len(b) % len(signed)
		signed[i] ^= 0x55
		if r := ring.Check(signed); r.Status != modsig.Bad {
			t.Fatalf("byte %d of %d changed after signing: %v", i, len(signed), r.Status)
		}
	})
}

// seeds are FuzzParse's seeds: the files TestWriteSeeds writes.
func seeds(t testing.TB) map[string][]byte {
	_, priv := testKey(1)
	mod := small(t, "m")
	signed := mustSign(t, mod, priv)
	badVersion := bytes.Clone(signed)
	badVersion[len(signed)-len(modsig.Marker)-64-32-2] = 9
	return map[string][]byte{
		"unsigned":   mod,
		"signed":     signed,
		"truncated":  signed[:len(signed)-40],
		"appended":   append(bytes.Clone(signed), 0, 1, 0),
		"twosigs":    append(bytes.Clone(signed), signed[len(mod):]...),
		"badversion": badVersion,
		"markeronly": append(bytes.Clone(mod), modsig.Marker...),
		"notwasm":    []byte("\x7fELF\x02\x01\x01" + modsig.Marker),
	}
}

// TestWriteSeeds regenerates testdata/fuzz/FuzzParse when
// RACELESS_WRITE_SEEDS=1.
func TestWriteSeeds(t *testing.T) {
	if os.Getenv("RACELESS_WRITE_SEEDS") != "1" {
		t.Skip("set RACELESS_WRITE_SEEDS=1 to regenerate the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seeds(t) {
		if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
