// Package modsig signs raceless WebAssembly modules and checks their
// signatures, as the Linux kernel's module signing (CONFIG_MODULE_SIG) does
// for .ko files: a signature appended to the module covers every byte
// before it, and a keyring of trusted public keys decides whom to believe.
//
// # Format
//
// The signature is the module's last section: a custom section named
// "raceless.signature" (SectionName) whose payload is
//
//	version    1 byte   1
//	algorithm  1 byte   1: Ed25519 (RFC 8032, crypto/ed25519)
//	public key 32 bytes the signer's Ed25519 public key
//	signature  64 bytes Ed25519 over every byte of the file before it
//	marker     30 bytes "~raceless signature appended~\n" (Marker)
//
// so the signed message is the whole file up to the signature itself: the
// module, the section's header and name, the version, the algorithm and
// the key. A custom section, not a bare trailer as the kernel appends to an
// ELF file, keeps the signed file a valid WebAssembly module that every
// tool (wazero, wasm-objdump, wasm-tools) reads as it is; the marker at the
// very end plays the part of the kernel's "~Module signature appended~\n",
// so that a damaged section header is still recognized as a damaged
// signature rather than as no signature.
//
// # Invariants
//
//   - Parse never panics, allocates nothing in proportion to its input,
//     and keeps no state (FuzzParse).
//   - A file either carries no signature at all (ErrUnsigned: no signature
//     section and no marker at its end), or its signature is well formed,
//     is the last section, is the only one, and verifies with its key; any
//     other file is ErrBadSignature. So changing any single byte of a
//     signed file, appending to it, truncating it anywhere but exactly
//     before the signature section, or moving a signature to another file
//     gives ErrBadSignature (TestTamper). Cutting the whole section off
//     leaves an unsigned module, as removing a kernel module's signature
//     does: only enforcement refuses that. Cutting the file inside the
//     section's header, before its name is whole, leaves an unsigned file
//     that is not a valid module either (the loader refuses it as such).
//   - Trust is the keyring's: a key is trusted when its 32 bytes are in
//     the keyring, never by its id, which is for people to read.
package modsig

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"

	"github.com/raceless/raceless/wasm/modinfo"
)

// SectionName is the name of the custom section holding the signature.
const SectionName = "raceless.signature"

// Marker ends a signed file, after the signature.
const Marker = "~raceless signature appended~\n"

// Version and AlgEd25519 are the only version and algorithm of the format.
const (
	Version    = 1
	AlgEd25519 = 1
)

// payloadSize is the size of the section's payload.
const payloadSize = 1 + 1 + ed25519.PublicKeySize + ed25519.SignatureSize + len(Marker)

// Sentinel errors, for errors.Is.
var (
	// ErrUnsigned is returned when a module carries no signature.
	ErrUnsigned = errors.New("module is unsigned")
	// ErrUnknownKey is returned when a module's signature verifies with
	// its key but the key is not in the keyring.
	ErrUnknownKey = errors.New("module is signed by a key not in the keyring")
	// ErrBadSignature is returned when a module carries a signature that is
	// malformed, is not its last section, or does not verify: the module
	// was changed after it was signed.
	ErrBadSignature = errors.New("bad module signature")
	// ErrBadKey is returned when a key file is not an Ed25519 key in PEM.
	ErrBadKey = errors.New("not an Ed25519 key")
)

var wasmHeader = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// Signature is a module's signature, as Parse finds it.
type Signature struct {
	PublicKey ed25519.PublicKey // aliases the module
	Sig       []byte            // aliases the module
	// Start is the offset of the signature section: the module without
	// its signature is b[:Start].
	Start int
	// Signed is how many leading bytes of the file the signature covers:
	// everything before Sig.
	Signed int
}

// KeyID returns the id of the signing key (see KeyID).
func (s *Signature) KeyID() string { return KeyID(s.PublicKey) }

// Verify checks the signature over b (the file Parse read it from) with
// its own key. It does not say whether the key is trusted: see
// Keyring.Check.
func (s *Signature) Verify(b []byte) error {
	if s.Signed > len(b) || !ed25519.Verify(s.PublicKey, b[:s.Signed], s.Sig) {
		return fmt.Errorf("%w: the signature does not match the module's contents (changed after signing?)", ErrBadSignature)
	}
	return nil
}

// KeyID is a key's id, as modinfo shows it ("sig_key"): the first 20 bytes
// of the SHA-256 of the raw public key, in upper-case hexadecimal pairs
// separated by colons (kmod's format for a key identifier).
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	var b strings.Builder
	for i, c := range sum[:20] {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", c)
	}
	return b.String()
}

