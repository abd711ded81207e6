// Package modinfo reads and writes the metadata block of a raceless
// WebAssembly module: a wasm custom section named "raceless.modinfo" whose
// payload is one JSON object (a Block: the module's raceless.Info and the
// capabilities it asks its host for), at most MaxSize bytes.
//
// The block is readable without compiling or instantiating the module: Read
// walks the section headers of the binary and decodes only the custom
// section. Go's toolchain cannot emit custom sections, so a module built
// with `GOOS=wasip1 GOARCH=wasm go build` gets its block afterwards from
// Append (used by the wasm-modinfo tool and by package wasmtest); a custom
// section appended after the last section is valid wasm.
//
// Invariants:
//   - A module has at most one modinfo section; two are ErrDuplicate.
//   - Decode is strict: unknown fields, trailing data, a non-object, an
//     invalid module name, dependency name, import, parameter name or
//     type, a default that does not type-check, or an unknown or repeated
//     capability are ErrMalformed; more than MaxSize bytes is ErrTooLarge.
//     What DecodeBlock accepts, EncodeBlock reproduces and DecodeBlock
//     accepts again (checked by FuzzDecode).
//   - The functions of raceless.Info (Decode, Read, Encode, Append) accept
//     a block that declares capabilities and leave them out of what they
//     return: raceless.Info has no place for them. Append writes the Info
//     it is given, so it drops the capabilities of the block it replaces;
//     AppendBlock keeps what it is given whole.
//   - Functions here never panic on any input and keep no state; they are
//     safe for concurrent use.
package modinfo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/raceless/raceless"
)

// SectionName is the name of the custom section holding the block.
const SectionName = "raceless.modinfo"

// MaxSize is the largest accepted payload. Metadata is a few hundred bytes
// in practice; the limit keeps a hostile file from making modinfo (which
// runs on untrusted files, before any other check) allocate much.
const MaxSize = 64 << 10

// Limits on the decoded block, for the same reason.
const (
	maxListLen  = 256  // entries in depends, imports, aliases, params
	maxFieldLen = 4096 // bytes in any one string field
)

// Sentinel errors, for errors.Is. Returned errors wrap one of them with a
// description of the fault.
var (
	// ErrNotWasm is returned when the input does not start with the wasm
	// magic number and version 1 (this includes empty input).
	ErrNotWasm = errors.New("not a WebAssembly module")
	// ErrTruncated is returned when a section header or size runs past the
	// end of the input, or a LEB128 number is malformed.
	ErrTruncated = errors.New("truncated or malformed WebAssembly module")
	// ErrNoModinfo is returned by Read when the module has no
	// "raceless.modinfo" section.
	ErrNoModinfo = errors.New("no raceless.modinfo section")
	// ErrDuplicate is returned when a module has more than one
	// "raceless.modinfo" section.
	ErrDuplicate = errors.New("more than one raceless.modinfo section")
	// ErrMalformed is returned when the modinfo payload is not a valid
	// block (syntax, unknown field, invalid name, import, type or
	// default).
	ErrMalformed = errors.New("malformed modinfo")
	// ErrTooLarge is returned when the modinfo payload exceeds MaxSize.
	ErrTooLarge = errors.New("modinfo too large")
)

var wasmHeader = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// Block is a whole modinfo block: the module's raceless.Info (its fields
// at the top level of the JSON object) and the capabilities it asks its
// host for, which only a WebAssembly module has.
type Block struct {
	raceless.Info
	// Capabilities are what the module wants from its host beyond clocks
	// and random numbers, which every module has: each one of the
	// Capabilities constants, listed once. A host grants a capability by
	// its policy; a load that wants one the policy does not grant is
	// refused.
	Capabilities []string `json:"capabilities,omitempty"`
	// Routes are the HTTP route patterns (net/http ServeMux syntax) an
	// http-wasm handler guest serves (package wasm/httpwasm); Pool the
	// size of its instance pool (0: the host's default).
	Routes []string `json:"routes,omitempty"`
	Pool   int      `json:"pool,omitempty"`
	// Middleware makes an http-wasm guest middleware (in the daemon's
	// chain, --http-middleware) instead of routes.
	Middleware bool `json:"middleware,omitempty"`
}

// CapFSRead is the capability to read a directory of the host's VFS,
// which the module sees through WASI as its root ("/"). Which directory
// is the policy's choice.
const CapFSRead = "fs-read"

// Capabilities lists every capability a module may declare.
var Capabilities = []string{CapFSRead}

// KnownCapability reports whether c is one of Capabilities.
func KnownCapability(c string) bool {
	for _, k := range Capabilities {
		if c == k {
			return true
		}
	}
	return false
}

// Section is one section of a wasm binary as Sections reports it.
type Section struct {
	ID      byte   // 0 for custom sections
	Name    string // custom sections only
	Start   int    // offset of the section's id byte
	End     int    // offset just past the section
	Payload []byte // content after the id/size (and, for custom sections, the name)
}

