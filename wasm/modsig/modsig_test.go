package modsig_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"strconv"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm/modinfo"
	"github.com/raceless/raceless/wasm/modsig"
)

// testKey returns a key pair fixed by seed, so that runs are repeatable.
func testKey(seed byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return priv.Public().(ed25519.PublicKey), priv
}

// small is a module with every kind of section wasmtest.Module writes
// (types, imports, functions, memory, globals, exports, code, data) and a
// modinfo block: small enough to tamper with every byte of.
func small(t testing.TB, name string) []byte {
	t.Helper()
	b, err := modinfo.Append(wasmtest.Module([]string{"add"}, wasmtest.Func{Export: "neg", Symbol: true,
		Params: []byte{wasmtest.I64}, Result: []byte{wasmtest.I64}, Code: append(wasmtest.I64Const(0), 0x20, 0, 0x7d)}),
		raceless.Info{Name: name, Version: "1"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustSign(t testing.TB, b []byte, priv ed25519.PrivateKey) []byte {
	t.Helper()
	s, err := modsig.Sign(b, priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func keyring(t testing.TB, pubs ...ed25519.PublicKey) *modsig.Keyring {
	t.Helper()
	var keys []modsig.Key
	for i, p := range pubs {
		keys = append(keys, modsig.Key{Name: string(rune('a' + i)), Public: p})
	}
	k, err := modsig.NewKeyring(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSignAndCheck(t *testing.T) {
	pub, priv := testKey(1)
	other, _ := testKey(2)
	mod := small(t, "m")
	signed := mustSign(t, mod, priv)
	if !bytes.HasPrefix(signed, mod) || !bytes.HasSuffix(signed, []byte(modsig.Marker)) {
		t.Fatal("the signed module is not the module followed by a section ending in the marker")
	}
	// Still a valid module with its modinfo: the signature is a custom section.
	if info, err := modinfo.Read(signed); err != nil || info.Name != "m" {
		t.Fatalf("modinfo of the signed module: %+v, %v", info, err)
	}
	for _, tc := range []struct {
		name   string
		ring   *modsig.Keyring
		status modsig.Status
		err    error
	}{
		{"trusted", keyring(t, other, pub), modsig.Trusted, nil},
		{"unknown key", keyring(t, other), modsig.UnknownKey, modsig.ErrUnknownKey},
		{"no keyring", nil, modsig.UnknownKey, modsig.ErrUnknownKey},
	} {
		r := tc.ring.Check(signed)
		if r.Status != tc.status || !errors.Is(r.Err, tc.err) || (tc.err == nil) != (r.Err == nil) || r.KeyID != modsig.KeyID(pub) {
			t.Errorf("%s: %+v", tc.name, r)
		}
		if tc.status == modsig.Trusted && r.Signer != "b" {
			t.Errorf("%s: signer %q, want the keyring's name b", tc.name, r.Signer)
		}
	}
	if r := keyring(t, pub).Check(mod); r.Status != modsig.Unsigned || !errors.Is(r.Err, modsig.ErrUnsigned) || r.KeyID != "" {
		t.Errorf("unsigned module: %+v", r)
	}
	// Signing again replaces the signature; Strip gives the module back.
	_, priv2 := testKey(3)
	resigned := mustSign(t, signed, priv2)
	if s, err := modsig.Parse(resigned); err != nil || !bytes.Equal(s.PublicKey, priv2.Public().(ed25519.PublicKey)) {
		t.Fatalf("re-signed: %v", err)
	}
	if got, err := modsig.Strip(resigned); err != nil || !bytes.Equal(got, mod) {
		t.Fatalf("strip: %v", err)
	}
	if got, err := modsig.Strip(mod); err != nil || !bytes.Equal(got, mod) {
		t.Fatalf("strip of an unsigned module: %v", err)
	}
	if _, err := modsig.Sign([]byte("not wasm"), priv); !errors.Is(err, modinfo.ErrNotWasm) {
		t.Fatalf("sign of a file that is not wasm: %v", err)
	}
	if _, err := modsig.Sign(mod, priv[:10]); !errors.Is(err, modsig.ErrBadKey) {
		t.Fatalf("sign with a short key: %v", err)
	}
}

// bad checks that the keyring (which trusts the key) refuses b as a bad
// signature.
func bad(t *testing.T, ring *modsig.Keyring, b []byte, what string) {
	t.Helper()
	if r := ring.Check(b); r.Status != modsig.Bad || !errors.Is(r.Err, modsig.ErrBadSignature) {
		t.Fatalf("%s: status %v (%v), want a bad signature", what, r.Status, r.Err)
	}
}

// tamper makes every change of the issue to a signed module: each single
// byte flipped (at every offset given by at), truncations, appended data, a
// signature moved from another module. ring trusts the signer.
func tamper(t *testing.T, ring *modsig.Keyring, mod, signed, otherSigned []byte, at []int) {
	for _, i := range at {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			b := bytes.Clone(signed)
			b[i] ^= x
			bad(t, ring, b, "byte "+strconv.Itoa(i)+" ^ "+strconv.Itoa(int(x)))
		}
	}
	// Truncated: inside the signature section's header (before its name
	// is whole) the file is not a module any more, and unsigned; past it, a
	// bad signature; exactly before the section, an unsigned module (the
	// kernel's stripped module); further in, whatever the rest is, never
	// trusted.
	header := 1 + len(modinfo.AppendUleb32(nil, uint32(len(signed)-len(mod)-1))) // id, size
	header += 1 + len(modsig.SectionName)                                        // name
	for n := len(signed) - 1; n > len(mod); n-- {
		if n >= len(mod)+header {
			bad(t, ring, signed[:n], "truncated to "+strconv.Itoa(n))
			continue
		}
		_, serr := modinfo.Sections(signed[:n])
		if r := ring.Check(signed[:n]); r.Status != modsig.Unsigned || serr == nil {
			t.Fatalf("truncated to %d, inside the signature's header: %v, and as a module: %v", n, r.Status, serr)
		}
	}
	if r := ring.Check(signed[:len(mod)]); r.Status != modsig.Unsigned {
		t.Fatalf("signature cut off: %v, want unsigned", r.Status)
	}
	for _, n := range at {
		if n < len(mod) {
			if r := ring.Check(signed[:n]); r.Status == modsig.Trusted || r.Status == modsig.UnknownKey {
				t.Fatalf("truncated to %d: %v", n, r.Status)
			}
		}
	}
	// Appended: one byte, a valid custom section, the signature again.
	for name, tail := range map[string][]byte{
		"one byte":           {0},
		"a section":          append([]byte{0, 4, 3}, "abc"...),
		"the signature":      signed[len(mod):],
		"the marker":         []byte(modsig.Marker),
		"a nameless section": {0, 1, 0},
	} {
		bad(t, ring, append(bytes.Clone(signed), tail...), "appended "+name)
	}
	// Another module's signature on this one.
	otherMod, err := modsig.Strip(otherSigned)
	if err != nil {
		t.Fatal(err)
	}
	bad(t, ring, append(bytes.Clone(mod), otherSigned[len(otherMod):]...), "another module's signature")
	// A section added after signing (wasm-modinfo -set moves modinfo to the end).
	moved, err := modinfo.Append(signed, raceless.Info{Name: "renamed"})
	if err != nil {
		t.Fatal(err)
	}
	bad(t, ring, moved, "modinfo replaced after signing")
}

// TestTamper: every byte of a small signed module, flipped three ways, and
// every truncation and append, is refused.
func TestTamper(t *testing.T) {
	pub, priv := testKey(1)
	ring := keyring(t, pub)
	mod := small(t, "m")
	signed := mustSign(t, mod, priv)
	other := mustSign(t, small(t, "other"), priv)
	every := make([]int, len(signed))
	for i := range every {
		every[i] = i
	}
	tamper(t, ring, mod, signed, other, every)
}

// TestTamperGoModule: a Go-built module (a few MB) with the same changes,
// its bytes sampled in every section: the first and last bytes of each,
// and a spread between.
func TestTamperGoModule(t *testing.T) {
	pub, priv := testKey(1)
	ring := keyring(t, pub)
	read := func(dir string) []byte {
		b, err := os.ReadFile(wasmtest.Build(t, dir))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	mod := read(wasmtest.Hello)
	signed := mustSign(t, mod, priv)
	other := mustSign(t, read(wasmtest.Provider), priv)
	secs, err := modinfo.Sections(signed)
	if err != nil {
		t.Fatal(err)
	}
	var at []int
	ids := map[byte]bool{}
	for _, s := range secs {
		ids[s.ID] = true
		n := s.End - s.Start
		for _, off := range []int{0, 1, 2, n / 3, n / 2, n - 2, n - 1} {
			if off >= 0 && off < n {
				at = append(at, s.Start+off)
			}
		}
	}
	for _, id := range []byte{0, 1, 2, 3, 5, 7, 10, 11} { // custom, type, import, function, memory, export, code, data
		if !ids[id] {
			t.Fatalf("the Go module has no section %d: the sample misses a kind", id)
		}
	}
	at = append(at, 0, 7, len(signed)-1)
	// Truncations inside the module are sampled too (all of them would cost
	// minutes): tamper checks each offset of at below the signature.
	tamper(t, ring, mod, signed, other, at)
}

func TestParseErrors(t *testing.T) {
	_, priv := testKey(1)
	mod := small(t, "m")
	signed := mustSign(t, mod, priv)
	for _, tc := range []struct {
		name string
		b    []byte
		err  error
	}{
		{"empty", nil, modsig.ErrUnsigned},
		{"not wasm", []byte("\x7fELF"), modsig.ErrUnsigned},
		{"not wasm, marker", []byte("\x7fELF" + modsig.Marker), modsig.ErrBadSignature},
		{"header only", mod[:8], modsig.ErrUnsigned},
		{"unsigned", mod, modsig.ErrUnsigned},
		{"two signatures", append(bytes.Clone(signed), signed[len(mod):]...), modsig.ErrBadSignature},
	} {
		if _, err := modsig.Parse(tc.b); !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
	}
	s, err := modsig.Parse(signed)
	if err != nil {
		t.Fatal(err)
	}
	if s.Start != len(mod) || s.Signed != len(signed)-len(modsig.Marker)-ed25519.SignatureSize {
		t.Fatalf("start %d signed %d", s.Start, s.Signed)
	}
}
