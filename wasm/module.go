package wasm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"github.com/tetratelabs/wazero/experimental"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/callconv"
	"github.com/raceless/raceless/wasm/modsig"
)

// instance is one loaded wasm module: the raceless.Module the host drives.
//
// Calls into it are serialized by calls (a wazero instance, and a Go guest's
// runtime, are single-threaded). Its life: instantiated (Instantiate) ->
// initialized (Init) -> torn down (teardown: after Exit agreed, after a
// failed Init, when the host declares it gone, or when the Loader closes).
// After teardown no guest code runs again and every call fails with ErrGone.
type instance struct {
	l    *Loader
	src  *Source
	c    *compiled
	name string
	mod  api.Module

	// base is the instance's context for its whole life: kill cancels it
	// (with a cause) and raises the interrupt flag, which makes the guest
	// trap at its next loop back edge (see instrument). Guest calls get
	// root (or a frame below it, see chain): a context that is done when
	// base is, and that carries the call chain; wazero hands it to host
	// functions, which find the instance in it, and the calls they make
	// into the host inherit its cancellation. wazero itself does not
	// watch it (no CloseOnContextDone, so no goroutine per call).
	base   context.Context
	cancel context.CancelCauseFunc
	root   *frame
	// lastNested is the frame of the last call into this instance from
	// another's guest (see nested).
	lastNested atomic.Pointer[frame]
	// interrupt is the instance's interrupt flag (the global the loader
	// added, see instrument); interrupted makes kill set it once, so that
	// only one goroutine ever writes it. It is atomic because teardown
	// drops it (see below) while the watchdog's kill, which holds no lock
	// once it has claimed an overdue call, may be about to set it: a Set
	// after the drop writes to a closed module, which nothing reads.
	interrupt   atomic.Pointer[api.MutableGlobal]
	interrupted atomic.Bool

	// The wazero objects (interrupt above; mod, the lifecycle exports,
	// the symbols' functions in syms) are dropped by teardown, under the
	// call lock: a registration, a stale Handle or a Func a caller kept
	// may keep the instance reachable after its unload, and through any
	// of them the guest's linear memory. So every call reads its function
	// under the lock, after the gone check (callLocked).
	fnInit, fnExit, fnStart, fnStop, fnHook api.Function
	syms                                    []*api.Function // each symbol's function, by Export order
	// sigs are the types of the symbols, by name: written during init
	// (hostExport), read after (Signature: the host asks only once Init
	// has returned).
	sigs map[string]raceless.Signature

	// calls is the call lock: held while guest code runs, from the caller's
	// goroutine (host imports run on it too), with the deadline of the
	// call (taken with initTicks for the lifecycle, callTicks for symbols
	// and hooks). It guards the fields below. Lock order: calls, then
	// Loader.mu (the watchdog, holding Loader.mu, only claims it).
	calls     callLock
	k         *raceless.Kernel // set by Init before the guest's init runs
	initing   bool             // registrations accepted (the guest's init runs)
	imports   []raceless.Func  // by handle
	callStack []uint64         // the stack of the instance's calls of its imports (hostCall)
	errMsg    string           // set_error's message, taken by the next failure

	gone    atomic.Bool            // torn down or being torn down: calls fail with ErrGone
	aborted atomic.Pointer[string] // why the instance runs no more code
	tainted atomic.Bool            // the module was tainted for a fault
	memSize atomic.Int64           // linear memory size (kept by linearMemory)
	out     tailBuffer             // the guest's stdout+stderr, last few KiB

	// grants are what the instance was granted (Config.Granter), released
	// by closeLocked; set at creation, cleared under the call lock.
	grants *grants

	teardownOnce sync.Once
}

var (
	_ raceless.Module  = (*instance)(nil)
	_ raceless.Starter = (*instance)(nil)
	_ raceless.Stopper = (*instance)(nil)
	_ raceless.Sizer   = (*instance)(nil)
)

// frame is the context of a guest call: it records the instances on the
// call chain (A's guest called B's symbol...) and is done when its
// instance is killed. It is its own context type, not a context.WithValue
// over base, because wazero looks its keys up in the context on every
// call and host functions look up the frame: here each lookup is one type
// comparison instead of a walk up a chain of contexts.
type frame struct {
	in     *instance
	parent *frame
}

