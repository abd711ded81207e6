package modsig_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/raceless/raceless/wasm/modsig"
)

func TestKeyFiles(t *testing.T) {
	pub, priv, err := modsig.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	privPEM, err := modsig.MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := modsig.MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := modsig.ParsePrivateKey(privPEM); err != nil || !got.Equal(priv) {
		t.Fatalf("private key round trip: %v", err)
	}
	if got, err := modsig.ParsePublicKey(pubPEM); err != nil || !got.Equal(pub) {
		t.Fatalf("public key round trip: %v", err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPriv, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPub, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	for name, tc := range map[string]struct {
		data []byte
		pub  bool
	}{
		"public as private":  {pubPEM, false},
		"private as public":  {privPEM, true},
		"not PEM":            {[]byte("hello"), true},
		"trailing data":      {append(append([]byte{}, pubPEM...), "junk"...), true},
		"an ECDSA key":       {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecPriv}), false},
		"an ECDSA pub key":   {pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecPub}), true},
		"garbage in a block": {pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}}), true},
	} {
		var err error
		if tc.pub {
			_, err = modsig.ParsePublicKey(tc.data)
		} else {
			_, err = modsig.ParsePrivateKey(tc.data)
		}
		if !errors.Is(err, modsig.ErrBadKey) {
			t.Errorf("%s: %v, want ErrBadKey", name, err)
		}
	}
}

func writeKey(t *testing.T, path string, mode os.FileMode) ed25519.PublicKey {
	t.Helper()
	pub, _, err := modsig.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := modsig.MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return pub
}

func TestLoadKeyring(t *testing.T) {
	dir := t.TempDir()
	alice := writeKey(t, filepath.Join(dir, "alice.pub"), 0o644)
	bob := writeKey(t, filepath.Join(dir, "bob.pub"), 0o600)
	os.WriteFile(filepath.Join(dir, "README"), []byte("not a key"), 0o644)
	os.WriteFile(filepath.Join(dir, "carol.key"), []byte("a private key is ignored"), 0o600)
	os.Mkdir(filepath.Join(dir, "sub.pub"), 0o755)
	k, err := modsig.LoadKeyring(dir)
	if err != nil {
		t.Fatal(err)
	}
	keys := k.Keys()
	if len(keys) != 2 || keys[0].Name != "alice" || keys[1].Name != "bob" || !keys[0].Public.Equal(alice) || !keys[1].Public.Equal(bob) {
		t.Fatalf("keys %+v", keys)
	}
	if key, ok := k.Lookup(bob); !ok || key.Name != "bob" || key.ID() != modsig.KeyID(bob) {
		t.Fatalf("lookup bob: %+v %v", key, ok)
	}
	other, _ := testKey(9)
	if _, ok := k.Lookup(other); ok {
		t.Fatal("found a key not in the keyring")
	}
	var none *modsig.Keyring
	if _, ok := none.Lookup(alice); ok || none.Keys() != nil {
		t.Fatal("a nil keyring holds keys")
	}

	if _, err := modsig.LoadKeyring(filepath.Join(dir, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing directory: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "broken.pub"), []byte("nonsense"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := modsig.LoadKeyring(dir); !errors.Is(err, modsig.ErrBadKey) {
		t.Fatalf("a key file that does not parse: %v", err)
	}
	os.Remove(filepath.Join(dir, "broken.pub"))

	if runtime.GOOS == "windows" {
		return // no group and other write bits
	}
	// Writable by others: refused, the directory or any key file.
	os.Chmod(filepath.Join(dir, "alice.pub"), 0o666)
	if _, err := modsig.LoadKeyring(dir); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("a key file others may write: %v", err)
	}
	os.Chmod(filepath.Join(dir, "alice.pub"), 0o644)
	os.Chmod(dir, 0o777)
	defer os.Chmod(dir, 0o700)
	if _, err := modsig.LoadKeyring(dir); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("a directory others may write: %v", err)
	}
}

func TestNewKeyring(t *testing.T) {
	a, _ := testKey(1)
	if _, err := modsig.NewKeyring(modsig.Key{Name: "a", Public: a}, modsig.Key{Name: "a", Public: a}); err == nil {
		t.Fatal("two keys of one name")
	}
	if _, err := modsig.NewKeyring(modsig.Key{Name: "a", Public: a[:5]}); !errors.Is(err, modsig.ErrBadKey) {
		t.Fatalf("a short key: %v", err)
	}
}
