//go:build wasip1

package sdk

import (
	"errors"
	"strconv"
	"unsafe"
)

// Host imports: module "raceless". See docs/module-authors.md.

//go:wasmimport raceless log
func hostLog(level int32, p unsafe.Pointer, n uint32)

//go:wasmimport raceless set_error
func hostSetError(p unsafe.Pointer, n uint32)

//go:wasmimport raceless param
func hostParam(name unsafe.Pointer, nameLen uint32, buf unsafe.Pointer, bufCap uint32) int32

//go:wasmimport raceless export
func hostExport(name unsafe.Pointer, nameLen uint32) int32

//go:wasmimport raceless import
func hostImport(name unsafe.Pointer, nameLen uint32) int32

//go:wasmimport raceless call
func hostCall(handle int32, args unsafe.Pointer, nargs uint32, results unsafe.Pointer, maxResults uint32) int32

//go:wasmimport raceless request
func hostRequest(name unsafe.Pointer, nameLen uint32) int32

//go:wasmimport raceless hook
func hostHook(event unsafe.Pointer, eventLen uint32, id uint32) int32

func strPtr(s string) (unsafe.Pointer, uint32) {
	return unsafe.Pointer(unsafe.StringData(s)), uint32(len(s))
}

// Errno is an error code of the ABI: the negative of a Linux errno value.
type Errno int32

// Error codes returned by the host, and accepted from callbacks.
const (
	ErrPermission Errno = -1  // EPERM
	ErrNotFound   Errno = -2  // ENOENT: no such module, symbol or parameter
	ErrIO         Errno = -5  // EIO: any other failure
	ErrNotLive    Errno = -11 // EAGAIN: the module is not live (yet/any more)
	ErrBusy       Errno = -16 // EBUSY
	ErrExists     Errno = -17 // EEXIST: name already registered
	ErrGone       Errno = -19 // ENODEV: the module was unloaded
	ErrInvalid    Errno = -22 // EINVAL: bad argument, or not allowed now
	ErrRange      Errno = -34 // ERANGE: result buffer too small
	ErrCycle      Errno = -40 // ELOOP: module load cycle
)

var errnoText = map[Errno]string{
	ErrPermission: "permission denied", ErrNotFound: "not found", ErrIO: "i/o error",
	ErrNotLive: "module is not live", ErrBusy: "busy", ErrExists: "already exists",
	ErrGone: "module is gone", ErrInvalid: "invalid argument", ErrRange: "result too large",
	ErrCycle: "module load cycle",
}

func (e Errno) Error() string {
	if s, ok := errnoText[e]; ok {
		return s
	}
	return "error " + strconv.Itoa(int(e))
}

// opError is an Errno from one of the host's operations, with the
// operation and its argument ("export add: already exists"). The SDK
// builds its errors without fmt, which would add about 0.9 MB to every
// module (a third of a small Go module, and as much of its load time).
type opError struct {
	op, name string
	err      error
}

func (e *opError) Error() string { return e.op + " " + e.name + ": " + e.err.Error() }
func (e *opError) Unwrap() error { return e.err }

func errno(rc int32) error {
	if rc >= 0 {
		return nil
	}
	return Errno(rc)
}

// code returns the ABI code for a callback's error: its Errno if it wraps
// one, otherwise ErrIO. The message goes to the host through set_error.
func code(err error) int32 {
	msg := err.Error()
	p, n := strPtr(msg)
	hostSetError(p, n)
	var e Errno
	if errors.As(err, &e) && e < 0 {
		return int32(e)
	}
	return int32(ErrIO)
}

var (
	initFn  func() error
	startFn func()
	stopFn  func()
	exitFn  func() (int, error)
	hooks   []func() error
)

// OnInit sets the module's init callback. It runs once, before the module
// goes live; an error fails the load and nothing it registered is ever
// visible.
func OnInit(f func() error) { initFn = f }

// OnStart sets the optional start callback, run after a successful init and
// again after a refused exit.
func OnStart(f func()) { startFn = f }

// OnStop sets the optional stop callback, run before exit once nothing can
// reach the module any more.
func OnStop(f func()) { stopFn = f }

// OnExit sets the exit callback. Returning busy > 0 or an error refuses the
// unload: the module stays live, exactly as it was. Without a callback exit
// always agrees.
func OnExit(f func() (busy int, err error)) { exitFn = f }

//go:wasmexport raceless_init
func abiInit() int32 {
	if initFn == nil {
		return 0
	}
	if err := initFn(); err != nil {
		return code(err)
	}
	return 0
}

//go:wasmexport raceless_start
func abiStart() {
	if startFn != nil {
		startFn()
	}
}

