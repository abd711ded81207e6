package raceless

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors, for errors.Is. Every error the host returns wraps one of
// them together with the name of the module (or symbol) at fault.
var (
	// ErrNotFound is returned when no module, symbol or registration of the
	// given name exists (kmod: ENOENT).
	ErrNotFound = errors.New("not found")
	// ErrExists is returned when loading a name that is already live, or
	// registering a name that another module already reserved (EEXIST).
	ErrExists = errors.New("already exists")
	// ErrBusy is returned when an unload is refused: references are held,
	// other modules depend on it, it is not live, or its Exit refused
	// (EBUSY/EWOULDBLOCK). The error is a *BusyError carrying the details.
	ErrBusy = errors.New("busy")
	// ErrGone is returned for an operation on an instance that has been
	// unloaded (or is being unloaded): its code is never run again.
	ErrGone = errors.New("module is gone")
	// ErrNotLive is returned when a reference or lookup needs a live
	// module and the module is still coming or already going.
	ErrNotLive = errors.New("module is not live")
	// ErrCycle is returned when a module's Init (directly or through its
	// dependencies) loads a module that is already being initialised on
	// the same chain.
	ErrCycle = errors.New("module load cycle")
	// ErrInvalid is returned for bad input: a malformed name, an unknown or
	// ill-typed parameter, a registration outside Init.
	ErrInvalid = errors.New("invalid argument")
	// ErrPermission is returned when the caller may not load or unload
	// modules (the daemon's control socket refuses other users).
	ErrPermission = errors.New("permission denied")
	// ErrInit is wrapped by the error of a load whose Init failed or
	// panicked; the module's own error is wrapped too.
	ErrInit = errors.New("init failed")
	// ErrInReadSection is returned by a lifecycle call made with the
	// context of a hook call (a read section of the host's grace-period
	// domain) that would have to wait for a grace period: Unload, Replace,
	// Synchronize, Shutdown, Autoclean, and a load of a name that is going.
	// That grace period waits for the hook itself to return, so the call
	// could never finish. See "Lifecycle calls from hooks" in the package
	// documentation.
	ErrInReadSection = errors.New("called inside a read section (a hook call)")
)

// ModuleError records an operation on a module and the error that made it
// fail. It unwraps to Err.
type ModuleError struct {
	Op     string // "load", "unload", "init", "exit", "import", "register", "call", ...
	Module string // module (or symbol) name
	Err    error
}

func (e *ModuleError) Error() string { return e.Op + " " + e.Module + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *ModuleError) Unwrap() error { return e.Err }

func modErr(op, name string, err error) error { return &ModuleError{Op: op, Module: name, Err: err} }

// BusyError is the error of a refused unload or hot swap. errors.Is(err,
// ErrBusy) holds.
type BusyError struct {
	Op      string // "replace" for Replace; "" (unload) otherwise
	Module  string
	Refs    int64    // references held when the unload was refused
	Holders []string // modules that depend on it (kmod's "Used by")
	// Symbols are those a refused Replace is about: imported ones the
	// replacement does not serve, or ones it would drop.
	Symbols []string
	Reason  string // why, in words: "in use", "in use by: a,b", "not live", "exit refused"
	Err     error  // the module's own refusal error, if Exit returned one
}

func (e *BusyError) Error() string {
	var b strings.Builder
	op := e.Op
	if op == "" {
		op = "unload"
	}
	fmt.Fprintf(&b, "%s %s: %s", op, e.Module, ErrBusy)
	if e.Reason != "" {
		b.WriteString(": " + e.Reason)
	}
	if e.Refs > 0 {
		fmt.Fprintf(&b, " (%d references)", e.Refs)
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

// Is reports ErrBusy.
func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// Unwrap returns the module's own refusal error, if any.
func (e *BusyError) Unwrap() error { return e.Err }