// Parse finds the signature of the module b without verifying it. It
// returns ErrUnsigned when b carries none, and an error wrapping
// ErrBadSignature when b carries one that is damaged: a section named
// SectionName that is not the last section, runs past the end or is
// malformed, two of them, or the Marker at the end of b without one.
//
// Parse reads only section headers; it does not check that b is a valid
// module otherwise (the loader does, after).
func Parse(b []byte) (*Signature, error) {
	marked := bytes.HasSuffix(b, []byte(Marker))
	bad := func(format string, a ...any) (*Signature, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{ErrBadSignature}, a...)...)
	}
	if !bytes.HasPrefix(b, wasmHeader) {
		if marked {
			return bad("signature marker at the end of a file that is not a WebAssembly module")
		}
		return nil, ErrUnsigned
	}
	// The walk goes on past what modinfo.Sections would refuse, so that a
	// signature followed by appended bytes, or a truncated one, is told
	// apart from no signature at all.
	type section struct {
		start, end int
		payload    []byte // a custom section's, after its name
	}
	var sig, last section
	nsig := 0
	broken := false
	for off := len(wasmHeader); off < len(b); {
		start := off
		id := b[off]
		off++
		size, n, err := modinfo.Uleb32(b[off:])
		if err != nil {
			broken = true
			break
		}
		off += n
		whole := uint64(size) <= uint64(len(b)-off) // compared as uint64: no int overflow
		end := len(b)
		if whole {
			end = off + int(size)
		}
		isSig := false
		var payload []byte
		if id == 0 {
			var name []byte
			name, payload = customName(b[off:end])
			isSig = string(name) == SectionName
		}
		if !whole {
			if isSig {
				return bad("the signature section runs past the end of the file (truncated)")
			}
			broken = true
			break
		}
		s := section{start: start, end: end, payload: payload}
		if isSig {
			sig = s
			nsig++
		}
		last = s
		off = end
	}
	switch {
	case nsig == 0 && !marked:
		return nil, ErrUnsigned
	case nsig == 0:
		return bad("the file ends with the signature marker but has no %s section", SectionName)
	case nsig > 1:
		return bad("%d %s sections", nsig, SectionName)
	case broken || last.start != sig.start:
		return bad("data after the signature section (appended after signing?)")
	}
	p := sig.payload
	switch {
	case len(p) != payloadSize:
		return bad("a signature of %d bytes, want %d", len(p), payloadSize)
	case p[0] != Version:
		return bad("unknown signature version %d", p[0])
	case p[1] != AlgEd25519:
		return bad("unknown signature algorithm %d", p[1])
	case string(p[payloadSize-len(Marker):]) != Marker:
		return bad("the signature marker is damaged")
	}
	keyAt := sig.end - payloadSize + 2
	sigAt := keyAt + ed25519.PublicKeySize
	return &Signature{
		PublicKey: ed25519.PublicKey(b[keyAt:sigAt:sigAt]),
		Sig:       b[sigAt : sigAt+ed25519.SignatureSize : sigAt+ed25519.SignatureSize],
		Start:     sig.start,
		Signed:    sigAt,
	}, nil
}

// customName splits the contents of a custom section (as much of it as
// the file holds) into its name and payload, both aliasing p; nil when it
// holds no name.
func customName(p []byte) (name, payload []byte) {
	n, k, err := modinfo.Uleb32(p)
	if err != nil || uint64(n) > uint64(len(p)-k) {
		return nil, nil
	}
	return p[k : k+int(n)], p[k+int(n):]
}

// Strip returns b without its signature section: b itself when b is
// unsigned, an error wrapping ErrBadSignature when its signature is
// damaged (Sign replaces any signature, damaged or not).
func Strip(b []byte) ([]byte, error) {
	s, err := Parse(b)
	switch {
	case errors.Is(err, ErrUnsigned):
		return b, nil
	case err != nil:
		return nil, err
	}
	return b[:s.Start:s.Start], nil
}

// Sign returns a copy of the module b signed with priv: b without any
// signature section it had (valid or not), followed by a new one. b must
// be a structurally valid WebAssembly binary (modinfo.Sections accepts
// it): the errors are modinfo's ErrNotWasm and ErrTruncated.
func Sign(b []byte, priv ed25519.PrivateKey) ([]byte, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("private key of %d bytes: %w", len(priv), ErrBadKey)
	}
	secs, err := modinfo.Sections(b)
	if err != nil {
		return nil, err
	}
	body := modinfo.AppendUleb32(nil, uint32(len(SectionName)))
	body = append(body, SectionName...)
	out := make([]byte, 0, len(b)+len(body)+payloadSize+8)
	out = append(out, wasmHeader...)
	for _, s := range secs {
		if s.ID == 0 && s.Name == SectionName {
			continue
		}
		out = append(out, b[s.Start:s.End]...)
	}
	out = append(out, 0)
	out = modinfo.AppendUleb32(out, uint32(len(body)+payloadSize))
	out = append(out, body...)
	out = append(out, Version, AlgEd25519)
	out = append(out, priv.Public().(ed25519.PublicKey)...)
	sig := ed25519.Sign(priv, out)
	out = append(out, sig...)
	return append(out, Marker...), nil
}
