// Package control is the wire protocol of the raceless daemon's control
// socket: one JSON request line from the client, then zero or more progress
// lines and exactly one final response line from the daemon, then the
// daemon closes the connection. docs/cli.md documents it for other clients.
//
// The server side (Listen, Server) creates the unix socket with mode 0600
// and checks every peer's credentials (SO_PEERCRED on Linux, LOCAL_PEERCRED,
// as getpeereid(3), on darwin and FreeBSD): a peer whose uid is not the
// daemon's is refused with code "permission" before its request is read. On
// a platform where the peer's credentials cannot be read, every connection
// is refused (the check never passes unchecked).
package control

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/raceless/raceless"
)

// Version is the protocol version reported by the "ping" op.
const Version = 1

// MaxLine bounds a request or response line (1 MiB).
const MaxLine = 1 << 20

// Request is one client request. Op selects the operation; the other fields
// are its arguments (unused ones are omitted on the wire).
type Request struct {
	Op     string            `json:"op"`
	Name   string            `json:"name,omitempty"`
	Names  []string          `json:"names,omitempty"`
	Path   string            `json:"path,omitempty"`
	Params map[string]string `json:"params,omitempty"`

	Force     bool   `json:"force,omitempty"`
	Wait      bool   `json:"wait,omitempty"`
	Timeout   string `json:"timeout,omitempty"` // Go duration; empty = no deadline
	Progress  bool   `json:"progress,omitempty"`
	FirstTime bool   `json:"first_time,omitempty"`
	DryRun    bool   `json:"dry_run,omitempty"`
	Threads   int    `json:"threads,omitempty"`

	// mount / umount
	Type    string   `json:"type,omitempty"`
	Source  string   `json:"source,omitempty"`
	Target  string   `json:"target,omitempty"`
	Options string   `json:"options,omitempty"`
	Bind    bool     `json:"bind,omitempty"`
	Rec     bool     `json:"rec,omitempty"`
	Move    bool     `json:"move,omitempty"`
	Lazy    bool     `json:"lazy,omitempty"`
	Args    []uint64 `json:"args,omitempty"`
}

// Response is one line from the daemon: a progress report (Progress set),
// or the final answer (OK, with Data or Error).
type Response struct {
	Progress json.RawMessage `json:"progress,omitempty"`
	Final    bool            `json:"final,omitempty"`
	OK       bool            `json:"ok,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
	Error    *Error          `json:"error,omitempty"`
}

// Error is a failed request.
type Error struct {
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Module  string   `json:"module,omitempty"`
	Refs    int64    `json:"refs,omitempty"`
	Holders []string `json:"holders,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	// Routes are the HTTP routes with requests in flight of a module whose
	// unload was refused, as "PATTERN (N)".
	Routes []string `json:"routes,omitempty"`
	// Mounts are the mounts of the filesystems a module whose unload was
	// refused provides: "/m" for an attached one, "/m (detached with
	// open files: N)" for one unmounted lazily and still held by open
	// files.
	Mounts []string `json:"mounts,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Is lets errors.Is compare a wire error with the sentinels of its class
// (see Classes): a "notfound" error is raceless.ErrNotFound, a "format"
// error is every wasm file-format sentinel.
func (e *Error) Is(target error) bool {
	c := classByCode(e.Code)
	if c == nil {
		return false
	}
	for _, s := range c.Sentinels {
		if s.Err == target {
			return true
		}
	}
	return false
}

// ErrUnsupported is returned for an operation that this build of the daemon
// does not include.
var ErrUnsupported = errors.New("not built in this version")

// Unsupportedf returns an error matching ErrUnsupported.
func Unsupportedf(format string, a ...any) error {
	return fmt.Errorf(format+": %w", append(a, ErrUnsupported)...)
}

// ErrorOf converts an error of the core (or of the VFS, or of the daemon)
// into a wire error, classifying it with ClassOf.
func ErrorOf(err error) *Error {
	var we *Error
	if errors.As(err, &we) {
		return we
	}
	e := &Error{Code: ClassOf(err).Code, Message: err.Error()}
	if e.Code == "" { // a class that never crosses the wire
		e.Code = CodeFailed
	}
	var be *raceless.BusyError
	if errors.As(err, &be) {
		e.Module, e.Refs, e.Holders, e.Reason = be.Module, be.Refs, be.Holders, be.Reason
	}
	var me *raceless.ModuleError
	if e.Module == "" && errors.As(err, &me) {
		e.Module = me.Module
	}
	return e
}