type frameKey struct{}

var _ context.Context = (*frame)(nil)

func (f *frame) Deadline() (time.Time, bool) { return time.Time{}, false }
func (f *frame) Done() <-chan struct{}       { return f.in.base.Done() }
func (f *frame) Err() error                  { return f.in.base.Err() }

// Value returns the frame for frameKey; a frame carries no other values.
func (f *frame) Value(key any) any {
	if _, ok := key.(frameKey); ok {
		return f
	}
	return nil
}

// AfterFunc lets a context derived from the frame be cancelled with the
// instance without a goroutine of its own (context.AfterFunc's contract
// for parents that are not the package's own types).
func (f *frame) AfterFunc(fn func()) (stop func() bool) { return context.AfterFunc(f.in.base, fn) }

func (l *Loader) instantiate(ctx context.Context, src *Source) (raceless.Module, error) {
	// Enforcement may have been turned on since src was opened.
	if err := l.trust(src.path, src.sig); err != nil {
		return nil, err
	}
	g, err := l.grant(src)
	if err != nil {
		return nil, err
	}
	c, err := l.acquireCompiled(ctx, src)
	if err != nil {
		g.release()
		return nil, err
	}
	in := &instance{l: l, src: src, c: c, name: src.info.Name, grants: g}
	base, cancel := context.WithCancelCause(context.Background())
	in.base, in.cancel, in.root = base, cancel, &frame{in: in}
	in.out.tee = l.cfg.Stderr

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		cancel(ErrClosed)
		l.releaseCompiled(c)
		g.release()
		return nil, fileErr("instantiate", src.path, ErrClosed)
	}
	l.seq++
	seq := l.seq
	l.mu.Unlock()

	// No start functions: the WASI reactor's _initialize runs below as a
	// call, under a deadline, once the interrupt flag is reachable. The
	// guest gets clocks, sleep and random numbers, and of the host's files
	// only what it was granted: no arguments, no environment (wazero
	// passes none unless told to).
	cfg := wazero.NewModuleConfig().
		WithName(fmt.Sprintf("%s#%d", in.name, seq)).
		WithStartFunctions().
		WithStdout(&in.out).WithStderr(&in.out).
		WithSysWalltime().WithSysNanotime().WithSysNanosleep().
		WithRandSource(rand.Reader)
	if g.fsConfig != nil {
		cfg = cfg.WithFSConfig(g.fsConfig)
	}
	limit := l.cfg.MemoryLimitPages
	if src.memLimit > 0 {
		limit = min(limit, src.memLimit)
	}
	ictx := experimental.WithMemoryAllocator(in.root, memoryAllocator(uint64(limit)*wasmPage, &in.memSize))
	mod, err := l.rt.InstantiateModule(ictx, c.cm, cfg)
	if err == nil {
		if g, ok := mod.ExportedGlobal(interruptExport).(api.MutableGlobal); ok {
			in.interrupt.Store(&g)
		} else {
			err = fmt.Errorf("no interrupt flag %q", interruptExport) // cannot happen: instrument adds it
		}
	}
	if err != nil {
		cancel(raceless.ErrGone)
		if mod != nil {
			_ = mod.Close(context.Background())
		}
		l.releaseCompiled(c)
		g.release()
		return nil, fileErr("instantiate", src.path, fmt.Errorf("%w: %v%s", ErrInstantiate, err, in.out.suffix()))
	}
	in.mod = mod
	in.fnInit = mod.ExportedFunction("raceless_init")
	in.fnExit = mod.ExportedFunction("raceless_exit")
	in.fnStart = mod.ExportedFunction("raceless_start")
	in.fnStop = mod.ExportedFunction("raceless_stop")
	in.fnHook = mod.ExportedFunction("raceless_hook")

	l.mu.Lock()
	closed := l.closed
	if !closed {
		l.live[in] = struct{}{}
	}
	l.mu.Unlock()
	if closed {
		in.teardown(true)
		return nil, fileErr("instantiate", src.path, ErrClosed)
	}
	if fn := mod.ExportedFunction("_initialize"); fn != nil {
		in.lock(l.initTicks)
		err := in.callLocked(in.root, "_initialize", &fn, nil)
		in.calls.unlock()
		if err != nil {
			in.teardown(false)
			return nil, fileErr("instantiate", src.path, fmt.Errorf("%w: %w", ErrInstantiate, err))
		}
	}
	return in, nil
}

