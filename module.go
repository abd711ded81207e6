package raceless

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Module is what a module author implements: the two required points of the
// lifecycle. Optional points are the Starter, Stopper, ContextExiter and
// Sizer interfaces; a Signer declares the types of the Funcs it exports.
//
// Init runs once, while the module is coming. It may fail; what it registered
// through k is then discarded, never having been visible. It may load other
// modules through k.
//
// Exit runs once, after the module's registrations are unpublished, a grace
// period has passed and no reference is left. It may refuse: a positive busy
// count or a non-nil error puts the module back exactly as it was (live,
// registrations republished, Start run again). Exit runs exactly once per
// successful unload. It also runs for an instance that never went live
// although its Init succeeded (its Start panicked, or it was a replacement
// that Host.Replace refused for its exports): a refusal then only taints
// the module, which is freed all the same.
type Module interface {
	Init(k *Kernel) error
	Exit() (busy int, err error)
}

// Starter is implemented by modules with a start point: Start runs after a
// successful Init (and again after a refused Exit), before the module goes
// live. It cannot fail.
type Starter interface{ Start() }

// Stopper is implemented by modules with a stop point: Stop runs before Exit,
// once nothing can reach the module any more.
type Stopper interface{ Stop() }

// ContextExiter is implemented by modules whose exit may have to wait (for
// their own goroutines to finish, for a flush): the host calls ExitContext
// in place of Exit, with the unload's context (Unload's, Replace's,
// Shutdown's). When ctx is done the module should stop waiting and either
// finish at once or refuse with an error (wrapping ctx.Err()), which
// leaves it live, exactly as a refusing Exit does. Without it, a blocking
// Exit cannot be cancelled.
type ContextExiter interface {
	ExitContext(ctx context.Context) (busy int, err error)
}

// Sizer is implemented by modules that can tell their size in bytes (lsmod's
// "Size" column).
type Sizer interface{ Size() int64 }

// LegacyModule is the old two-point form whose cleanup cannot refuse. For it
// the host itself checks that no reference is held and waits for quiescence
// before Cleanup runs (the thread's compatibility wrapper).
type LegacyModule interface {
	Init(k *Kernel) error
	Cleanup()
}

// Legacy adapts a LegacyModule to Module.
func Legacy(m LegacyModule) Module { return legacy{m} }

type legacy struct{ LegacyModule }

func (l legacy) Exit() (int, error) { l.Cleanup(); return 0, nil }

// Info describes a module: what modinfo shows, readable without loading it.
type Info struct {
	Name        string      `json:"name"`
	Version     string      `json:"version,omitempty"`
	License     string      `json:"license,omitempty"`
	Description string      `json:"description,omitempty"`
	Author      string      `json:"author,omitempty"`
	Depends     []string    `json:"depends,omitempty"` // modules that must be live first
	Aliases     []string    `json:"aliases,omitempty"` // globs, as in kmod's modules.alias
	Params      []ParamSpec `json:"params,omitempty"`
	// Imports are the symbols the module imports, as kmod's depmod reads
	// them from a module's undefined symbols: depmod makes the module
	// depend on the modules that export them (found by their
	// "symbol:NAME" aliases). A wasm module that declares any may import
	// only those: for another name the wasm loader's import host function
	// returns -22 (EINVAL) and records nothing. An empty list allows any
	// import. The host does not check a native module's imports.
	Imports []string `json:"imports,omitempty"`
}

// ParamType is the type of a module parameter: the kernel's module_param
// types of the same names.
type ParamType string

