// Package desired is the declarative desired state of one raceless host:
// the modules it runs (by name, alias or file, with version or digest and
// parameters), its mounts and its HTTP middleware order, read from a TOML
// file or a directory of them (modules-load.d, modprobe.d and fstab in
// spirit), with Parse and Load. The daemon's reconciler
// (daemon.Daemon.Reconcile, cmd/raceless/internal/daemon/reconcile.go)
// moves a running host towards a State with the ordinary lifecycle
// operations and reports what it did in a Report. docs/fleet.md documents
// the format, every field and the reconciliation.
//
// Invariants: a State returned by Parse or Load is valid as a whole (every
// refusal is an *Error matching ErrInvalid, and nothing is returned with
// it); its module files are absolute, clean paths; no module (by name or
// by file), mount target or middleware list appears twice; a mount's
// Source is never empty. The same State is what a fleet (package fleet)
// hands each host: the fleet layer only decides which State a host should
// run; the reconciler decides how to get there.
package desired

// State is a host's desired state. The zero State is a host with nothing
// loaded beyond its boot modules and nothing mounted beyond its boot mounts.
type State struct {
	Modules []Module `toml:"module"`
	Mounts  []Mount  `toml:"mount"`
	HTTP    HTTP     `toml:"http"`
}

// Module is one module the host must run.
type Module struct {
	// Name is the module's name or an alias (resolved through the module
	// directory's index, or a built-in module); exactly one of Name and
	// File is set.
	Name string `toml:"name"`
	// File is a loadable module file (a path on the host; in a fleet, the
	// file whose sha256 is Digest).
	File string `toml:"file"`
	// Digest is "sha256:<hex>" of File's bytes; when set the host refuses
	// a file whose bytes differ.
	Digest string `toml:"digest"`
	// Version, when set, must equal the module's modinfo version.
	Version string `toml:"version"`
	// Params are the module's parameters (TOML strings: repeat = "2").
	Params map[string]string `toml:"params"`
	// Force allows the reconciler to force this module's unload (or a
	// replacement that drops symbols still held) instead of leaving it
	// busy and retrying.
	Force bool `toml:"force"`

	// At is where the entry was read, "FILE:LINE" (set by Parse; not a
	// key of the file).
	At string `toml:"-" json:"at,omitempty"`
}

// Mount is one mount the host must have.
type Mount struct {
	Source  string `toml:"source"`
	Target  string `toml:"target"`
	Type    string `toml:"type"`
	Options string `toml:"options"`
	Mkdir   bool   `toml:"mkdir"`

	// At is where the entry was read, "FILE:LINE" (set by Parse; not a
	// key of the file).
	At string `toml:"-" json:"at,omitempty"`
}

// HTTP is the desired HTTP configuration.
type HTTP struct {
	// Middleware is the middleware chain, outermost first. nil: the
	// state does not set it (the daemon's --http-middleware stands);
	// empty and not nil ("middleware = []"): no middleware.
	Middleware []string `toml:"middleware"`

	// At is where middleware was set, "FILE:LINE" (set by Parse; not a
	// key of the file).
	At string `toml:"-" json:"at,omitempty"`
}

// Report is what one reconciliation did: one Item per module, mount or
// setting it touched or could not.
type Report struct {
	Items []Item `json:"items"`
	// Converged is true when the host now runs exactly the State.
	Converged bool `json:"converged"`
}

// Item is what reconciliation did, or would do (diff), to one item.
type Item struct {
	Kind   string `json:"kind"`   // "module", "mount", "http"
	Name   string `json:"name"`   // module name, mount target, setting
	Action string `json:"action"` // "load", "replace", "unload", "mount", "remount", "umount", "set", "keep"
	Err    string `json:"error,omitempty"`
	Retry  bool   `json:"retry,omitempty"` // left as it is (busy) and retried later
}
