package raceless

import (
	"context"
	"runtime"

	"github.com/raceless/raceless/internal/primitives/ref"
)

// A Caller is one goroutine's way into Handles, for a goroutine that makes
// many calls (a request loop, a worker): Caller.Call is Handle.Call with
// the owner's reference taken and dropped by plain stores to the Caller's
// own word instead of two atomic operations on shared counters. After a
// call into wasm the second of those is the costly one (an atomic waits
// for the call's stores to drain, ~5 ns of a ~50 ns call); unload pays
// instead, while any Caller is registered: one membarrier per Kill and a
// scan of the host's Callers. See internal/primitives/ref's Words for the protocol.
//
// A Caller is not safe for concurrent use: use one per goroutine (hand one
// over only with a happens-before edge, as through a channel or a
// sync.Pool). A reference it holds during a call counts like any other:
// Refs shows it, and an unload without Force fails with ErrBusy. A Func
// that calls through the same Caller again (nesting) gets the shared path
// for the inner call. Close it when done: until then every unload scans
// it (a Caller dropped without Close is unregistered when the garbage
// collector finds it).
type Caller struct {
	h       *Host
	hold    *ref.Word
	cleanup runtime.Cleanup // unregisters hold if c is dropped unclosed
	// blk is the block the calls' stacks (the copies of their arguments,
	// where the results come back) are cut from, from off on; see stack.
	blk *[stackBlock]uint64
	off int
}

// stackBlock is the size, in values, of the blocks a Caller cuts its
// calls' stacks from; a call that needs more than stackMax gets its own.
const (
	stackBlock = 64
	stackMax   = 16
)

// NewCaller returns a new Caller of h's Handles.
func (h *Host) NewCaller() *Caller {
	c := &Caller{h: h, hold: h.words.Register(), blk: new([stackBlock]uint64)}
	// An unreachable Caller holds nothing: a call keeps it reachable.
	c.cleanup = runtime.AddCleanup(c, (*ref.Word).Close, c.hold)
	return c
}

// Close unregisters c. It must not be called during one of c's calls.
// Calls through a closed Caller take the shared path (an unregistered word
// would be invisible to unloads); closing again does nothing.
func (c *Caller) Close() {
	if c.hold == nil {
		return
	}
	c.cleanup.Stop()
	c.hold.Close()
	c.hold = nil
}

// Call calls hd's Func as hd.Call(ctx, args...) does (a panic in it is
// recovered the same way), with the owner's reference held in c. A Handle
// of another Host goes through hd.Call.
//
// The copy of args the Func gets (and, for a symbol exported with
// ExportStack, the results) is cut from a block of stackBlock values that
// c allocates when the last one is used up, never from memory handed out
// before: results stay the caller's, as from hd.Call, and a call of a
// wasm symbol makes no allocation of its own (a kept result keeps its
// block, 512 bytes, reachable).
func (c *Caller) Call(ctx context.Context, hd *Handle, args ...uint64) (res []uint64, err error) {
	reg := hd.reg.Load()
	if reg == nil || hd.h != c.h || c.hold == nil || c.hold.Holding() || !c.hold.TryGet(reg.refs) {
		// Not resolved, owner not live, another host's Handle, closed,
		// or nested: the shared path (which also re-resolves).
		return hd.Call(ctx, args...)
	}
	reg.owner.noteUse()
	// One deferred call drops the reference and, only if the Func did
	// not return (ok still false: it panicked), recovers: deferring
	// Instance.catch and Word.Put cost two deferred calls and a
	// runtime.gorecover on every call, a few ns of a call into wasm.
	ok := false
	defer c.done(reg, hd, &ok, &err)
	own := c.stack(max(len(args), reg.size))
	//lint:ignore S1001 copy calls runtime.memmove, which costs more than this loop for a few values (2% of a Caller's call into wasm in a profile)
	for i, a := range args {
		own[i] = a
	}
	switch {
	case reg.stack != nil:
		res, err = reg.stack(ctx, own)
	case reg.fn != nil:
		res, err = reg.fn(ctx, own...)
	default:
		err = hd.notFunc(reg)
	}
	ok = true
	// c stays reachable for the whole call, so its cleanup cannot run
	// (and find the Word holding) meanwhile.
	runtime.KeepAlive(c)
	return res, err
}

// done is Call's deferred end: it recovers a panic of the Func (when ok is
// false; recover works here because done is the deferred function itself)
// the way Instance.catch does, then drops the reference c holds.
func (c *Caller) done(reg *registration, hd *Handle, ok *bool, err *error) {
	if !*ok {
		if p := recover(); p != nil {
			reg.owner.caught("call", hd.name, nil, err, p)
		}
	}
	c.hold.Put(reg.refs)
}

// stack returns a slice of length and capacity n that no earlier call was
// given: cut from c's block (a new one when it is short), or, beyond
// stackMax, allocated on its own. Capacity n, not more: a callee that
// appends to its stack cannot reach the next call's.
func (c *Caller) stack(n int) []uint64 {
	if n > stackBlock-c.off {
		if n > stackMax {
			return make([]uint64, n)
		}
		c.blk, c.off = new([stackBlock]uint64), 0
	}
	s := c.blk[c.off : c.off+n : c.off+n]
	c.off += n
	return s
}
