// Package policy reads the capability policy of a raceless daemon: which
// module may use which capability of its host, and with what. A
// WebAssembly module gets nothing from its host it was not granted (clocks
// and random numbers excepted): it declares the capabilities it wants in
// its modinfo block (modinfo.Block.Capabilities), and a load that wants
// one the policy does not grant it is refused, naming the capability.
//
// # Format
//
// A policy file is UTF-8 text, one directive per line, as modprobe.d's
// files are; a line whose first non-blank character is '#' is a comment,
// and blank lines are skipped. Fields are separated by blanks (spaces and
// tabs), so no field holds one. The one directive is
//
//	grant MODULE CAPABILITY [ARGUMENT]
//
// MODULE is a module name (raceless.ValidName), CAPABILITY one of
// modinfo.Capabilities, and the ARGUMENT is the capability's:
//
//	grant hello fs-read /srv/hello    # hello sees the VFS directory /srv/hello, read-only, as its WASI root
//
// fs-read takes a clean absolute path of the host's VFS (path.Clean
// leaves it as it is). A module is granted one capability at most once.
//
// # Invariants
//
//   - Parse never panics, and what it accepts String writes back so that
//     Parse gives the same policy again (FuzzParse).
//   - Every error wraps ErrSyntax and names the file and line.
//   - A Policy is immutable once parsed; it is safe for concurrent use.
package policy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm/modinfo"
)

// MaxSize is the largest policy file Parse accepts.
const MaxSize = 1 << 20

// ErrSyntax is wrapped by every error of a policy that does not parse.
var ErrSyntax = errors.New("invalid policy")

// Grant is one grant of the policy.
type Grant struct {
	Module     string
	Capability string
	// Arg is the capability's argument: for modinfo.CapFSRead, the VFS
	// directory the module sees as its root.
	Arg string
}

// Policy is a parsed policy: its grants by module and capability.
type Policy struct {
	grants map[string]map[string]Grant
}

// Empty is the policy that grants nothing.
var Empty = &Policy{}

// Load reads and parses the policy file at name.
func Load(name string) (*Policy, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return Parse(name, b)
}

// Parse parses a policy; name is the file's name, for errors.
func Parse(name string, data []byte) (*Policy, error) {
	bad := func(line int, format string, a ...any) error {
		return fmt.Errorf("%s:%d: %w: "+format, append([]any{name, line, ErrSyntax}, a...)...)
	}
	if len(data) > MaxSize {
		return nil, bad(0, "more than %d bytes", MaxSize)
	}
	if !utf8.Valid(data) {
		return nil, bad(0, "not UTF-8 text")
	}
	p := &Policy{grants: map[string]map[string]Grant{}}
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		f := strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' || r == '\r' })
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if strings.ContainsFunc(line, func(r rune) bool { return r < ' ' && r != '\t' && r != '\r' || r == 0x7f }) {
			return nil, bad(n, "a control character")
		}
		if f[0] != "grant" {
			return nil, bad(n, "unknown directive %q (want grant)", f[0])
		}
		if len(f) < 3 {
			return nil, bad(n, "grant needs a module and a capability: grant MODULE CAPABILITY [ARGUMENT]")
		}
		g := Grant{Module: f[1], Capability: f[2]}
		if !raceless.ValidName(g.Module) {
			return nil, bad(n, "invalid module name %q", g.Module)
		}
		switch g.Capability {
		case modinfo.CapFSRead:
			if len(f) != 4 {
				return nil, bad(n, "%s needs one argument, a directory of the VFS: grant %s %s DIR", g.Capability, g.Module, g.Capability)
			}
			g.Arg = f[3]
			if !strings.HasPrefix(g.Arg, "/") || path.Clean(g.Arg) != g.Arg {
				return nil, bad(n, "%s: %q is not a clean absolute path", g.Capability, g.Arg)
			}
		default:
			return nil, bad(n, "unknown capability %q (known: %s)", g.Capability, strings.Join(modinfo.Capabilities, ", "))
		}
		m := p.grants[g.Module]
		if m == nil {
			m = map[string]Grant{}
			p.grants[g.Module] = m
		}
		if _, dup := m[g.Capability]; dup {
			return nil, bad(n, "%s is granted %s twice", g.Module, g.Capability)
		}
		m[g.Capability] = g
	}
	return p, nil
}

// Lookup returns the grant of capability to module, if the policy makes
// one.
func (p *Policy) Lookup(module, capability string) (Grant, bool) {
	g, ok := p.grants[module][capability]
	return g, ok
}

// Grants returns every grant, sorted by module and capability.
func (p *Policy) Grants() []Grant {
	var out []Grant
	for _, m := range p.grants {
		for _, g := range m {
			out = append(out, g)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Module != out[j].Module {
			return out[i].Module < out[j].Module
		}
		return out[i].Capability < out[j].Capability
	})
	return out
}

// String returns the policy in its file format, one grant a line, sorted.
func (p *Policy) String() string {
	var b strings.Builder
	for _, g := range p.Grants() {
		b.WriteString("grant " + g.Module + " " + g.Capability)
		if g.Arg != "" {
			b.WriteString(" " + g.Arg)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
