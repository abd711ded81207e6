package control

import (
	"errors"
	"io/fs"
	"syscall"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm"
	"github.com/raceless/raceless/wasm/modsig"
	"github.com/raceless/raceless/wasm/policy"
)

// Sentinel is an error a Class matches with errors.Is, and the name the
// documentation gives it.
type Sentinel struct {
	Name string
	Err  error
}

// Class is one class of failure: the code the daemon sends on the wire,
// the exit status the command line returns, and the text kmod (or
// strerror) prints for it. Classes is the only place where an error is
// mapped to a code, a status or a text: the daemon's ErrorOf, the wire
// Error's Is and the CLI's exit status all read it, and docs/cli.md's
// exit-status table is checked against it.
type Class struct {
	Exit    int    // exit status of the command line
	Code    string // code on the wire; "" for a class that never crosses it
	Meaning string // what the status means, in words (docs/cli.md)
	// Text is what insmod and replace print before the error itself
	// (kmod's insmod prints strerror, or "Invalid module format",
	// "Invalid parameters"); "" prints the error alone.
	Text string
	// Sentinels are the errors the class matches with errors.Is, in the
	// order the documentation lists them.
	Sentinels []Sentinel
	// Op, when set, restricts the class to errors that also carry a
	// *raceless.ModuleError with this Op in their chain.
	Op string
}

// Codes of Error, one per class of failure (the CLI maps each to an exit
// status through Classes).
const (
	CodeFailed      = "failed"      // anything else
	CodeUsage       = "usage"       // malformed request
	CodeUnsupported = "unsupported" // not built in this version
	CodePermission  = "permission"  // raceless.ErrPermission, EPERM, EACCES
	CodeDeadlock    = "deadlock"    // raceless.ErrInReadSection
	CodeInit        = "init"        // raceless.ErrInit: the module's Init failed
	CodeFault       = "fault"       // a wasm trap, limit or aborted instance
	CodeKeyRejected = "keyrejected" // wasm.ErrKeyRejected: the module's signature refuses it (EKEYREJECTED)
	CodeFormat      = "format"      // a file that is not a valid module (ENOEXEC)
	CodeBusy        = "busy"        // raceless.ErrBusy, EBUSY
	CodeNotLive     = "notlive"     // raceless.ErrNotLive, EAGAIN
	CodeGone        = "gone"        // raceless.ErrGone, ENODEV
	CodeNotFound    = "notfound"    // raceless.ErrNotFound, ENOENT
	CodeExists      = "exists"      // raceless.ErrExists, EEXIST
	CodeParam       = "param"       // a parameter refused by raceless.ResolveParams
	CodeCycle       = "cycle"       // raceless.ErrCycle
	CodeInvalid     = "invalid"     // raceless.ErrInvalid, EINVAL
)