// Init runs the guest's raceless_init with registrations open. A failure
// (a non-zero code, a trap) tears the instance down before returning: the
// host never calls Exit for a module whose Init failed.
func (in *instance) Init(k *raceless.Kernel) error {
	// As the kernel taints a module it could not verify (and itself)
	// before the module's init runs: TAINT_UNSIGNED_MODULE.
	if sig := in.src.sig; sig.Status != modsig.Trusted && (in.l.cfg.SigCheck || in.l.enforce.Load()) {
		k.Taint(raceless.TaintUnsignedModule, fmt.Sprintf("module verification failed: %v", sig.Err))
	}
	in.lock(in.l.initTicks)
	in.k = k
	in.initing = true
	res := make([]uint64, 1)
	err := in.callLocked(in.root, "init", &in.fnInit, res)
	in.initing = false
	var msg string
	if err == nil && int32(res[0]) != 0 {
		msg = in.takeErr()
	}
	in.calls.unlock()
	if err != nil {
		in.teardown(false)
		return err
	}
	if rc := int32(res[0]); rc != 0 {
		in.teardown(false)
		return &GuestError{Code: rc, Msg: msg}
	}
	// The host may declare the module gone without a successful Exit
	// (a forced unload whose Exit refused): free it then.
	gone := k.Instance().Gone()
	in.l.wg.Add(1)
	go func() {
		defer in.l.wg.Done()
		select {
		case <-gone:
			in.teardown(false)
		case <-in.l.done:
		}
	}()
	return nil
}

// Start runs the optional raceless_start export.
func (in *instance) Start() { in.lifecycle("start", &in.fnStart) }

// Stop runs the optional raceless_stop export. In a forced unload (calls
// in flight) it kills the instance instead; see Exit.
func (in *instance) Stop() {
	if !in.lockQuiescent() {
		return
	}
	defer in.calls.unlock()
	_ = in.callLocked(in.root, "stop", &in.fnStop, nil)
}

func (in *instance) lifecycle(what string, fn *api.Function) {
	in.lock(in.l.initTicks)
	defer in.calls.unlock()
	_ = in.callLocked(in.root, what, fn, nil) // a fault taints; nothing else to do
}

// lockQuiescent takes the call lock (with initTicks) for Stop or Exit. The
// host calls them only when no reference is left, so no call can be
// running, unless the unload is forced: then (references held, or a call
// holding the lock) the instance is killed and torn down at once, and
// lockQuiescent returns false without the lock.
func (in *instance) lockQuiescent() bool {
	if in.k != nil && in.k.Instance().Refs() > 0 || !in.calls.tryLock(&in.l.tick, in.l.initTicks) {
		in.teardown(true)
		return false
	}
	return true
}

// Exit runs the guest's raceless_exit: 0 agrees, a positive busy count or
// a negative code (with set_error's message) refuses. After it agrees the
// instance is torn down (its memory and, with its last instance, its
// compiled code freed).
//
// When references are still held (a forced unload), calls may be in
// flight: the instance is killed at once, those calls fail with ErrGone,
// and the guest's exit is not run (it cannot refuse a forced unload, and
// its state may be mid-call). An aborted instance (trap, limit) runs no
// exit either: it always agrees, so it can be unloaded.
func (in *instance) Exit() (int, error) {
	if !in.lockQuiescent() {
		return 0, nil
	}
	if in.gone.Load() || in.aborted.Load() != nil {
		in.calls.unlock()
		in.teardown(false)
		return 0, nil
	}
	res := make([]uint64, 1)
	err := in.callLocked(in.root, "exit", &in.fnExit, res)
	if err == nil {
		if rc := int32(res[0]); rc > 0 {
			in.takeErr()
			in.calls.unlock()
			return int(rc), nil
		} else if rc < 0 {
			msg := in.takeErr()
			in.calls.unlock()
			return 0, &GuestError{Code: rc, Msg: msg}
		}
	}
	in.calls.unlock()
	in.teardown(false)
	return 0, nil
}

