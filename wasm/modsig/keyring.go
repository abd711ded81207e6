package modsig

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// PublicKeyExt is the extension of a keyring's key files.
const PublicKeyExt = ".pub"

// Key is a trusted public key and the name it has in its keyring.
type Key struct {
	Name   string // the key file's name without PublicKeyExt
	Public ed25519.PublicKey
}

// ID returns the key's id (KeyID).
func (k Key) ID() string { return KeyID(k.Public) }

// Keyring is a set of trusted public keys, immutable once made. A nil
// *Keyring trusts no key. It is safe for concurrent use.
type Keyring struct {
	keys []Key // sorted by name
}

// NewKeyring returns a keyring of keys; two keys of one name are an error.
func NewKeyring(keys ...Key) (*Keyring, error) {
	k := &Keyring{keys: append([]Key(nil), keys...)}
	sort.Slice(k.keys, func(i, j int) bool { return k.keys[i].Name < k.keys[j].Name })
	for i, key := range k.keys {
		if len(key.Public) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("key %s: %w", key.Name, ErrBadKey)
		}
		if i > 0 && k.keys[i-1].Name == key.Name {
			return nil, fmt.Errorf("two keys named %s", key.Name)
		}
	}
	return k, nil
}

// LoadKeyring reads every *.pub file of dir (a public key each, see
// ParsePublicKey), naming each key after its file. Other files are
// ignored. A missing directory, or a key file that does not parse, is an
// error naming it. So is a directory or key file that users other than
// its owner may write (mode bits 022), wrapping fs.ErrPermission: whoever
// can write there can make the daemon trust their key, as ssh refuses an
// authorized_keys file others may write.
func LoadKeyring(dir string) (*Keyring, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("keyring %s: not a directory", dir)
	}
	if err := private(dir, fi); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	var keys []Key
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), PublicKeyExt)
		if !ok || name == "" {
			continue
		}
		path := filepath.Join(dir, e.Name())
		fi, err := os.Stat(path) // a symbolic link: its target's mode
		if err != nil {
			return nil, fmt.Errorf("keyring: %w", err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		if err := private(path, fi); err != nil {
			return nil, err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("keyring: %w", err)
		}
		pub, err := ParsePublicKey(data)
		if err != nil {
			return nil, fmt.Errorf("keyring: %s: %w", path, err)
		}
		keys = append(keys, Key{Name: name, Public: pub})
	}
	return NewKeyring(keys...)
}

// private refuses a keyring path that others than its owner may write.
func private(path string, fi fs.FileInfo) error {
	if m := fi.Mode().Perm(); m&0o022 != 0 {
		return fmt.Errorf("keyring: %s is writable by users other than its owner (mode %#o): anyone who can write there can make the daemon trust their key: %w",
			path, m, fs.ErrPermission)
	}
	return nil
}

// Keys returns the keyring's keys, sorted by name.
func (k *Keyring) Keys() []Key {
	if k == nil {
		return nil
	}
	return append([]Key(nil), k.keys...)
}

// Lookup returns the keyring's key equal to pub.
func (k *Keyring) Lookup(pub ed25519.PublicKey) (Key, bool) {
	if k == nil {
		return Key{}, false
	}
	for _, key := range k.keys {
		if bytes.Equal(key.Public, pub) {
			return key, true
		}
	}
	return Key{}, false
}

// Status is what a module's signature says about it.
type Status int

// The statuses, from the least trusted.
const (
	// Bad: the module carries a signature that is damaged or does not
	// verify. Never loaded.
	Bad Status = iota
	// Unsigned: the module carries no signature.
	Unsigned
	// UnknownKey: the signature verifies with its key, which the keyring
	// does not hold.
	UnknownKey
	// Trusted: the signature verifies with a key of the keyring.
	Trusted
)

func (s Status) String() string {
	switch s {
	case Bad:
		return "bad signature"
	case Unsigned:
		return "unsigned"
	case UnknownKey:
		return "unknown key"
	case Trusted:
		return "trusted"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result is the outcome of Check.
type Result struct {
	Status Status
	// KeyID is the signing key's id when the signature is well formed
	// (it may still not verify).
	KeyID string
	// Signer is the keyring's name of the key, when Status is Trusted.
	Signer string
	// Err is nil when Status is Trusted, else an error wrapping
	// ErrBadSignature, ErrUnsigned or ErrUnknownKey that says why.
	Err error
}

// Check reads and verifies the signature of the module b and looks its key
// up in k.
func (k *Keyring) Check(b []byte) Result {
	s, err := Parse(b)
	if err != nil {
		if errors.Is(err, ErrUnsigned) {
			return Result{Status: Unsigned, Err: err}
		}
		return Result{Status: Bad, Err: err}
	}
	r := Result{KeyID: s.KeyID()}
	if err := s.Verify(b); err != nil {
		r.Status, r.Err = Bad, err
		return r
	}
	key, ok := k.Lookup(s.PublicKey)
	if !ok {
		r.Status, r.Err = UnknownKey, fmt.Errorf("%w (key %s)", ErrUnknownKey, r.KeyID)
		return r
	}
	r.Status, r.Signer = Trusted, key.Name
	return r
}