// Parameter types. A value is parsed by its type, once, when the module is
// loaded (ResolveParams), as the Linux kernel parses module parameters
// (kernel/params.c), and kept in its canonical form:
//
//   - ParamInt: a 32-bit signed integer (the kernel's int, kstrtoint with
//     base 0): an optional sign, then decimal, octal after a leading 0
//     ("010" is 8) or hexadecimal after 0x or 0X ("0x10" is 16, "-0x10"
//     is -16); one trailing newline is allowed. Kept in decimal.
//   - ParamUint: a 32-bit unsigned integer (the kernel's uint, kstrtouint):
//     the same, with an optional '+' and no '-'. Kept in decimal.
//   - ParamBool: as the kernel's kstrtobool, the first character decides
//     (y, Y, t, T or 1 is true; n, N, f, F or 0 is false), or the first two
//     for "on" and "off" in any case; a name given without a value is
//     true. Kept as "Y" or "N", as /sys/module/M/parameters shows a bool.
//   - ParamString (and an empty type): the text as given, at most 1024
//     bytes (the kernel's charp limit), without NUL bytes.
const (
	ParamString ParamType = "string"
	ParamInt    ParamType = "int"
	ParamUint   ParamType = "uint"
	ParamBool   ParamType = "bool"
)

// ParamSpec declares one module parameter. Default, if not empty, is the
// value the parameter has when it is not given, written as a given value
// would be (a JSON string in a wasm module's modinfo, whatever the type):
// it is parsed by Type, and kept canonical, as a given value is.
type ParamSpec struct {
	Name        string    `json:"name"`
	Type        ParamType `json:"type"`
	Default     string    `json:"default,omitempty"`
	Description string    `json:"description,omitempty"`
}

// Source produces a module's instance. A Source is what Load takes: a native
// module compiled into the host (Native), or a loadable module read from a
// file (package wasm).
type Source interface {
	// Info returns the module's metadata without instantiating it.
	Info() Info
	// Key identifies where the module comes from ("native:hello",
	// "file:/path@sha256"). Concurrent loads of the same name and the
	// same key are merged; a load of the same name from another key waits
	// for the first and then gets ErrExists if it went live.
	Key() string
	// Instantiate creates the module's state. It runs once per load,
	// before Init, and may fail (nothing is registered yet).
	Instantiate(ctx context.Context) (Module, error)
}

// Native returns the Source of a module compiled into the host. newModule is
// called once per load: the module's state is created and destroyed, its code
// stays in the binary.
func Native(info Info, newModule func() Module) Source {
	return nativeSource{info: info, newModule: newModule}
}

type nativeSource struct {
	info      Info
	newModule func() Module
}

func (s nativeSource) Info() Info  { return s.info }
func (s nativeSource) Key() string { return "native:" + s.info.Name }
func (s nativeSource) Instantiate(context.Context) (Module, error) {
	m := s.newModule()
	if m == nil {
		return nil, fmt.Errorf("native module %s: constructor returned nil: %w", s.info.Name, ErrInvalid)
	}
	return m, nil
}