// Size reports the module's binary size plus its linear memory.
func (in *instance) Size() int64 {
	if in.gone.Load() {
		return 0
	}
	return int64(len(in.src.bin)) + in.memSize.Load()
}

// teardown frees the instance, once: it marks it gone (queued and later
// calls fail with ErrGone), waits for the call lock, closes the wazero
// module and drops the compiled code.
//
// With kill (a forced unload, the Loader's Close), a running call is
// killed first (it fails with ErrGone), and teardown does not wait for it:
// a call blocked in a host import (a callee parked in another module, a
// WASI sleep) stops only when the import returns, and a forced unload
// must not wait for that. If the lock is held, a goroutine (counted by
// Loader.wg, which Close waits for) takes it when the call is over and
// closes the instance then; until then the instance is gone but not yet
// freed. The killed call runs no more guest code: it traps at its next
// loop back edge, or as soon as its import returns (instantiateHost).
func (in *instance) teardown(kill bool) {
	in.teardownOnce.Do(func() {
		in.gone.Store(true)
		if kill {
			in.kill(raceless.ErrGone)
			if !in.calls.tryLock(&in.l.tick, noDeadline) {
				in.l.wg.Add(1)
				go func() {
					defer in.l.wg.Done()
					in.lock(noDeadline)
					in.closeLocked()
				}()
				return
			}
		} else {
			in.lock(noDeadline)
		}
		in.closeLocked()
	})
}

// closeLocked is teardown's end, the call lock held: it closes the wazero
// module, drops every reference into it, releases the lock and the
// compiled code.
func (in *instance) closeLocked() {
	in.kill(raceless.ErrGone)
	_ = in.mod.Close(context.Background()) // closes the files the guest left open
	c, g := in.c, in.grants
	in.dropWazero()
	in.calls.unlock()
	in.l.mu.Lock()
	delete(in.l.live, in)
	in.l.mu.Unlock()
	in.l.releaseCompiled(c)
	// Without the call lock: releasing a grant may drop the last reference
	// of a VFS mount, and with it a filesystem module's reference.
	g.release()
}

// Signature reports the WebAssembly types of the parameters and results of
// an exported symbol (raceless.Signer): always declared, the exports of a
// wasm module being typed. Values cross the raceless.Func API as uint64:
// an i32 or f32 in the low 32 bits (zero-extended results; see the
// package doc), an i64 or f64 in all 64.
func (in *instance) Signature(symbol string) (raceless.Signature, bool) {
	s, ok := in.sigs[symbol]
	return s, ok
}

// dropWazero clears every reference the instance holds into wazero (see
// the fields), the call lock held and the module closed: what stays
// reachable through a stale registration is this struct, not the guest's
// memory.
func (in *instance) dropWazero() {
	in.mod = nil
	in.interrupt.Store(nil)
	in.fnInit, in.fnExit, in.fnStart, in.fnStop, in.fnHook = nil, nil, nil, nil, nil
	for _, p := range in.syms {
		*p = nil
	}
	in.syms, in.imports, in.c, in.grants = nil, nil, nil, nil
}

// lock takes the call lock with a deadline ticks from now.
func (in *instance) lock(ticks int64) { in.calls.lock(&in.l.tick, ticks) }

