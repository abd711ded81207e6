// Package wasm makes WebAssembly files raceless modules: a Loader reads a
// .wasm file (Open), checks its signature, its structure and its modinfo
// block, and returns a raceless.Source; Host.Load then compiles it (through wazero's compilation
// cache), instantiates it and runs its init; Host.Unload runs its exit and
// frees it for real: the instance's linear memory, and with the last
// instance of that binary its compiled code. A Handle, Binding or Func
// that outlives the unload pins none of it: teardown drops every
// reference the instance holds into wazero (TestStaleHandleFreesInstance).
//
// The module ABI (exports raceless_init/exit/start/stop/hook, the host
// import module "raceless", the modinfo custom section) is documented in
// docs/module-authors.md; package sdk implements the guest side for Go.
//
// # Invariants
//
//   - Calls into one instance are serialized: one call lock per instance,
//     held while guest code runs (a wazero instance, and a Go guest's
//     runtime, are single-threaded). Callers queue on it; the wait is
//     bounded by the running call's deadline. No pool of instances: a
//     module's state (its globals) is one, and a pool would make "the
//     module" several; a module wanting parallelism can be loaded under
//     several names.
//   - No guest code runs after teardown. Teardown marks the instance gone
//     (queued and later calls fail with raceless.ErrGone), then takes the
//     call lock, then closes the wazero module. A forced unload with calls
//     in flight kills the instance first (its interrupt flag is raised,
//     which the guest checks at every loop back edge, and its context is
//     cancelled, which the callee of a "call" import sees): those calls
//     fail with ErrGone too, and the guest's exit is not run. A killed
//     call blocked in a host import traps as the import returns, and a
//     forced unload does not wait for it: the instance is closed by a
//     goroutine that takes the call lock when that call is over
//     (TestForcedUnloadInImport).
//   - Values cross the host as raceless.Func's uint64: a result is exactly
//     what the guest returned, an i32 or f32 zero-extended (wazero leaves
//     the upper half of a result's stack slot as it was: it is masked). An
//     i32 argument must be a uint32 or a sign-extended int32 and reaches
//     the guest as its low 32 bits; an f32 argument must fit in 32 bits.
//     Anything else is raceless.ErrInvalid, naming the argument. Symbols
//     are functions of i32, i64, f32 and f64 only, their types declared to
//     the host (raceless.Signer: Binding.Signature, Host.Replace).
//   - A memory.grow past the instance's limit returns -1 to the guest and
//     the call goes on; a Go guest then dies "out of memory" (ErrLimit),
//     a C guest sees malloc fail.
//   - A trap, a Go guest's panic or death out of memory, or a call past
//     its deadline fails that call with an error naming the module (ErrTrap
//     or ErrLimit), taints the module, and aborts the instance: every later
//     call fails with ErrAborted, since the guest's state can no longer be
//     trusted. The host and the other modules go on; the aborted module's
//     exit always agrees, so it can be unloaded.
//   - An instance is never re-entered: a call chain A -> B -> A fails with
//     ErrReentrant instead of deadlocking. Imports are resolved only during
//     init and each creates a dependency, so calls between modules follow
//     the dependency order and cannot wait on each other in a cycle.
//   - Registrations (symbols, hooks, imports) are accepted only while the
//     guest's init runs, as the core stages them.
//   - A module's signature is checked before anything else of its file is
//     read (package modsig), against Config.Keyring. One that does not
//     verify is refused (ErrKeyRejected), always; an unsigned module, or
//     one signed by a key not in the keyring, is refused once signatures
//     are enforced (Config.SigEnforce, Loader.EnforceSignatures: never
//     switched off), and otherwise loads tainted with
//     raceless.TaintUnsignedModule when Config.SigCheck is set. Enforcement
//     is checked again as a Source is instantiated, so a Source opened
//     before it was switched on is refused too. A refused module compiles
//     nothing and leaves nothing behind. What is verified is what runs: a
//     Source holds its file's bytes, read once.
//   - A guest gets from WASI its clocks, sleep, random numbers and stdout
//     and stderr (into the host's log), and nothing else it was not
//     granted: no arguments, no environment, no preopened directory. The
//     capabilities its modinfo block declares are granted by
//     Config.Granter, or the load fails (ErrCapability, naming the
//     capability); a grant it did not declare is not given. A granted file
//     system is the guest's read-only root ("/"): its files are offered
//     with their reading methods only. A grant is released once, when the
//     instance is closed (after wazero closed the files the guest left
//     open) or when the load fails.
//   - Errors about a file are *FileError (op, path) wrapping a sentinel;
//     errors of calls are *raceless.ModuleError naming the module.
//
// # Why deadlines by watchdog, and an interrupt flag?
//
// wazero interrupts running guest code only when RuntimeConfig's
// CloseOnContextDone is set: its compiled code then leaves native code at
// every loop back edge to check whether the module was closed, and every
// call starts a goroutine to watch the call's context, whatever the
// context (~0.3-1 µs a call on a 2-core machine, 5-15 times the call).
// The loader does not set it. Instead it rewrites each module as it
// compiles it (instrument): a new exported global, the interrupt flag, is
// tested at the top of every loop (a load and a branch; it traps when
// set). Every instance has one cancellable context for its whole life,
// passed to its calls (host functions see it; wazero ignores it), and a
// watchdog goroutine per Loader, ticking at an eighth of the shortest
// deadline, kills an instance whose call is overdue (a call publishes its
// deadline in ticks with one atomic store): it cancels the context and
// sets the flag, from its own goroutine, and the call fails with ErrLimit
// at its next loop back edge. A forced unload kills the same way, and the
// calls fail with raceless.ErrGone. The call lock and the deadline are one
// word (callLock): a call publishes its deadline by taking the lock (one
// compare-and-swap) and retracts it by releasing it (one store), and the
// watchdog claims the word only while it still holds an expired deadline,
// so it never kills a later call. A protected call thus costs a plain
// wazero call (api.Function.CallWithStack, in the caller's own stack, as
// raceless.Func's convention has it: no allocation when the stack has
// room for the results) plus the owner's reference (two atomic adds, or
// two plain stores through a raceless.Caller) and those two operations.
// A caller's context does not cancel a call (it only identifies the call
// chain): cancelling a guest call kills its instance, so only deadlines
// and unloads do.
// Config.CallTimeout < 0 turns deadlines off; forced unloads still
// interrupt.
//
// Leaving native code at loop back edges matters for a second reason:
// native code cannot be preempted by Go, so a spinning guest would hold
// off a garbage collection's stop-the-world, which stops the watchdog as
// well: the host would hang. The instrumented loops therefore also run
// "memory.grow 0" every 65536 iterations, which wazero executes in Go (a
// preemption point) and which changes nothing (TestCallDeadlineDuringGC).
//
// Closing the wazero module from another goroutine (api.Module.Close)
// instead would not stop a guest without CloseOnContextDone (there is no
// check compiled in), and with it would free the module's resources under
// the running call.
//
// # Why keep the compiled module while instances use it?
//
// Compiling a Go-built module takes ~1 s; even the on-disk cache costs tens
// of milliseconds. Instances of one binary share its CompiledModule, which
// is closed when the last of them is torn down, so "unload frees the code"
// holds and reloading hits the on-disk cache. A compilation runs without
// the Loader's lock (the watchdog ticks and other modules load and unload
// meanwhile); loads of a binary being compiled wait for it (single
// flight). With a CacheDir the instrumented binary is cached there too, so
// that a warm load skips the rewrite of the code section as well.
//
// Linear memory is allocated by the loader (an experimental.MemoryAllocator
// per instance): it enforces the per-module limit and reports the size as
// it changes (Size, for lsmod), so the call path reads no size.
package wasm
