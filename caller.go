package raceless

import (
	"context"
	"runtime"

	"github.com/raceless/raceless/internal/primitives/grace"
	"github.com/raceless/raceless/internal/primitives/ref"
)

// A Caller is one goroutine's way in, for a goroutine that makes many
// calls (a request loop, a worker): the per-goroutine fast path of both
// interfaces. Caller.Call is Handle.Call with the owner's reference taken
// and dropped by plain stores to the Caller's own word instead of two
// atomic operations on a slot of the owner's counter. After a call into wasm the second
// of those is the costly one (an atomic waits for the call's stores to
// drain, ~5 ns of a ~50 ns call); unload pays instead, while any Caller is
// registered: one membarrier per Kill and a scan of the host's Callers.
// See internal/primitives/ref's Words for the protocol. Caller.CallHooks
// is Host.CallHooks with the read section entered by a store to the
// Caller's own grace-period slot (registered at its first use).
//
// A Caller is not safe for concurrent use: use one per goroutine (hand one
// over only with a happens-before edge, as through a channel or a
// sync.Pool). A reference it holds during a call counts like any other:
// Instance.Refs shows it, and an unload without Force fails with ErrBusy.
// A Func or a hook that calls through the same Caller again (nesting) gets
// the shared path for the inner call. Close it when done: until then every
// unload scans it (a Caller dropped without Close is unregistered when the
// garbage collector finds it).
type Caller struct {
	h       *Host
	hold    *ref.Word       // regs.hold, one load nearer for Call; nil once closed
	regs    *callerRegs     // nil once closed
	cleanup runtime.Cleanup // unregisters regs if c is dropped unclosed
	inHooks bool            // in CallHooks: regs.reader is in a read section
}

// callerRegs is what a Caller registers with its host, apart from the
// Caller so that its cleanup can unregister them.
type callerRegs struct {
	hold   *ref.Word
	reader *grace.Reader // registered at the first CallHooks
}

func (r *callerRegs) close() {
	r.hold.Close()
	if r.reader != nil {
		r.reader.Close()
	}
}

// NewCaller returns a new Caller of h's Handles and hooks.
func (h *Host) NewCaller() *Caller {
	hold := h.words.Register()
	c := &Caller{h: h, hold: hold, regs: &callerRegs{hold: hold}}
	// An unreachable Caller holds nothing: a call keeps it reachable.
	c.cleanup = runtime.AddCleanup(c, (*callerRegs).close, c.regs)
	return c
}

// Close unregisters c. It must not be called during one of c's calls.
// Calls through a closed Caller take the shared paths (an unregistered
// word would be invisible to unloads); closing again does nothing.
func (c *Caller) Close() {
	if c.regs == nil {
		return
	}
	c.cleanup.Stop()
	c.regs.close()
	c.hold, c.regs = nil, nil
}

// Call calls hd's Func as hd.Call(ctx, stack) does, in the same calling
// convention (the Func computes in stack: a Caller that reuses one stack
// with room for the results calls without allocating) and with a panic
// recovered the same way, but with the owner's reference held in c. A
// Handle of another Host goes through hd.Call.
func (c *Caller) Call(ctx context.Context, hd *Handle, stack []uint64) (res []uint64, err error) {
	reg := hd.reg.Load()
	w := c.hold
	if reg == nil || hd.h != c.h || w == nil || w.Holding() || !w.TryGet(reg.refs) {
		// Not resolved, owner not live, another host's Handle, closed,
		// or nested: the shared path (which also re-resolves).
		return hd.Call(ctx, stack)
	}
	reg.noteUse()
	if reg.recovering {
		// A wasm symbol (callconv.Recovering): it never panics, so
		// the reference is dropped without a deferred call.
		res, err = reg.fn(ctx, stack)
		w.Put(reg.refs)
		// c stays reachable for the whole call, so its cleanup cannot
		// run (and find the Word holding) meanwhile.
		runtime.KeepAlive(c)
		return res, err
	}
	return c.callRecovering(ctx, hd, reg, w, stack)
}

// callRecovering is Call for a Func that may panic. One deferred closure,
// called directly at return, drops the reference and, only if the Func
// did not return (ok still false: it panicked), recovers (recover works
// there: the closure is the deferred function itself). Deferring
// Instance.catch and Word.Put would cost two deferred calls and a
// runtime.gorecover on every call, a deferred method call one call more
// (its wrapper).
func (c *Caller) callRecovering(ctx context.Context, hd *Handle, reg *registration, w *ref.Word, stack []uint64) (res []uint64, err error) {
	ok := false
	defer func() {
		if !ok {
			if p := recover(); p != nil {
				reg.owner.caught("call", hd.name, nil, &err, p)
			}
		}
		w.Put(reg.refs)
	}()
	if reg.fn == nil {
		ok = true
		return nil, hd.notFunc(reg)
	}
	res, err = reg.fn(ctx, stack)
	ok = true
	runtime.KeepAlive(c)
	return res, err
}

// CallHooks is Host.CallHooks through c: the read section is entered and
// left by stores to c's own slot instead of atomic operations on the
// domain's shared counters. Hooks get the same context marking and the
// same error and panic handling. Called from a hook running under c, or
// through a closed Caller, it takes the shared path.
func (c *Caller) CallHooks(ctx context.Context, event string, arg any) error {
	r := c.regs
	if r == nil || c.inHooks {
		return c.h.CallHooks(ctx, event, arg)
	}
	if r.reader == nil {
		r.reader = c.h.grace.Register()
	}
	r.reader.Lock()
	c.inHooks = true
	defer func() {
		c.inHooks = false
		r.reader.Unlock()
	}()
	var buf [8]*registration
	return c.h.callHooks(ctx, c.h.reg.hookList(event, buf[:0]), event, arg)
}