// symbol returns the raceless.Func of an exported function, as a
// callconv.Recovering (it never panics: wazero recovers a panic in the
// guest call, and the code around it has none; the host then calls it
// without a deferred recover): a call of fn
// under the call lock, with a deadline callTicks from when it gets the
// lock, computing in the stack it is given (api.Function.CallWithStack),
// which it grows (one allocation) only when its capacity is less than
// max(params, results). ctx identifies the call chain (for reentrancy)
// but does not cancel the call: cancelling a guest call kills its
// instance, so only deadlines and unloads do.
//
// This is every symbol call's path, so chain, lock, callLocked and unlock
// are written out flat in it, with their slow paths out of line: each
// function call saved is ~1 ns of a ~50 ns call.
func (in *instance) symbol(name string, fn api.Function) callconv.Recovering {
	def := fn.Definition()
	ptypes, rtypes := def.ParamTypes(), def.ResultTypes()
	nparams, nresults := len(ptypes), len(rtypes)
	size := max(nparams, nresults)
	what := "symbol " + name
	// The 32-bit values (see checkArg): the arguments to check, and the
	// results to zero-extend (wazero leaves in the upper half of a
	// result's slot what was there before, an argument's high bits).
	var narrowArgs []int
	for i, t := range ptypes {
		if t == api.ValueTypeI32 || t == api.ValueTypeF32 {
			narrowArgs = append(narrowArgs, i)
		}
	}
	var narrowRes []int
	for i, t := range rtypes {
		if t == api.ValueTypeI32 || t == api.ValueTypeF32 {
			narrowRes = append(narrowRes, i)
		}
	}
	// Called during init (hostExport), under the call lock, as teardown
	// is: in.syms needs no other lock.
	sym := &symbolCall{in: in, fn: fn, what: what, ptypes: ptypes,
		narrowArgs: narrowArgs, narrowRes: narrowRes,
		nparams: nparams, nresults: nresults, size: size}
	in.syms = append(in.syms, &sym.fn)
	return func(ctx context.Context, stack []uint64) ([]uint64, error) {
		s := sym // the one captured variable
		in := s.in
		if len(stack) != s.nparams {
			return nil, in.arityErr(s.what, len(stack), s.nparams)
		}
		if cap(stack) < s.size { // a caller that did not make the room
			stack = append(make([]uint64, 0, s.size), stack...)
		}
		stack = stack[:s.size]
		for _, i := range s.narrowArgs {
			if v := stack[i]; v>>32 != 0 {
				if err := in.checkArg(s.what, i, s.ptypes[i], v); err != nil {
					return nil, err
				}
				stack[i] = uint64(uint32(v))
			}
		}
		cctx := context.Context(in.root) // chain
		if f, _ := ctx.Value(frameKey{}).(*frame); f != nil {
			c, err := in.nested(f, s.what)
			if err != nil {
				return nil, err
			}
			cctx = c
		}
		l := in.l
		if !in.calls.tryFast(uint64(l.tick.Load() + l.callTicks)) { // lock
			in.calls.lockSlow(&l.tick, l.callTicks)
		}
		var err error // callLocked
		if in.gone.Load() || in.aborted.Load() != nil || in.out.written.Load() {
			err = in.beforeCall(s.what)
		}
		if err == nil { // not gone: s.fn is still the function
			if err = s.fn.CallWithStack(cctx, stack); err != nil {
				err = in.fault(s.what, err)
			} else if in.gone.Load() { // killed by a forced unload as it returned
				err = in.errf(s.what, raceless.ErrGone)
			}
		}
		if in.calls.release() { // unlock
			in.calls.wake()
		}
		if err != nil {
			return nil, err
		}
		for _, i := range s.narrowRes {
			stack[i] = uint64(uint32(stack[i]))
		}
		return stack[:s.nresults:s.nresults], nil
	}
}

// symbolCall is what an exported function's call (instance.symbol) needs.
// The call is a closure that captures only a pointer to it, so that it
// loads each field when it uses it (a closure loads every captured
// variable on entry, and spills them around the calls it makes), and is
// called directly (a method value goes through a wrapper: one call more).
type symbolCall struct {
	in *instance
	// fn is the function; teardown clears it (in.syms), under the call
	// lock, so it is read under the lock, after the gone check.
	fn                api.Function
	what              string
	ptypes            []api.ValueType
	narrowArgs        []int // the 32-bit arguments, to check
	narrowRes         []int // the 32-bit results, to zero-extend
	nparams, nresults int
	size              int
}

// checkArg checks v, an argument of type t (i32 or f32) whose upper 32
// bits are not zero: an i32 may be a negative int32 sign-extended to 64
// bits (the guest sees its low 32 bits); anything else is out of range.
// (Out of line, as arityErr.)
func (in *instance) checkArg(what string, i int, t api.ValueType, v uint64) error {
	if t == api.ValueTypeI32 && v>>31 == 1<<33-1 {
		return nil
	}
	return in.errf(what, fmt.Errorf("argument %d (%s) %#x out of range: %w", i, api.ValueTypeName(t), v, raceless.ErrInvalid))
}