// Sections walks the section headers of a wasm binary. It checks the
// header and that every section lies within b; it does not validate
// section contents. The payloads alias b.
func Sections(b []byte) ([]Section, error) {
	if len(b) < len(wasmHeader) || !bytes.Equal(b[:len(wasmHeader)], wasmHeader) {
		return nil, ErrNotWasm
	}
	var out []Section
	off := len(wasmHeader)
	for off < len(b) {
		start := off
		id := b[off]
		off++
		size, n, err := Uleb32(b[off:])
		if err != nil {
			return nil, fmt.Errorf("section at offset %d: %w", start, err)
		}
		off += n
		if uint64(size) > uint64(len(b)-off) {
			return nil, fmt.Errorf("section %d at offset %d: size %d past end of input: %w", id, start, size, ErrTruncated)
		}
		end := off + int(size)
		s := Section{ID: id, Start: start, End: end, Payload: b[off:end]}
		if id == 0 {
			nlen, n, err := Uleb32(s.Payload)
			if err != nil || uint64(nlen) > uint64(len(s.Payload)-n) {
				return nil, fmt.Errorf("custom section at offset %d: bad name: %w", start, ErrTruncated)
			}
			s.Name = string(s.Payload[n : n+int(nlen)])
			s.Payload = s.Payload[n+int(nlen):]
		}
		out = append(out, s)
		off = end
	}
	return out, nil
}

// Uleb32 decodes an unsigned LEB128 number of at most 32 bits, returning it
// and the bytes it used; ErrTruncated if b ends early or it overflows.
func Uleb32(b []byte) (uint32, int, error) {
	var v uint32
	for i := 0; i < 5; i++ {
		if i >= len(b) {
			return 0, 0, ErrTruncated
		}
		c := b[i]
		if i == 4 && c > 0x0f {
			return 0, 0, ErrTruncated // more than 32 bits
		}
		v |= uint32(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v, i + 1, nil
		}
	}
	return 0, 0, ErrTruncated
}

// AppendUleb32 appends v as an unsigned LEB128.
func AppendUleb32(b []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

// Extract returns the raw payload of the module's modinfo section. It
// returns ErrNoModinfo if there is none and ErrDuplicate if there are two.
// The result aliases b.
func Extract(b []byte) ([]byte, error) {
	secs, err := Sections(b)
	if err != nil {
		return nil, err
	}
	var found []byte
	seen := false
	for _, s := range secs {
		if s.ID == 0 && s.Name == SectionName {
			if seen {
				return nil, ErrDuplicate
			}
			seen, found = true, s.Payload
		}
	}
	if !seen {
		return nil, ErrNoModinfo
	}
	return found, nil
}

// Read returns the decoded modinfo block of a wasm binary, without its
// capabilities (ReadBlock has them).
func Read(b []byte) (raceless.Info, error) {
	blk, err := ReadBlock(b)
	return blk.Info, err
}

// ReadBlock returns the whole decoded modinfo block of a wasm binary.
func ReadBlock(b []byte) (Block, error) {
	p, err := Extract(b)
	if err != nil {
		return Block{}, err
	}
	return DecodeBlock(p)
}

// Append returns a copy of the wasm binary b with info as its modinfo
// section, appended at the end. An existing modinfo section is removed
// first, so Append is idempotent. info is validated as Decode would. The
// new block declares no capabilities (AppendBlock for one that does).
func Append(b []byte, info raceless.Info) ([]byte, error) {
	return AppendBlock(b, Block{Info: info})
}

// AppendBlock is Append of a whole block.
func AppendBlock(b []byte, blk Block) ([]byte, error) {
	payload, err := EncodeBlock(blk)
	if err != nil {
		return nil, err
	}
	secs, err := Sections(b)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(b)+len(payload)+32)
	out = append(out, b[:len(wasmHeader)]...)
	for _, s := range secs {
		if s.ID == 0 && s.Name == SectionName {
			continue
		}
		out = append(out, b[s.Start:s.End]...)
	}
	body := AppendUleb32(nil, uint32(len(SectionName)))
	body = append(body, SectionName...)
	body = append(body, payload...)
	out = append(out, 0)
	out = AppendUleb32(out, uint32(len(body)))
	return append(out, body...), nil
}

// Encode validates info and returns its payload encoding (indented JSON).
func Encode(info raceless.Info) ([]byte, error) { return EncodeBlock(Block{Info: info}) }