// ValidName reports whether name is acceptable as a module name: 1 to 55
// characters (kmod's MODULE_NAME_LEN-1 is 55) of letters, digits, '_' and '-'.
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > 55 {
		return false
	}
	for _, c := range name {
		if !(c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// ParamNoValue is the value ParseParams gives a parameter named without
// "=" ("insmod m.wasm debug"): a single NUL byte, which no value can hold
// (the kernel's parameters are C strings, and ParseParams refuses a NUL in
// a value). ResolveParams takes it as true for a bool parameter and refuses
// it for any other type, as the kernel does.
const ParamNoValue = "\x00"

// maxStringParam is the kernel's limit on a charp parameter (param_set_charp).
const maxStringParam = 1024

// ResolveParams checks the given parameters against the module's declared
// parameters and returns the full set: every given value and every
// default, each parsed by its parameter's type (see ParamType) and kept in
// canonical form ("0x10" for an int is "16", "yes" for a bool is "Y"). A
// given name matches a declared one with '-' and '_' taken as the same
// character, as the kernel's parameq does; the result uses the declared
// name. A parameter neither given nor defaulted is absent. Two declared
// parameters of the same name (with '-' taken as '_'), an unknown name,
// a name given twice (spelled two ways), a value that does not parse or is
// out of range for its type, ParamNoValue for a parameter that is not a
// bool, or a default that does not parse, is an error naming the module
// and the parameter, wrapping ErrInvalid.
func ResolveParams(info Info, given map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(info.Params))
	specs := make(map[string]ParamSpec, len(info.Params))
	for _, p := range info.Params {
		if q, dup := specs[paramKey(p.Name)]; dup {
			return nil, modErr("param", info.Name, fmt.Errorf("parameter %s declared twice (as %q and %q): %w", p.Name, q.Name, p.Name, ErrInvalid))
		}
		specs[paramKey(p.Name)] = p
		if p.Default == "" {
			continue
		}
		v, err := checkParam(p, p.Default)
		if err != nil {
			return nil, modErr("param", info.Name, fmt.Errorf("parameter %s: default %q: %v: %w", p.Name, p.Default, err, ErrInvalid))
		}
		out[p.Name] = v
	}
	keys := make([]string, 0, len(given))
	for k := range given {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the first error is the same every time
	seen := make(map[string]string, len(given))
	for _, k := range keys {
		v := given[k]
		p, ok := specs[paramKey(k)]
		if !ok {
			return nil, modErr("param", info.Name, fmt.Errorf("unknown parameter %q: %w", k, ErrInvalid))
		}
		if prev, dup := seen[p.Name]; dup {
			return nil, modErr("param", info.Name, fmt.Errorf("parameter %s given twice (%q and %q): %w", p.Name, prev, k, ErrInvalid))
		}
		seen[p.Name] = k
		c, err := checkParam(p, v)
		if err != nil {
			if v == ParamNoValue {
				return nil, modErr("param", info.Name, fmt.Errorf("parameter %s: %v: %w", k, err, ErrInvalid))
			}
			return nil, modErr("param", info.Name, fmt.Errorf("parameter %s=%q: %v: %w", k, v, err, ErrInvalid))
		}
		out[p.Name] = c
	}
	return out, nil
}

// paramKey is a parameter name with '-' taken as '_' (the kernel's parameq).
func paramKey(name string) string { return strings.ReplaceAll(name, "-", "_") }

// checkParam parses v as a value of p's type and returns its canonical text.
func checkParam(p ParamSpec, v string) (string, error) {
	switch {
	case v == ParamNoValue && p.Type == ParamBool:
		return "Y", nil // the kernel's param_set_bool: no value is "1"
	case v == ParamNoValue && (p.Type == ParamString || p.Type == "" || p.Type == ParamInt || p.Type == ParamUint):
		return "", fmt.Errorf("a value is required (%s=VALUE)", p.Name)
	case strings.IndexByte(v, 0) >= 0 && v != ParamNoValue:
		return "", fmt.Errorf("NUL byte in value")
	}
	switch p.Type {
	case ParamString, "":
		if len(v) > maxStringParam {
			return "", fmt.Errorf("longer than %d bytes", maxStringParam)
		}
		return v, nil
	case ParamInt:
		var n int64
		var err error
		if rest, neg := strings.CutPrefix(v, "-"); neg {
			var u uint64
			u, err = parseUnsigned(rest)
			if err == nil && u > 1<<31 {
				err = errRange
			}
			n = -int64(u)
		} else {
			var u uint64
			u, err = parseUnsigned(strings.TrimPrefix(v, "+"))
			if err == nil && u > math.MaxInt32 {
				err = errRange
			}
			n = int64(u)
		}
		if err != nil {
			return "", numErr(err, "an integer", "-2147483648 to 2147483647")
		}
		return strconv.FormatInt(n, 10), nil
	case ParamUint:
		u, err := parseUnsigned(strings.TrimPrefix(v, "+"))
		if err == nil && u > math.MaxUint32 {
			err = errRange
		}
		if err != nil {
			return "", numErr(err, "an unsigned integer", "0 to 4294967295")
		}
		return strconv.FormatUint(u, 10), nil
	case ParamBool:
		switch c := v + "\x00"; c[0] {
		case 'y', 'Y', 't', 'T', '1':
			return "Y", nil
		case 'n', 'N', 'f', 'F', '0':
			return "N", nil
		case 'o', 'O':
			switch c[1] {
			case 'n', 'N':
				return "Y", nil
			case 'f', 'F':
				return "N", nil
			}
		}
		return "", fmt.Errorf("not a boolean (y, n, 1, 0, on, off, true, false)")
	}
	return "", fmt.Errorf("unknown parameter type %q", p.Type)
}

var (
	errRange  = errors.New("out of range")
	errSyntax = errors.New("syntax")
)

func numErr(err error, what, bounds string) error {
	if err == errRange {
		return fmt.Errorf("out of range for %s (%s)", what, bounds)
	}
	return fmt.Errorf("not %s", what)
}

// parseUnsigned is the kernel's _kstrtoull(s, 0): 0x or 0X and a hex digit
// start a hexadecimal number, another leading 0 an octal one, anything else
// a decimal one; one newline may follow the digits, nothing else. An
// overflow of 64 bits is errRange, anything else that does not parse
// errSyntax.
func parseUnsigned(s string) (uint64, error) {
	base := uint64(10)
	if len(s) > 0 && s[0] == '0' {
		base = 8
		if len(s) > 2 && s[1]|0x20 == 'x' && hexDigit(s[2]) < 16 {
			base, s = 16, s[2:]
		}
	}
	var n uint64
	i, overflow := 0, false
	for ; i < len(s); i++ {
		d := hexDigit(s[i])
		if d >= base {
			break
		}
		if n > (math.MaxUint64-d)/base {
			overflow = true
		}
		n = n*base + d
	}
	switch {
	case overflow:
		return 0, errRange
	case i == 0, s[i:] != "" && s[i:] != "\n":
		return 0, errSyntax
	}
	return n, nil
}

// hexDigit is c's value as a hexadecimal digit, or 16 if it is not one.
func hexDigit(c byte) uint64 {
	switch {
	case c >= '0' && c <= '9':
		return uint64(c - '0')
	case c|0x20 >= 'a' && c|0x20 <= 'f':
		return uint64(c|0x20-'a') + 10
	}
	return 16
}

// ParseParams splits insmod-style arguments into a map of parameters to
// give to ResolveParams: each argument is one parameter, "name=value"
// (the value may hold spaces and '='), or a bare "name", which maps to
// ParamNoValue. As the kernel's parser does, a value that starts with a
// double quote loses it and a closing one ("name=\"a b\"" is "a b"), and so
// does an argument quoted whole ("\"name=a b\""). A name given twice,
// spelled the same or with '-' for '_', keeps the last value. An empty
// name, or a NUL byte in a value, is an error wrapping ErrInvalid; types
// are checked by ResolveParams, once the module's parameters are known.
func ParseParams(args []string) (map[string]string, error) {
	out := make(map[string]string, len(args))
	spelled := make(map[string]string, len(args)) // paramKey -> key in out
	for _, a := range args {
		k, v, ok := nextArg(a)
		if k == "" || k[0] == '=' {
			return nil, fmt.Errorf("parameter %q: empty name: %w", a, ErrInvalid)
		}
		if strings.IndexByte(a, 0) >= 0 {
			return nil, fmt.Errorf("parameter %q: NUL byte: %w", a, ErrInvalid)
		}
		if !ok {
			v = ParamNoValue
		}
		if prev, dup := spelled[paramKey(k)]; dup {
			delete(out, prev)
		}
		spelled[paramKey(k)] = k
		out[k] = v
	}
	return out, nil
}

// nextArg is the kernel's next_arg (lib/cmdline.c) for one argument: the
// name before the first '=' (at index 1 or later), the value after it
// without its enclosing double quotes, or ok false if there is no '='.
func nextArg(a string) (name, val string, ok bool) {
	quoted := strings.HasPrefix(a, `"`)
	if quoted {
		a = a[1:]
	}
	eq := -1
	if len(a) > 1 {
		eq = strings.IndexByte(a[1:], '=')
		if eq >= 0 {
			eq++
		}
	}
	if eq < 0 {
		if quoted {
			a = strings.TrimSuffix(a, `"`)
		}
		return a, "", false
	}
	name, val = a[:eq], a[eq+1:]
	switch {
	case strings.HasPrefix(val, `"`):
		// The kernel drops the opening quote and then the token's last
		// character if it is a quote (the same one when val is `"`).
		val = strings.TrimSuffix(val[1:], `"`)
	case quoted:
		val = strings.TrimSuffix(val, `"`)
	}
	return name, val, true
}