// arityErr is a symbol's error for a call with n arguments instead of
// want (out of line: building it inline would enlarge the call's frame).
func (in *instance) arityErr(what string, n, want int) error {
	return in.errf(what, fmt.Errorf("%d arguments, want %d: %w", n, want, raceless.ErrInvalid))
}

// callRC calls fn, a function of one i32 argument returning an i32 code,
// under the call lock with a deadline ticks from when it gets the lock,
// on ctx's call chain (see symbol). A non-zero code is returned as a
// *GuestError with the message the guest set in that call.
func (in *instance) callRC(ctx context.Context, what string, fn *api.Function, ticks int64, arg uint64) error {
	cctx, err := in.chain(ctx, what)
	if err != nil {
		return err
	}
	stack := []uint64{arg}
	in.lock(ticks)
	defer in.calls.unlock()
	if err := in.callLocked(cctx, what, fn, stack); err != nil {
		return err
	}
	if rc := api.DecodeI32(stack[0]); rc != 0 {
		return in.errf(what, &GuestError{Code: rc, Msg: in.takeErr()})
	}
	return nil
}

// chain returns the context for a guest call made on ctx's call chain, or
// ErrReentrant if in is already on it. A call from the host (no frame in
// ctx) gets root; a call from a guest, a frame below the caller's (nested).
// symbol has the same steps written out.
func (in *instance) chain(ctx context.Context, what string) (context.Context, error) {
	if f, _ := ctx.Value(frameKey{}).(*frame); f != nil {
		return in.nested(f, what)
	}
	return in.root, nil
}

func (in *instance) nested(f *frame, what string) (context.Context, error) {
	for g := f; g != nil; g = g.parent {
		if g.in == in {
			return nil, in.errf(what, ErrReentrant)
		}
	}
	// Frames are immutable, and a caller's frame is usually its root, the
	// same on every call: keep the last one made, so that a guest calling
	// an import in a loop allocates nothing. (It may keep a gone caller's
	// instance reachable, which teardown has emptied.)
	if c := in.lastNested.Load(); c != nil && c.parent == f {
		return c, nil
	}
	c := &frame{in: in, parent: f}
	in.lastNested.Store(c)
	return c, nil
}

// callLocked runs *fn in the guest, the call lock held, on the call chain
// of cctx (see chain); a nil *fn (an optional export the module lacks) is
// a call that does nothing. stack holds the arguments on entry and the
// results on return (api.Function.CallWithStack: its length is at least
// the larger of the two counts; nil when both are 0). *fn is read here,
// after the gone check: teardown clears it under the lock.
func (in *instance) callLocked(cctx context.Context, what string, fn *api.Function, stack []uint64) error {
	if in.gone.Load() || in.aborted.Load() != nil || in.out.written.Load() {
		if err := in.beforeCall(what); err != nil {
			return err
		}
	}
	f := *fn
	if f == nil {
		return nil
	}
	if err := f.CallWithStack(cctx, stack); err != nil {
		return in.fault(what, err)
	}
	return nil
}

// beforeCall is callLocked's check of an instance that is gone or
// aborted, or that wrote output in an earlier call.
func (in *instance) beforeCall(what string) error {
	if in.gone.Load() {
		return in.errf(what, raceless.ErrGone)
	}
	if r := in.aborted.Load(); r != nil {
		return in.errf(what, fmt.Errorf("%w: %s", ErrAborted, *r))
	}
	in.out.reset() // keep the output of this call's failure only
	return nil
}

// checkDeadline is called by the watchdog (holding Loader.mu): it kills
// the instance if its running call is past its deadline.
func (in *instance) checkDeadline(now int64) {
	if in.calls.claim(now) {
		in.abort("call deadline exceeded")
		in.kill(ErrLimit)
	}
}

