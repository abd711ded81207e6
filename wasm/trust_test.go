package wasm_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm"
	"github.com/raceless/raceless/wasm/modsig"
)

// sigKey returns a key pair fixed by seed.
func sigKey(seed byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return priv.Public().(ed25519.PublicKey), priv
}

func signed(t testing.TB, b []byte, priv ed25519.PrivateKey) []byte {
	t.Helper()
	s, err := modsig.Sign(b, priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func trustedKeyring(t testing.TB, pubs ...ed25519.PublicKey) *modsig.Keyring {
	t.Helper()
	var keys []modsig.Key
	for i, p := range pubs {
		keys = append(keys, modsig.Key{Name: "key" + strconv.Itoa(i), Public: p})
	}
	k, err := modsig.NewKeyring(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// openLoad opens b as path and loads it, returning the error.
func (e *env) openLoad(path string, b []byte) (*raceless.Instance, error) {
	e.t.Helper()
	src, err := e.l.OpenBytes(path, b)
	if err != nil {
		return nil, err
	}
	return e.h.Load(context.Background(), src, nil)
}

// refused checks that err refuses the module for its key, as a *FileError
// of op verify naming path, matching cause too, and that nothing of that
// name is loaded.
func (e *env) refused(err error, path, name string, cause error) {
	e.t.Helper()
	var fe *wasm.FileError
	if !errors.Is(err, wasm.ErrKeyRejected) || !errors.Is(err, cause) || !errors.As(err, &fe) || fe.Op != "verify" || fe.Path != path {
		e.t.Fatalf("%s: %v; want a verify error of %s matching ErrKeyRejected and %v", name, err, path, cause)
	}
	if _, ok := e.h.Module(name); ok {
		e.t.Fatalf("%s is loaded after its refusal", name)
	}
}

// Without enforcement: a trusted module loads clean, an unsigned one or one
// of an unknown key loads tainted E, one whose signature does not verify
// is refused. Then enforcement, switched on at run time, refuses the
// untrusted ones, also a Source opened before the switch, and cannot be
// switched off.
func TestSignaturesAndEnforcement(t *testing.T) {
	pub, priv := sigKey(1)
	_, otherPriv := sigKey(2)
	cfg := wasmConfig()
	cfg.SigCheck, cfg.Keyring = true, trustedKeyring(t, pub)
	e := newEnv(t, cfg)
	var compiles atomic.Int32
	wasm.SetCompileHook(e.l, func(string) { compiles.Add(1) })

	trusted := signed(t, tinyWithInfo(wasmtest.TinyOptions{}, "trusted"), priv)
	m, err := e.openLoad("/trusted.wasm", trusted)
	if err != nil {
		t.Fatal(err)
	}
	if m.TaintFlags() != "" {
		t.Fatalf("a trusted module is tainted %q: %q", m.TaintFlags(), m.Taints())
	}
	for _, tc := range []struct {
		name, reason string
		bin          []byte
	}{
		{"unsigned", "module verification failed: module is unsigned", tinyWithInfo(wasmtest.TinyOptions{}, "unsigned")},
		{"unknown", "module verification failed: module is signed by a key not in the keyring (key " + modsig.KeyID(otherPriv.Public().(ed25519.PublicKey)) + ")",
			signed(t, tinyWithInfo(wasmtest.TinyOptions{}, "unknown"), otherPriv)},
	} {
		m, err := e.openLoad("/"+tc.name+".wasm", tc.bin)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if m.TaintFlags() != "E" || len(m.Taints()) != 1 || m.Taints()[0] != tc.reason {
			t.Fatalf("%s: taint %q %q, want E: %s", tc.name, m.TaintFlags(), m.Taints(), tc.reason)
		}
	}
	// A signature that does not verify: refused, enforcement or not,
	// before anything is compiled.
	before := compiles.Load()
	bad := bytes.Clone(signed(t, tinyWithInfo(wasmtest.TinyOptions{}, "tampered"), priv))
	bad[20] ^= 1
	_, err = e.openLoad("/tampered.wasm", bad)
	e.refused(err, "/tampered.wasm", "tampered", modsig.ErrBadSignature)

	// A Source opened before enforcement, loaded after it.
	early, err := e.l.OpenBytes("/early.wasm", tinyWithInfo(wasmtest.TinyOptions{}, "early"))
	if err != nil {
		t.Fatal(err)
	}
	if e.l.SignaturesEnforced() {
		t.Fatal("enforced before EnforceSignatures")
	}
	e.l.EnforceSignatures()
	e.l.EnforceSignatures() // idempotent
	if !e.l.SignaturesEnforced() {
		t.Fatal("not enforced after EnforceSignatures")
	}
	_, err = e.h.Load(context.Background(), early, nil)
	e.refused(err, "/early.wasm", "early", modsig.ErrUnsigned)
	_, err = e.openLoad("/unsigned2.wasm", tinyWithInfo(wasmtest.TinyOptions{}, "unsigned2"))
	e.refused(err, "/unsigned2.wasm", "unsigned2", modsig.ErrUnsigned)
	_, err = e.openLoad("/unknown2.wasm", signed(t, tinyWithInfo(wasmtest.TinyOptions{}, "unknown2"), otherPriv))
	e.refused(err, "/unknown2.wasm", "unknown2", modsig.ErrUnknownKey)
	_, err = e.openLoad("/tampered.wasm", bad)
	e.refused(err, "/tampered.wasm", "tampered", modsig.ErrBadSignature)
	if n := compiles.Load(); n != before {
		t.Fatalf("%d compilations for refused modules", n-before)
	}
	if _, err := e.openLoad("/trusted2.wasm", signed(t, tinyWithInfo(wasmtest.TinyOptions{}, "trusted2"), priv)); err != nil {
		t.Fatalf("a trusted module under enforcement: %v", err)
	}
	// The modules loaded before enforcement stay (as in Linux: enforcing
	// refuses loads, it does not unload).
	if _, ok := e.h.Module("unsigned"); !ok {
		t.Fatal("enforcement unloaded a module")
	}
}

// Without SigCheck (a Loader not configured for signing, the kernel
// without CONFIG_MODULE_SIG): untrusted modules load untainted; a bad
// signature is still refused. SigEnforce from the start refuses them.
func TestSignaturesUnchecked(t *testing.T) {
	_, priv := sigKey(1)
	e := newEnv(t, wasmConfig())
	for _, name := range []string{"plain", "keyless"} {
		b := tinyWithInfo(wasmtest.TinyOptions{}, name)
		if name == "keyless" {
			b = signed(t, b, priv)
		}
		m, err := e.openLoad("/"+name+".wasm", b)
		if err != nil || m.TaintFlags() != "" {
			t.Fatalf("%s: %v, taint %q", name, err, m.TaintFlags())
		}
	}
	bad := signed(t, tinyWithInfo(wasmtest.TinyOptions{}, "bad"), priv)
	bad = bad[:len(bad)-1]
	_, err := e.openLoad("/bad.wasm", bad)
	e.refused(err, "/bad.wasm", "bad", modsig.ErrBadSignature)

	cfg := wasmConfig()
	cfg.SigEnforce = true
	e2 := newEnv(t, cfg)
	if !e2.l.SignaturesEnforced() {
		t.Fatal("SigEnforce: not enforced")
	}
	_, err = e2.openLoad("/plain.wasm", tinyWithInfo(wasmtest.TinyOptions{}, "plain"))
	e2.refused(err, "/plain.wasm", "plain", modsig.ErrUnsigned)
	// No keyring: every key is unknown.
	_, err = e2.openLoad("/keyless.wasm", signed(t, tinyWithInfo(wasmtest.TinyOptions{}, "keyless"), priv))
	e2.refused(err, "/keyless.wasm", "keyless", modsig.ErrUnknownKey)
}

// TestTamperRefused: every single byte of a signed module flipped, every
// truncation, data appended and another module's signature: the loader
// refuses each, with enforcement off (ErrKeyRejected where the file still
// shows a signature; a file cut inside the signature's header is not a
// module) and on (ErrKeyRejected always).
func TestTamperRefused(t *testing.T) {
	pub, priv := sigKey(1)
	mod := tinyWithInfo(wasmtest.TinyOptions{}, "victim")
	good := signed(t, mod, priv)
	otherMod := tinyWithInfo(wasmtest.TinyOptions{}, "other")
	other := signed(t, otherMod, priv)
	var cases []struct {
		what string
		b    []byte
	}
	add := func(what string, b []byte) {
		cases = append(cases, struct {
			what string
			b    []byte
		}{what, b})
	}
	for i := range good {
		b := bytes.Clone(good)
		b[i] ^= 0x20
		add("byte "+strconv.Itoa(i)+" flipped", b)
	}
	for n := len(good) - 1; n > len(mod); n-- {
		add("truncated to "+strconv.Itoa(n), good[:n])
	}
	add("one byte appended", append(bytes.Clone(good), 0))
	add("a section appended", append(bytes.Clone(good), 0, 2, 1, 'x'))
	add("another module's signature", append(bytes.Clone(mod), other[len(otherMod):]...))
	for _, enforce := range []bool{false, true} {
		cfg := wasmConfig()
		cfg.SigCheck, cfg.Keyring, cfg.SigEnforce = true, trustedKeyring(t, pub), enforce
		e := newEnv(t, cfg)
		for _, c := range cases {
			_, err := e.l.OpenBytes("/victim.wasm", c.b)
			if err == nil {
				t.Fatalf("enforce=%v: %s: accepted", enforce, c.what)
			}
			if enforce && !errors.Is(err, wasm.ErrKeyRejected) {
				t.Fatalf("enforce=%v: %s: %v, want ErrKeyRejected", enforce, c.what, err)
			}
			if !errors.Is(err, wasm.ErrKeyRejected) && !errors.Is(err, wasm.ErrTruncated) {
				t.Fatalf("enforce=%v: %s: %v", enforce, c.what, err)
			}
		}
		if _, err := e.openLoad("/victim.wasm", good); err != nil {
			t.Fatalf("enforce=%v: the untampered module: %v", enforce, err)
		}
	}
}

// EnforceSignatures races with loads: each load either happened before
// the switch (and is untrusted, tainted) or is refused; after it returns,
// every load is refused.
func TestEnforceRace(t *testing.T) {
	cfg := wasmConfig()
	cfg.SigCheck = true
	e := newEnv(t, cfg)
	var wg sync.WaitGroup
	var once sync.Once
	loaded := make(chan struct{}) // closed by the first load that succeeds
	for i := range 4 {
		wg.Go(func() {
			for j := range 20 {
				name := "r" + strconv.Itoa(i) + "_" + strconv.Itoa(j)
				m, err := e.openLoad("/"+name+".wasm", tinyWithInfo(wasmtest.TinyOptions{}, name))
				switch {
				case err == nil && m.TaintFlags() != "E":
					t.Errorf("%s loaded untainted", name)
				case err != nil && !errors.Is(err, wasm.ErrKeyRejected):
					t.Errorf("%s: %v", name, err)
				case err == nil:
					once.Do(func() { close(loaded) })
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-loaded: // the switch comes while loads are going on
	case <-done:
		t.Fatal("no load succeeded")
	}
	e.l.EnforceSignatures()
	_, err := e.openLoad("/after.wasm", tinyWithInfo(wasmtest.TinyOptions{}, "after"))
	e.refused(err, "/after.wasm", "after", modsig.ErrUnsigned)
	<-done
}

// The bytes verified are the bytes loaded: a Source reads its file once,
// so a file swapped on disk after Open (for an unsigned module) changes
// nothing of what Load runs.
func TestVerifiedBytesLoaded(t *testing.T) {
	pub, priv := sigKey(1)
	cfg := wasmConfig()
	cfg.SigCheck, cfg.Keyring, cfg.SigEnforce = true, trustedKeyring(t, pub), true
	e := newEnv(t, cfg)
	path := filepath.Join(t.TempDir(), "m.wasm")
	good := signed(t, tinyWithInfo(wasmtest.TinyOptions{}, "m"), priv)
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := e.l.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, tinyWithInfo(wasmtest.TinyOptions{InitCode: -5}, "m"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := e.h.Load(context.Background(), src, nil)
	if err != nil {
		t.Fatalf("load of the verified Source after its file changed: %v", err)
	}
	sum := sha256.Sum256(good)
	if m.TaintFlags() != "" || !strings.HasSuffix(m.Key(), "@"+hex.EncodeToString(sum[:])) || src.Signature().Signer != "key0" {
		t.Fatalf("key %s, taint %q, signature %+v", m.Key(), m.TaintFlags(), src.Signature())
	}
	// Opened again, the swapped file is refused.
	if _, err := e.l.Open(path); !errors.Is(err, wasm.ErrKeyRejected) {
		t.Fatalf("the swapped file: %v", err)
	}
}