//go:wasmexport raceless_stop
func abiStop() {
	if stopFn != nil {
		stopFn()
	}
}

//go:wasmexport raceless_exit
func abiExit() int32 {
	if exitFn == nil {
		return 0
	}
	busy, err := exitFn()
	if err != nil {
		return code(err)
	}
	if busy > 0 {
		return int32(min(busy, 1<<31-1))
	}
	return 0
}

//go:wasmexport raceless_hook
func abiHook(id uint32) int32 {
	if int(id) >= len(hooks) {
		return int32(ErrInvalid)
	}
	if err := hooks[id](); err != nil {
		return code(err)
	}
	return 0
}

// Log levels, as log/slog's.
const (
	LevelDebug = -4
	LevelInfo  = 0
	LevelWarn  = 4
	LevelError = 8
)

// Log writes msg to the host's log at info level; the host adds the
// module's name.
func Log(msg string) { LogLevel(LevelInfo, msg) }

// LogLevel logs msg at the given level (LevelDebug ... LevelError).
func LogLevel(level int, msg string) {
	p, n := strPtr(msg)
	hostLog(int32(level), p, n)
}

// Param returns the value of a module parameter (validated by the host
// against the modinfo block, defaults filled) and whether it is set.
func Param(name string) (string, bool) {
	np, nn := strPtr(name)
	buf := make([]byte, 64)
	for {
		rc := hostParam(np, nn, unsafe.Pointer(unsafe.SliceData(buf)), uint32(len(buf)))
		if rc < 0 {
			return "", false
		}
		if int(rc) <= len(buf) {
			return string(buf[:rc]), true
		}
		buf = make([]byte, rc)
	}
}

// ParamOr returns the parameter's value, or def if it is not set.
func ParamOr(name, def string) string {
	if v, ok := Param(name); ok {
		return v
	}
	return def
}

// Export publishes the module's wasm export of that name (a
// //go:wasmexport function of package main, with integer parameters and
// results) as a symbol of the same name, callable by the host and by other
// modules. Valid only during init.
func Export(name string) error {
	p, n := strPtr(name)
	if err := errno(hostExport(p, n)); err != nil {
		return &opError{"export", name, err}
	}
	return nil
}

// Symbol is a function imported from another module.
type Symbol struct {
	name   string
	handle int32
}

// Import looks up a symbol exported by another live module (which may be
// loaded on demand) and makes this module depend on it: the other module
// cannot be unloaded while this one is loaded. Valid only during init.
func Import(name string) (Symbol, error) {
	p, n := strPtr(name)
	rc := hostImport(p, n)
	if rc < 0 {
		return Symbol{}, &opError{"import", name, Errno(rc)}
	}
	return Symbol{name: name, handle: rc}, nil
}

// Name returns the symbol's name.
func (s Symbol) Name() string { return s.name }

// Call calls the symbol and returns its results (at most 16). Values are
// uint64, as in raceless.Func: an i64 or f64 in all 64 bits, an i32 or f32
// in the low 32. A wasm symbol's i32 or f32 result is zero-extended
// (int32(r) reads an i32 back); its i32 argument may be given as uint32(v)
// or as uint64(int64(v)) (sign-extended), its f32 argument as
// uint64(math.Float32bits(f)); anything else fails with ErrInvalid.
func (s Symbol) Call(args ...uint64) ([]uint64, error) {
	var res [16]uint64
	var ap unsafe.Pointer
	if len(args) > 0 {
		ap = unsafe.Pointer(unsafe.SliceData(args))
	}
	rc := hostCall(s.handle, ap, uint32(len(args)), unsafe.Pointer(&res[0]), uint32(len(res)))
	if rc < 0 {
		return nil, &opError{"call", s.name, Errno(rc)}
	}
	return append([]uint64(nil), res[:rc]...), nil
}

// Request asks the host to load a module by name or alias (request_module)
// if it is not loaded yet.
func Request(nameOrAlias string) error {
	p, n := strPtr(nameOrAlias)
	if err := errno(hostRequest(p, n)); err != nil {
		return &opError{"request", nameOrAlias, err}
	}
	return nil
}

// Hook subscribes fn to a host event (a non-counting interface: the host
// unsubscribes it and waits for calls in progress before the module exits).
// Valid only during init.
func Hook(event string, fn func() error) error {
	p, n := strPtr(event)
	id := uint32(len(hooks))
	hooks = append(hooks, fn)
	if err := errno(hostHook(p, n, id)); err != nil {
		hooks = hooks[:id]
		return &opError{"hook", event, err}
	}
	return nil
}
