package wasm

import (
	"errors"
	"fmt"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm/modinfo"
)

// Sentinel errors, for errors.Is, grouped by phase. Errors about a file are
// *FileError values naming the file; errors of a call or lifecycle point
// are *raceless.ModuleError values naming the module.
var (
	// Open and ReadInfo (reading and checking the file).

	// ErrEmpty is returned when the file is empty.
	ErrEmpty = errors.New("empty file")
	// ErrTooLarge is returned when the file exceeds Config.MaxFileSize.
	ErrTooLarge = errors.New("file too large")
	// ErrNotWasm is returned when the file is not a WebAssembly module
	// (wrong magic number or version).
	ErrNotWasm = modinfo.ErrNotWasm
	// ErrTruncated is returned when the file's sections run past its end.
	ErrTruncated = modinfo.ErrTruncated
	// ErrNoModinfo is returned when the file has no raceless.modinfo
	// section.
	ErrNoModinfo = modinfo.ErrNoModinfo
	// ErrBadModinfo is returned when the modinfo section is malformed,
	// duplicated or too large (the modinfo sentinel is wrapped too).
	ErrBadModinfo = errors.New("bad modinfo")
	// ErrMissingExport is returned when a required export of the ABI
	// (raceless_init, raceless_exit, memory) is missing or ill-typed.
	ErrMissingExport = errors.New("missing or ill-typed ABI export")
	// ErrKeyRejected is returned when a module's signature refuses it:
	// always when its signature does not verify (modsig.ErrBadSignature,
	// wrapped too), and, once signatures are enforced, when it is unsigned
	// or signed by a key not in the keyring (modsig.ErrUnsigned,
	// modsig.ErrUnknownKey). The kernel's EKEYREJECTED.
	ErrKeyRejected = errors.New("key rejected")

	// Instantiate (compiling and linking).

	// ErrCompile is returned when wazero rejects the module's code.
	ErrCompile = errors.New("invalid WebAssembly code")
	// ErrUnknownImport is returned when the module imports something the
	// host does not provide (only "raceless" and "wasi_snapshot_preview1").
	ErrUnknownImport = errors.New("unknown import")
	// ErrInstantiate is returned when instantiation (including the WASI
	// reactor's _initialize) fails.
	ErrInstantiate = errors.New("instantiation failed")
	// ErrCapability is returned when a module declares a capability
	// (modinfo.Block.Capabilities) that the Loader's Granter does not
	// grant it; the error names the module and the capability.
	ErrCapability = errors.New("capability not granted")

	// Calls (symbols, hooks, lifecycle points).

	// ErrTrap is returned when guest code traps or panics (a Go guest's
	// panic exits its instance). The instance is aborted and the module
	// tainted.
	ErrTrap = errors.New("trap in module")
	// ErrLimit is returned when a call exceeds its deadline, or when a Go
	// guest dies "out of memory" after a memory.grow past its limit failed
	// (the failed grow itself only returns -1 to the guest). The instance
	// is aborted and the module tainted.
	ErrLimit = errors.New("module limit exceeded")
	// ErrAborted is returned by calls into an instance that an earlier
	// trap or limit aborted: its state cannot be trusted, so it runs no
	// more code. Unload it (that always works) and load it again.
	ErrAborted = errors.New("module instance aborted")
	// ErrReentrant is returned when a call would re-enter an instance
	// that is already running on the same call chain (A calls B calls A):
	// an instance runs one call at a time, so it would deadlock.
	ErrReentrant = errors.New("reentrant call into module")
	// ErrClosed is returned when the Loader has been closed.
	ErrClosed = errors.New("wasm loader closed")
)

// FileError is the error of an operation on a module file.
type FileError struct {
	Op   string // "open", "read", "verify", "modinfo", "compile", "instantiate"
	Path string
	Err  error
}

func (e *FileError) Error() string { return "wasm " + e.Op + " " + e.Path + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *FileError) Unwrap() error { return e.Err }

func fileErr(op, path string, err error) error { return &FileError{Op: op, Path: path, Err: err} }

// GuestError is the failure a guest reported from a lifecycle point, hook
// or symbol: a negative ABI code and the message it set with set_error.
// errors.Is maps the code to the raceless sentinel of the same meaning
// (-2 ErrNotFound, -16 ErrBusy, -22 ErrInvalid, ...).
type GuestError struct {
	Code int32
	Msg  string
}

func (e *GuestError) Error() string {
	if e.Msg != "" {
		return fmt.Sprintf("%s (code %d)", e.Msg, e.Code)
	}
	if s := sentinelOf(e.Code); s != nil {
		return fmt.Sprintf("%v (code %d)", s, e.Code)
	}
	return fmt.Sprintf("error code %d", e.Code)
}

// Is reports whether the code corresponds to target.
func (e *GuestError) Is(target error) bool { s := sentinelOf(e.Code); return s != nil && s == target }

// ABI error codes: negated Linux errno values.
const (
	codePerm     = -1
	codeNoEnt    = -2
	codeIO       = -5
	codeAgain    = -11
	codeBusy     = -16
	codeExist    = -17
	codeNoDev    = -19
	codeInval    = -22
	codeRange    = -34
	codeLoop     = -40
	maxErrMsgLen = 1024
)

var codeSentinels = []struct {
	code int32
	err  error
}{
	{codePerm, raceless.ErrPermission}, {codeNoEnt, raceless.ErrNotFound},
	{codeAgain, raceless.ErrNotLive}, {codeBusy, raceless.ErrBusy},
	{codeExist, raceless.ErrExists}, {codeNoDev, raceless.ErrGone},
	{codeInval, raceless.ErrInvalid}, {codeLoop, raceless.ErrCycle},
}

func sentinelOf(code int32) error {
	for _, c := range codeSentinels {
		if c.code == code {
			return c.err
		}
	}
	return nil
}

// codeOf maps a host-side error to the ABI code a host import returns.
func codeOf(err error) int32 {
	for _, c := range codeSentinels {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return codeIO
}