// EncodeBlock is Encode of a whole block.
func EncodeBlock(blk Block) ([]byte, error) {
	if err := ValidateBlock(blk); err != nil {
		return nil, err
	}
	p, err := json.MarshalIndent(blk, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(p) > MaxSize {
		return nil, fmt.Errorf("%d bytes, limit %d: %w", len(p), MaxSize, ErrTooLarge)
	}
	return p, nil
}

// Decode parses and validates a modinfo payload, leaving out its
// capabilities (DecodeBlock has them).
func Decode(p []byte) (raceless.Info, error) {
	blk, err := DecodeBlock(p)
	return blk.Info, err
}

// DecodeBlock parses and validates a whole modinfo payload.
func DecodeBlock(p []byte) (Block, error) {
	var blk Block
	if len(p) > MaxSize {
		return blk, fmt.Errorf("%d bytes, limit %d: %w", len(p), MaxSize, ErrTooLarge)
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&blk); err != nil {
		return Block{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Block{}, fmt.Errorf("%w: trailing data after the JSON object", ErrMalformed)
	}
	if err := ValidateBlock(blk); err != nil {
		return Block{}, err
	}
	info := &blk.Info
	// "depends": [] means no dependencies: normalize to nil, as Encode
	// omits empty lists.
	if len(info.Depends) == 0 {
		info.Depends = nil
	}
	if len(info.Imports) == 0 {
		info.Imports = nil
	}
	if len(info.Aliases) == 0 {
		info.Aliases = nil
	}
	if len(info.Params) == 0 {
		info.Params = nil
	}
	if len(blk.Capabilities) == 0 {
		blk.Capabilities = nil
	}
	if len(blk.Routes) == 0 {
		blk.Routes = nil
	}
	return blk, nil
}

// ValidateBlock is Validate of a whole block: the Info, and capabilities
// each one of Capabilities, listed once.
func ValidateBlock(blk Block) error {
	if err := Validate(blk.Info); err != nil {
		return err
	}
	if len(blk.Capabilities) > maxListLen {
		return fmt.Errorf("%w: more than %d capabilities", ErrMalformed, maxListLen)
	}
	if len(blk.Routes) > maxListLen {
		return fmt.Errorf("%w: more than %d routes", ErrMalformed, maxListLen)
	}
	for _, r := range blk.Routes {
		if r == "" || len(r) > maxFieldLen || strings.ContainsAny(r, "\x00\n") {
			return fmt.Errorf("%w: invalid route %q", ErrMalformed, r)
		}
	}
	if blk.Pool < 0 || blk.Pool > 4096 {
		return fmt.Errorf("%w: pool %d out of range (0 to 4096)", ErrMalformed, blk.Pool)
	}
	seen := make(map[string]bool, len(blk.Capabilities))
	for _, c := range blk.Capabilities {
		if !KnownCapability(c) {
			return fmt.Errorf("%w: unknown capability %q (known: %s)", ErrMalformed, c, strings.Join(Capabilities, ", "))
		}
		if seen[c] {
			return fmt.Errorf("%w: capability %q declared twice", ErrMalformed, c)
		}
		seen[c] = true
	}
	return nil
}

// Validate checks a block: a valid module name, valid dependency names,
// imports that are non-empty symbol names without NUL or newline and
// declared once each, non-empty aliases, parameters with valid unique
// names, known types and defaults of their type, and the size limits.
// Errors wrap ErrMalformed.
func Validate(info raceless.Info) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, a...)...)
	}
	if !raceless.ValidName(info.Name) {
		return bad("invalid module name %q", info.Name)
	}
	for _, f := range []struct{ name, v string }{
		{"version", info.Version}, {"license", info.License},
		{"description", info.Description}, {"author", info.Author},
	} {
		if len(f.v) > maxFieldLen {
			return bad("%s longer than %d bytes", f.name, maxFieldLen)
		}
	}
	if len(info.Depends) > maxListLen || len(info.Imports) > maxListLen || len(info.Aliases) > maxListLen || len(info.Params) > maxListLen {
		return bad("more than %d depends, imports, aliases or params", maxListLen)
	}
	for _, d := range info.Depends {
		if !raceless.ValidName(d) {
			return bad("invalid dependency name %q", d)
		}
	}
	imported := make(map[string]bool, len(info.Imports))
	for _, s := range info.Imports {
		if s == "" || len(s) > maxFieldLen || strings.ContainsAny(s, "\x00\n") {
			return bad("invalid import %q", s)
		}
		if imported[s] {
			return bad("import %q declared twice", s)
		}
		imported[s] = true
	}
	for _, a := range info.Aliases {
		if a == "" || len(a) > maxFieldLen || strings.ContainsAny(a, "\x00\n") {
			return bad("invalid alias %q", a)
		}
	}
	seen := make(map[string]bool, len(info.Params))
	for _, p := range info.Params {
		if !raceless.ValidName(p.Name) {
			return bad("invalid parameter name %q", p.Name)
		}
		if seen[p.Name] {
			return bad("parameter %q declared twice", p.Name)
		}
		seen[p.Name] = true
		switch p.Type {
		case raceless.ParamString, raceless.ParamInt, raceless.ParamUint, raceless.ParamBool:
		default:
			return bad("parameter %q: unknown type %q", p.Name, p.Type)
		}
		if len(p.Default) > maxFieldLen || len(p.Description) > maxFieldLen {
			return bad("parameter %q: field longer than %d bytes", p.Name, maxFieldLen)
		}
		if p.Default != "" {
			if _, err := raceless.ResolveParams(raceless.Info{Name: info.Name, Params: []raceless.ParamSpec{p}},
				map[string]string{p.Name: p.Default}); err != nil {
				return bad("parameter %q: default %q is not of type %s", p.Name, p.Default, p.Type)
			}
		}
	}
	// What only the whole set shows (two names that differ by - and _
	// only, as the kernel treats them alike): the check a load makes.
	if _, err := raceless.ResolveParams(info, nil); err != nil {
		return bad("%v", err)
	}
	return nil
}
