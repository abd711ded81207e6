package raceless

import (
	"context"
	"runtime"

	"github.com/raceless/raceless/internal/ref"
)

// A Caller is one goroutine's way into Handles, for a goroutine that makes
// many calls (a request loop, a worker): Caller.Call is Handle.Call with
// the owner's reference taken and dropped by plain stores to the Caller's
// own word instead of two atomic operations on shared counters. After a
// call into wasm the second of those is the costly one (an atomic waits
// for the call's stores to drain, ~5 ns of a ~50 ns call); unload pays
// instead, while any Caller is registered: one membarrier per Kill and a
// scan of the host's Callers. See internal/ref's Holders for the protocol.
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
	hold    *ref.Holder
	cleanup runtime.Cleanup // unregisters hold if c is dropped unclosed
}

// NewCaller returns a new Caller of h's Handles.
func (h *Host) NewCaller() *Caller {
	c := &Caller{h: h, hold: h.holders.Register()}
	// An unreachable Caller holds nothing: a call keeps it reachable.
	c.cleanup = runtime.AddCleanup(c, (*ref.Holder).Close, c.hold)
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
func (c *Caller) Call(ctx context.Context, hd *Handle, args ...uint64) (res []uint64, err error) {
	reg := hd.reg.Load()
	if reg == nil || hd.h != c.h || c.hold == nil || c.hold.Holding() || !c.hold.TryGet(reg.refs) {
		// Not resolved, owner not live, another host's Handle, closed,
		// or nested: the shared path (which also re-resolves).
		return hd.Call(ctx, args...)
	}
	reg.owner.noteUse()
	defer c.hold.Put(reg.refs)
	defer reg.owner.catch("call", hd.name, nil, &err)
	res, err = hd.invoke(ctx, reg, args)
	// c stays reachable for the whole call, so its cleanup cannot run
	// (and find the Holder holding) meanwhile. (A deferred closure would
	// do the same, at ~2 ns a call.)
	runtime.KeepAlive(c)
	return res, err
}
