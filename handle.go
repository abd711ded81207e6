package raceless

import (
	"context"
	"fmt"
	"sync/atomic"
)

// A Handle names a symbol and resolves it lazily: the name is looked up
// once, and each Call then costs one reference on the owner (a counter
// increment, no map lookup) for as long as that owner stays live. When it is
// not (unloaded, replaced by Host.Replace, being unloaded) the handle looks
// the name up again, so it follows a module across reloads and hot swaps.
//
// This is symbol_get once and try_module_get per call. Unlike a Binding
// held across calls, a Handle holds no reference between uses and never
// keeps its module loaded. It does remember the registration it last used:
// until it is used again after its owner is gone, it keeps that owner's Go
// objects reachable (for a wasm module, its closed instance).
//
// A Handle is safe for concurrent use. A call through a Handle is as
// linearizable as a Host.Acquire: a successful reference on the cached
// owner is one on a registration the name resolved to, whose owner is live.
type Handle struct {
	h    *Host
	name string
	// reg is the registration last resolved (nil: none yet, or not found).
	reg atomic.Pointer[registration]
}

// Handle returns a handle on the symbol name. The name need not be
// exported yet: each call resolves it until it is.
func (h *Host) Handle(name string) *Handle {
	return &Handle{h: h, name: name}
}

// Name returns the symbol's name.
func (hd *Handle) Name() string { return hd.name }

func (hd *Handle) resolve() (*registration, error) {
	reg, err := hd.h.acquire(KindSymbol, hd.name)
	hd.reg.Store(reg) // nil when not found: forget a gone owner
	return reg, err
}

// Call calls the Func registered under the handle's name in the calling
// convention of Func (stack holds the arguments, and the Func may
// overwrite it and return its results in it), under a reference on its
// owner taken for the length of the call: two atomic operations on a slot
// of the owner's counter. A goroutine that makes many calls does better
// with a Caller (Caller.Call), which takes the reference with plain
// stores. Safe for concurrent use, each goroutine with its own stack.
//
// A panic in the Func is recovered: the owner is tainted and the call
// returns an error naming it.
//
// (It is the protected call's path, so the reference is taken on the
// owner's Ref directly: a call saved is ~1 ns of a ~50 ns call into wasm.)
func (hd *Handle) Call(ctx context.Context, stack []uint64) (res []uint64, err error) {
	reg := hd.reg.Load()
	if reg == nil || !reg.refs.TryGet() {
		if reg, err = hd.resolve(); err != nil {
			return nil, err
		}
	} else {
		reg.noteUse()
	}
	if reg.recovering { // never panics: see Caller.Call
		res, err = reg.fn(ctx, stack)
		reg.owner.put()
		return res, err
	}
	return hd.callRecovering(ctx, reg, stack)
}

// callRecovering is Call for a Func that may panic, as
// Caller.callRecovering: one deferred call recovers only when the Func
// did not return, then drops the reference.
func (hd *Handle) callRecovering(ctx context.Context, reg *registration, stack []uint64) (res []uint64, err error) {
	ok := false
	defer hd.done(reg, &ok, &err)
	if reg.fn == nil {
		return nil, hd.notFunc(reg)
	}
	res, err = reg.fn(ctx, stack)
	ok = true
	return res, err
}

// done is Call's deferred end: it recovers a panic of the Func (ok false)
// as Instance.catch does, then drops the owner's reference.
func (hd *Handle) done(reg *registration, ok *bool, err *error) {
	if !*ok {
		if p := recover(); p != nil {
			reg.owner.caught("call", hd.name, nil, err, p)
		}
	}
	reg.owner.put()
}

// notFunc is Call's error for a registration that is not a Func (out of
// line: building it inline would enlarge Call's frame).
func (hd *Handle) notFunc(reg *registration) error {
	return modErr("call", hd.name, fmt.Errorf("%s is a %T, not a Func: %w", KindSymbol, reg.value, ErrInvalid))
}
