// Package raceless is a module runtime: a Host loads, links, calls into and
// unloads modules while other goroutines are calling them, with no race.
//
// It is the 2002 linux-kernel thread "[RFC] Raceless module interface" made
// real for Go. A module is a Source (a native Go module compiled into the
// host, see Native, or a WebAssembly file, see package wasm) whose instance
// implements Module.
//
// # Lifecycle
//
// Every instance goes through the state machine
//
//	coming ──Init ok──▶ live ──Unload──▶ going ──Exit ok──▶ gone
//	   │                  ▲                │
//	   │                  └──refused───────┘   (busy, Exit refused, cancelled wait)
//	   └──Init failed──▶ going ──grace, own refs drained──▶ gone
//
// and no other transition. Subscribers (Host.Subscribe) see each one.
//
// # Invariants
//
//   - No call runs in a module that has been torn down: calls through the
//     host take the owner's reference (the counting interface: Acquire,
//     Symbol, Binding, Handle, Caller) or run inside a read section of the host's
//     grace-period domain (the non-counting interface: hooks). Unload
//     refuses new references, unpublishes, waits a grace period, and only
//     then checks the count and calls Exit.
//   - The host takes and drops references around calls, never module code:
//     the window of "MOD_DEC_USE_COUNT; return;" does not exist.
//   - From outside, TryGet fails unless the module is live.
//   - Registrations made during Init are staged: reserved (a clash fails
//     Init) and published in one step when the module goes live. A failed
//     Init leaves nothing that was ever visible.
//   - An unload either finishes (Exit ran exactly once, the name is free)
//     or leaves the module exactly as it was: live, republished, same count.
//   - No lock is held while module code runs. A module's Init may load
//     other modules; a cycle of inits waiting for each other is ErrCycle.
//   - A load of a name that is going waits until it is gone, then loads
//     afresh; concurrent loads of the same module are merged.
//   - A hot swap (Replace) publishes the new instance's registrations in
//     place of the old one's in one step; no lookup finds nothing.
//
// # Errors
//
// Errors match the sentinels ErrNotFound, ErrExists, ErrBusy, ErrGone,
// ErrNotLive, ErrCycle, ErrInvalid, ErrPermission and ErrInit with
// errors.Is, and name the module at fault (*ModuleError, *BusyError).
//
// See docs/design.md for why each choice was made.
package raceless