// Classes, in the order they are tried: an error belongs to the first class
// one of whose sentinels it matches (so a file rejected by the compiler is
// "format", not "invalid", and an Init that failed with EINVAL is "init",
// not "param"). Classes[0] is success; the last class, "failed", matches
// whatever no other class does.
var Classes = []Class{
	{Exit: 0, Meaning: "success"},
	{Exit: 2, Code: CodeUsage, Meaning: "usage: bad flag, missing argument, unknown command, malformed request"},
	{Exit: 6, Code: CodePermission, Meaning: "permission: the socket refused this uid, an operation not permitted, or a capability the policy does not grant", Text: "Operation not permitted",
		Sentinels: []Sentinel{{"raceless.ErrPermission", raceless.ErrPermission}, {"EPERM", syscall.EPERM}, {"EACCES", syscall.EACCES}, {"fs.ErrPermission", fs.ErrPermission},
			{"wasm.ErrCapability", wasm.ErrCapability}}},
	{Exit: 8, Meaning: "the daemon is not running (cannot connect)",
		Sentinels: []Sentinel{{"control.ErrNoDaemon", ErrNoDaemon}}},
	{Exit: 9, Code: CodeUnsupported, Meaning: "not built in this version",
		Sentinels: []Sentinel{{"control.ErrUnsupported", ErrUnsupported}}},
	{Exit: 1, Code: CodeDeadlock, Meaning: "a lifecycle call from a hook (it would wait for itself)",
		Sentinels: []Sentinel{{"raceless.ErrInReadSection", raceless.ErrInReadSection}}},
	{Exit: 1, Code: CodeInit, Meaning: "the module's Init failed (whatever its own error)", Text: "Module init failed",
		Sentinels: []Sentinel{{"raceless.ErrInit", raceless.ErrInit}}},
	{Exit: 1, Code: CodeFault, Meaning: "the module's code trapped, exceeded a limit, or was aborted",
		Sentinels: []Sentinel{{"wasm.ErrTrap", wasm.ErrTrap}, {"wasm.ErrLimit", wasm.ErrLimit}, {"wasm.ErrAborted", wasm.ErrAborted}, {"wasm.ErrReentrant", wasm.ErrReentrant}}},
	{Exit: 10, Code: CodeKeyRejected, Meaning: "key rejected: the module's signature does not verify, or signatures are enforced and it is unsigned or signed by a key not in the keyring", Text: "Key was rejected by service",
		Sentinels: []Sentinel{{"wasm.ErrKeyRejected", wasm.ErrKeyRejected}}},
	{Exit: 7, Code: CodeFormat, Meaning: "invalid module format: not a module, or rejected by the compiler or the linker", Text: "Invalid module format",
		Sentinels: []Sentinel{
			{"wasm.ErrEmpty", wasm.ErrEmpty}, {"wasm.ErrTooLarge", wasm.ErrTooLarge}, {"wasm.ErrNotWasm", wasm.ErrNotWasm},
			{"wasm.ErrTruncated", wasm.ErrTruncated}, {"wasm.ErrNoModinfo", wasm.ErrNoModinfo}, {"wasm.ErrBadModinfo", wasm.ErrBadModinfo},
			{"wasm.ErrMissingExport", wasm.ErrMissingExport}, {"wasm.ErrCompile", wasm.ErrCompile},
			{"wasm.ErrUnknownImport", wasm.ErrUnknownImport}, {"wasm.ErrInstantiate", wasm.ErrInstantiate}}},
	{Exit: 5, Code: CodeBusy, Meaning: "busy: in use, a wait timed out, request slots exhausted", Text: "Device or resource busy",
		Sentinels: []Sentinel{{"raceless.ErrBusy", raceless.ErrBusy}, {"EBUSY", syscall.EBUSY}}},
	{Exit: 5, Code: CodeNotLive, Meaning: "not live: the module is still coming or already going", Text: "Resource temporarily unavailable",
		Sentinels: []Sentinel{{"raceless.ErrNotLive", raceless.ErrNotLive}, {"EAGAIN", syscall.EAGAIN}}},
	{Exit: 3, Code: CodeGone, Meaning: "no such device: the instance was unloaded, or an unknown filesystem type", Text: "No such device",
		Sentinels: []Sentinel{{"raceless.ErrGone", raceless.ErrGone}, {"ENODEV", syscall.ENODEV}}},
	{Exit: 3, Code: CodeNotFound, Meaning: "not found: module, file, alias, symbol, index, path", Text: "No such file or directory",
		Sentinels: []Sentinel{{"raceless.ErrNotFound", raceless.ErrNotFound}, {"ENOENT", syscall.ENOENT}, {"fs.ErrNotExist", fs.ErrNotExist}}},
	{Exit: 4, Code: CodeExists, Meaning: "already exists / already loaded", Text: "File exists",
		Sentinels: []Sentinel{{"raceless.ErrExists", raceless.ErrExists}, {"EEXIST", syscall.EEXIST}, {"fs.ErrExist", fs.ErrExist}}},
	{Exit: 7, Code: CodeParam, Meaning: "invalid parameters: refused by raceless.ResolveParams (op param)", Text: "Invalid parameters",
		Sentinels: []Sentinel{{"raceless.ErrInvalid", raceless.ErrInvalid}}, Op: "param"},
	{Exit: 1, Code: CodeCycle, Meaning: "a module load cycle",
		Sentinels: []Sentinel{{"raceless.ErrCycle", raceless.ErrCycle}}},
	{Exit: 7, Code: CodeInvalid, Meaning: "invalid: an argument, a malformed index or policy, a key file that is not an Ed25519 key, a path that is not a mount point", Text: "Invalid argument",
		Sentinels: []Sentinel{{"raceless.ErrInvalid", raceless.ErrInvalid}, {"EINVAL", syscall.EINVAL}, {"policy.ErrSyntax", policy.ErrSyntax}, {"modsig.ErrBadKey", modsig.ErrBadKey}}},
	{Exit: 1, Code: CodeFailed, Meaning: "any other failure (torture violations included)"},
}

// classFailed is the last class: whatever no other class matches.
var classFailed = &Classes[len(Classes)-1]

// matches reports whether err belongs to c.
func (c *Class) matches(err error) bool {
	for _, s := range c.Sentinels {
		if errors.Is(err, s.Err) {
			return c.Op == "" || hasOp(err, c.Op)
		}
	}
	return false
}

// hasOp reports whether a *raceless.ModuleError with Op op is anywhere in
// err's chain (errors.As would stop at the outermost one).
func hasOp(err error, op string) bool {
	for err != nil {
		if me, ok := err.(*raceless.ModuleError); ok && me.Op == op {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if hasOp(e, op) {
					return true
				}
			}
			return false
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		default:
			return false
		}
	}
	return false
}

// ClassOf returns err's class: a wire *Error's by its code, any other
// error's the first class that matches it. nil is success (Classes[0]).
func ClassOf(err error) *Class {
	if err == nil {
		return &Classes[0]
	}
	var we *Error
	if errors.As(err, &we) {
		if c := classByCode(we.Code); c != nil {
			return c
		}
		return classFailed
	}
	for i := 1; i < len(Classes); i++ {
		if Classes[i].matches(err) {
			return &Classes[i]
		}
	}
	return classFailed
}

func classByCode(code string) *Class {
	if code == "" {
		return nil
	}
	for i := range Classes {
		if Classes[i].Code == code {
			return &Classes[i]
		}
	}
	return nil
}
