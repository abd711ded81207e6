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
// and no other transition ("Init failed" includes a failed dependency or
// instantiation and a panicking Start). Subscribers (Host.Subscribe) see
// each one, in the order it was made: an unload refused after going (a
// reference slipped in, Exit refused, a cancelled wait) as going then
// live, a failed Init as coming, going, gone.
//
// # Invariants
//
//   - No call runs in a module that has been torn down: calls through the
//     host take the owner's reference (the counting interface: Acquire
//     and its Binding, Handle, Caller) or run inside a read section of the
//     host's grace-period domain (the non-counting interface: hooks). Unload
//     refuses new references, unpublishes, waits a grace period, and only
//     then checks the count and calls Exit.
//   - The host takes and drops references around calls, never module code:
//     the window of "MOD_DEC_USE_COUNT; return;" does not exist.
//   - A Binding drops its reference at most once: a second Release does
//     nothing, and go vet reports a copied Binding.
//   - From outside, a reference is taken only on a live module: a lookup,
//     a Handle or a Caller finds nothing in a module coming, going or gone.
//   - Registrations made during Init are staged: reserved (a clash fails
//     Init) and published in one step when the module goes live. A failed
//     Init leaves nothing that was ever visible.
//   - An unload either finishes (Exit ran exactly once, the name is free)
//     or leaves the module exactly as it was: live, republished, same count.
//   - No lock is held while module code runs. A module's Init may load
//     other modules; a cycle of inits waiting for each other is ErrCycle.
//   - A load of a name that is going waits until it is gone, then loads
//     afresh (from a hook, see below); concurrent loads of the same module
//     are merged.
//   - A hot swap (Replace) publishes the new instance's registrations in
//     place of the old one's in one step; no lookup finds nothing.
//
// # Calling into modules
//
// There are three ways in, one per idea, and the non-counting path of hooks
// beside them. All of them take a reference on (or enter a read section
// against) the module before its code runs and drop it after, so no call
// runs in a module that has been torn down; what differs is how often the
// name is looked up and what a call writes to memory shared with other
// goroutines.
//
//	Host.Acquire(kind, name) → Binding   a one-shot lookup holding a reference
//	Host.Handle(name) → Handle.Call      a name resolved once, followed across reloads
//	Host.NewCaller() → Caller.Call       the per-goroutine fast path (of a Handle)
//	Host.CallHooks, Caller.CallHooks      hooks: a read section, no reference
//
// Their costs and contracts:
//
//   - Host.Acquire looks the name up (a lock-free hash probe and a check of
//     the owner's publication) and takes a reference on the owner (one
//     atomic add on a slot of the owner's counter, striped so that
//     goroutines rarely share one); Binding.Release drops it. Hold a
//     Binding across many calls, or for a value that is not a function (a
//     filesystem type, a route). Safe for concurrent use; a Binding itself
//     belongs to one goroutine at a time and must not be copied.
//   - A Handle caches what its name resolved to: a call costs one atomic
//     add and one atomic subtract on a slot of the owner's counter, no map
//     lookup, and holds no reference between calls, so it never keeps a
//     module loaded. When the owner is no longer live (unloaded, replaced)
//     the next call resolves the name again. Safe for concurrent use.
//   - A Caller is one goroutine's: a call through it takes the owner's
//     reference with plain stores to the Caller's own word, no atomic
//     read-modify-write and no write shared with other goroutines; unloads
//     pay instead (a membarrier and a scan of the registered Callers per
//     unload). Not safe for concurrent use.
//   - Hooks (Kernel.Hook) are called without a reference, inside a read
//     section of the host's grace-period domain that unload waits out:
//     Host.CallHooks enters it with an atomic operation, Caller.CallHooks
//     with a store to the Caller's own slot.
//
// Functions have one calling convention, Func, wazero's: the stack holds
// the arguments on entry, and the function may overwrite it and return
// its results in it. A caller that reuses one stack with room for the
// results calls without allocating, native or wasm. `raceless bench calls`
// and `raceless bench wasm` measure each path against its floor; see
// docs/fastpaths.md for the protocols and the figures.
//
// A module reaches other modules through its Kernel: Kernel.Import resolves
// a symbol once and records a dependency (the exporter cannot be unloaded
// before the importer; a function comes as a Func that follows the
// exporter across a hot swap), Kernel.Get and Kernel.Put pin the module
// itself (for work it hands to a goroutine of its own).
//
// A hot swap (Host.Replace) of a module that others import moves them to
// the new instance in the swap's step, provided it exports every symbol
// they imported with the same Signature (see Signer); a replacement that
// drops a symbol nobody imports needs ReplaceOptions.Force.
//
// # Module code that panics
//
// Every call the host makes into module code (a native Source's
// constructor, Init, Start, Stop, Exit, ExitContext, Size, hooks, and
// symbols called through a Handle or a Caller) recovers a panic and taints
// the module. A panic in Init or, on a load, in Start fails the load with
// an error wrapping ErrInit and naming the module; the instance goes going
// then gone as after a failed Init (after a panicking Start, Exit runs in
// the teardown, Stop does not). A panic in Stop, or in Start run again
// after a refused Exit, is only recorded; a panicking Exit counts as an
// agreeing one. A panicking hook or symbol call returns an error naming the
// module. The host stays usable in every case: the name can be loaded
// again, and grace periods end.
//
// # Lifecycle calls from hooks
//
// A hook runs inside a read section of the host's grace-period domain, and
// a grace period waits for every read section that began before it, so a
// hook can never wait for a grace period of its own host. The rule:
//
//   - CallHooks hands each hook a context marked as being inside the
//     host's read section. A lifecycle call made with that context (or one
//     derived from it) that would have to wait for a grace period fails at
//     once with ErrInReadSection and changes nothing: Host.Unload,
//     Host.Replace, Host.Synchronize, Host.Shutdown, Host.Autoclean, and a
//     load (Host.Load, Host.Request, Kernel.Load, Kernel.Request,
//     Kernel.Import through demand loading) of a name that is going, and a
//     Kernel.Import (or a load's Info.Depends) of a module being replaced
//     (it would wait for the Replace, which waits for a grace period).
//   - Every other call works from a hook as anywhere else: loads of a
//     name that is free, live or coming (demand loads, Kernel.Import and
//     loads whose Init fails included), and the other methods of Instance
//     and Kernel. No teardown waits for a grace period in the caller's
//     goroutine: when an Init fails, Load returns its error once the name
//     is released, or at once when called with a hook's context (or when
//     its ctx ends); the teardown then finishes in the background and the
//     name stays reserved, going, until it has.
//   - The mark travels only in the context: a hook that makes a lifecycle
//     call with a context not derived from its own is not recognised, and
//     such a call that waits for a grace period (or for a teardown that
//     does) waits until that context ends, holding up the host's grace
//     periods meanwhile. Pass the hook's context on.
//
// # Errors
//
// Errors match the sentinels ErrNotFound, ErrExists, ErrBusy, ErrGone,
// ErrNotLive, ErrCycle, ErrInvalid, ErrPermission, ErrInit and
// ErrInReadSection with errors.Is, and name the module at fault
// (*ModuleError, *BusyError).
//
// See docs/design.md for why each choice was made.
package raceless
