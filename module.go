package raceless

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Module is what a module author implements: the two required points of the
// lifecycle. Optional points are the Starter, Stopper, ContextExiter and
// Sizer interfaces.
//
// Init runs once, while the module is coming. It may fail; what it registered
// through k is then discarded, never having been visible. It may load other
// modules through k.
//
// Exit runs once, after the module's registrations are unpublished, a grace
// period has passed and no reference is left. It may refuse: a positive busy
// count or a non-nil error puts the module back exactly as it was (live,
// registrations republished, Start run again). Exit runs exactly once per
// successful unload.
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
}

// ParamType is the type of a module parameter.
type ParamType string

// Parameter types.
const (
	ParamString ParamType = "string"
	ParamInt    ParamType = "int"
	ParamUint   ParamType = "uint"
	ParamBool   ParamType = "bool"
)

// ParamSpec declares one module parameter.
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

// ResolveParams checks the given key=value parameters against the module's
// declared parameters and returns the full set (defaults filled in). An
// unknown name or a value of the wrong type is an error naming it, wrapping
// ErrInvalid.
func ResolveParams(info Info, given map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(info.Params))
	specs := make(map[string]ParamSpec, len(info.Params))
	for _, p := range info.Params {
		specs[p.Name] = p
		if p.Default != "" {
			out[p.Name] = p.Default
		}
	}
	for k, v := range given {
		p, ok := specs[k]
		if !ok {
			return nil, modErr("param", info.Name, fmt.Errorf("unknown parameter %q: %w", k, ErrInvalid))
		}
		if err := checkParam(p, v); err != nil {
			return nil, modErr("param", info.Name, fmt.Errorf("parameter %s=%q: %v: %w", k, v, err, ErrInvalid))
		}
		out[k] = v
	}
	return out, nil
}

func checkParam(p ParamSpec, v string) error {
	switch p.Type {
	case ParamString, "":
		return nil
	case ParamInt:
		_, err := strconv.ParseInt(v, 0, 64)
		return numErr(err, "an integer")
	case ParamUint:
		_, err := strconv.ParseUint(v, 0, 64)
		return numErr(err, "an unsigned integer")
	case ParamBool:
		switch strings.ToLower(v) {
		case "1", "0", "y", "n", "yes", "no", "true", "false", "on", "off":
			return nil
		}
		return fmt.Errorf("not a boolean")
	}
	return fmt.Errorf("unknown parameter type %q", p.Type)
}

func numErr(err error, what string) error {
	if err != nil {
		return fmt.Errorf("not %s", what)
	}
	return nil
}

// ParseParams splits "key=value" arguments (insmod's syntax) into a map. A
// bare key means "key=1" for booleans, as the kernel accepts.
func ParseParams(args []string) (map[string]string, error) {
	out := make(map[string]string, len(args))
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if k == "" {
			return nil, fmt.Errorf("parameter %q: empty name: %w", a, ErrInvalid)
		}
		if !ok {
			v = "1"
		}
		out[k] = v
	}
	return out, nil
}
