// Package wasm makes WebAssembly files raceless modules: a Loader reads a
// .wasm file (Open), checks it and its modinfo block, and returns a
// raceless.Source; Host.Load then compiles it (through wazero's compilation
// cache), instantiates it and runs its init; Host.Unload runs its exit and
// frees it for real: the instance's linear memory, and with the last
// instance of that binary its compiled code.
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
//     in flight kills the instance first (its context is cancelled, which
//     wazero checks at function entries and loop back edges): those calls
//     fail with ErrGone too, and the guest's exit is not run.
//   - A trap, a Go guest's panic, a call past its deadline or memory past
//     its limit fails that call with an error naming the module (ErrTrap or
//     ErrLimit), taints the module, and aborts the instance: every later
//     call fails with ErrAborted, since the guest's state can no longer be
//     trusted. The host and the other modules go on; the aborted module's
//     exit always agrees, so it can be unloaded.
//   - An instance is never re-entered: a call chain A -> B -> A fails with
//     ErrReentrant instead of deadlocking. Imports are resolved only during
//     init and each creates a dependency, so calls between modules follow
//     the dependency order and cannot wait on each other in a cycle.
//   - Registrations (symbols, hooks, imports) are accepted only while the
//     guest's init runs, as the core stages them.
//   - Errors about a file are *FileError (op, path) wrapping a sentinel;
//     errors of calls are *raceless.ModuleError naming the module.
//
// # Why deadlines by watchdog?
//
// wazero interrupts running guest code only when RuntimeConfig's
// CloseOnContextDone is set, and then it starts a goroutine per call to
// watch the call's context. A context with a timeout per call would add a
// timer per call too. Instead every instance has one cancellable context
// for its whole life, and a watchdog goroutine per Loader, ticking at an
// eighth of the shortest deadline, cancels the context of an instance whose
// call is overdue (a call publishes its deadline in ticks with one atomic
// store). The price of interruptibility (~0.6 µs a call, wazero's
// goroutine) remains; Config.CallTimeout < 0 turns deadlines off and calls
// cost what a plain wazero call costs.
//
// # Why keep the compiled module while instances use it?
//
// Compiling a Go-built module takes ~1 s; even the on-disk cache costs tens
// of milliseconds. Instances of one binary share its CompiledModule, which
// is closed when the last of them is torn down, so "unload frees the code"
// holds and reloading hits the on-disk cache.
package wasm