// kill stops the instance's guest code for good, from any goroutine: it
// cancels the instance's context with cause (host calls made by the guest
// see it) and raises the interrupt flag, so that a running call traps at
// its next loop back edge and fails (fault maps it to the cause: ErrLimit
// for a deadline, ErrGone for a teardown). No guest code may run after it.
func (in *instance) kill(cause error) {
	in.cancel(cause)
	if g := in.interrupt.Load(); g != nil && in.interrupted.CompareAndSwap(false, true) {
		// A plain store into wazero's globals, read by the guest's
		// native code: the one Go write, ordered by the CAS above.
		(*g).Set(1)
	}
}

// abort records why the instance runs no more code (the first reason wins).
func (in *instance) abort(reason string) bool {
	return in.aborted.CompareAndSwap(nil, &reason)
}

// fault classifies the error of a guest call, aborts the instance and
// taints the module. Called with the lock held.
func (in *instance) fault(what string, err error) error {
	if in.gone.Load() {
		return in.errf(what, raceless.ErrGone)
	}
	kind, reason := ErrTrap, ""
	var exit *sys.ExitError
	switch {
	case context.Cause(in.base) == ErrLimit, errors.Is(err, errKilled): // the watchdog's kill cancels before it interrupts; it aborts before it cancels
		kind, reason = ErrLimit, "call deadline exceeded"
	case strings.Contains(in.out.headline(), "out of memory"):
		kind, reason = ErrLimit, "memory limit exceeded"
	case errors.As(err, &exit):
		reason = fmt.Sprintf("guest exited with code %d", exit.ExitCode())
	default:
		reason, _, _ = strings.Cut(err.Error(), "\n") // without wazero's stack trace
	}
	if tail := in.out.lastLines(3); tail != "" {
		reason += ": " + tail
	}
	in.abort(reason)
	if in.k != nil && !in.tainted.Swap(true) {
		in.k.Taint(raceless.TaintDied, fmt.Sprintf("%s: %v: %s", what, kind, reason))
	}
	in.kill(kind)
	return in.errf(what, fmt.Errorf("%w: %s", kind, reason))
}

func (in *instance) errf(what string, err error) error {
	return &raceless.ModuleError{Op: "call", Module: in.name, Err: fmt.Errorf("%s: %w", what, err)}
}

// takeErr returns and clears the guest's set_error message. Lock held.
func (in *instance) takeErr() string {
	m := in.errMsg
	in.errMsg = ""
	return m
}

func (in *instance) logger() *slog.Logger {
	if in.k != nil {
		return in.k.Logger()
	}
	return slog.Default().With("module", in.name)
}

// tailBuffer keeps the first and the last few KiB written to it since the
// last reset (a guest's output, for error messages: a Go guest's fatal
// error comes first, then a long goroutine dump), and copies all to tee.
type tailBuffer struct {
	written atomic.Bool // anything written since the last reset
	mu      sync.Mutex
	head    []byte
	tail    []byte
	tee     io.Writer
}

const tailSize = 4 << 10

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.written.Store(true)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tee != nil {
		_, _ = b.tee.Write(p)
	}
	if n := min(tailSize-len(b.head), len(p)); n > 0 {
		b.head = append(b.head, p[:n]...)
	}
	b.tail = append(b.tail, p...)
	if len(b.tail) > tailSize {
		b.tail = append(b.tail[:0], b.tail[len(b.tail)-tailSize:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) reset() {
	b.mu.Lock()
	b.head, b.tail = b.head[:0], b.tail[:0]
	b.written.Store(false)
	b.mu.Unlock()
}

func (b *tailBuffer) headline() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.head)
}

// lastLines summarizes the guest's output: the line of a Go panic or
// fatal error if there is one, else up to n last non-empty lines, joined
// by " | ".
func (b *tailBuffer) lastLines(n int) string {
	b.mu.Lock()
	head, tail := string(b.head), string(b.tail)
	b.mu.Unlock()
	for _, l := range strings.Split(head, "\n") {
		if strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") {
			return strings.TrimSpace(l)
		}
	}
	lines := strings.Split(tail, "\n")
	var keep []string
	for i := len(lines) - 1; i >= 0 && len(keep) < n; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			keep = append([]string{l}, keep...)
		}
	}
	return strings.Join(keep, " | ")
}

func (b *tailBuffer) suffix() string {
	if t := b.lastLines(3); t != "" {
		return ": " + t
	}
	return ""
}
