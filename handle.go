package raceless

import (
	"context"
	"fmt"
	"sync/atomic"
)

// A Handle names a registration and resolves it lazily: the name is looked
// up once, and each Acquire then costs one reference on the owner (a
// TryGet, no map lookup) for as long as that owner stays live. When it is
// not (unloaded, replaced by Host.Replace, being unloaded) the handle looks
// the name up again, so it follows a module across reloads and hot swaps.
//
// This is symbol_get once and try_module_get per use. Unlike a Binding
// held across calls, a Handle holds no reference between uses and never
// keeps its module loaded. It does remember the registration it last used:
// until it is used again after its owner is gone, it keeps that owner's Go
// objects reachable (for a wasm module, its closed instance).
//
// A Handle is safe for concurrent use. Acquire through a Handle is as
// linearizable as through Host.Acquire: a successful TryGet on the cached
// owner is one on a registration the name resolved to, whose owner is live.
type Handle struct {
	h    *Host
	kind Kind
	name string
	// reg is the registration last resolved (nil: none yet, or not found).
	reg atomic.Pointer[registration]
}

// Handle returns a handle on the registration kind/name. The name need not
// be registered yet: Acquire resolves it.
func (h *Host) Handle(kind Kind, name string) *Handle {
	return &Handle{h: h, kind: kind, name: name}
}

// Name returns the registration's name.
func (hd *Handle) Name() string { return hd.name }

// Acquire returns the registration's value with a reference on its owner,
// as Host.Acquire does; Release it.
func (hd *Handle) Acquire() (Binding, error) {
	reg, err := hd.get()
	if err != nil {
		return Binding{}, err
	}
	return Binding{value: reg.value, owner: reg.owner}, nil
}

// get returns the registration with a reference taken on its owner: on the
// cached one if its owner is live, else on what the name resolves to now.
func (hd *Handle) get() (*registration, error) {
	if reg := hd.reg.Load(); reg != nil && reg.owner.TryGet() {
		return reg, nil
	}
	return hd.resolve()
}

func (hd *Handle) resolve() (*registration, error) {
	reg, err := hd.h.acquire(hd.kind, hd.name)
	hd.reg.Store(reg) // nil when not found: forget a gone owner
	return reg, err
}

// Call calls the Func registered under the handle's name (a symbol), under
// a reference on its owner taken for the length of the call. It passes the
// Func a copy of args, which therefore stay the caller's (and, given
// literally, on the caller's stack); a symbol exported with ExportStack
// computes in that copy, so the call allocates once. A goroutine that
// makes many calls does better with a Caller (Caller.Call).
//
// A panic in the Func is recovered: the owner is tainted and the call
// returns an error naming it.
//
// It is the protected call's path, so get is written out here with the
// owner's reference taken on its Ref directly: each call saved is ~1 ns of
// a ~50 ns call into wasm (Instance.TryGet and Put do not inline).
func (hd *Handle) Call(ctx context.Context, args ...uint64) (res []uint64, err error) {
	reg := hd.reg.Load()
	if reg == nil || !reg.refs.TryGet() {
		if reg, err = hd.resolve(); err != nil {
			return nil, err
		}
	} else {
		reg.owner.noteUse()
	}
	// One deferred call (see Caller.Call): it recovers only when the
	// Func did not return, then drops the reference.
	ok := false
	defer hd.done(reg, &ok, &err)
	res, err = hd.invoke(ctx, reg, args)
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
	reg.owner.Put()
}

// invoke calls reg's Func (or StackFunc) with a copy of args, the caller
// holding a reference on its owner.
func (hd *Handle) invoke(ctx context.Context, reg *registration, args []uint64) ([]uint64, error) {
	own := append(make([]uint64, 0, max(len(args), reg.size)), args...)
	switch {
	case reg.stack != nil:
		return reg.stack(ctx, own)
	case reg.fn != nil:
		return reg.fn(ctx, own...)
	}
	return nil, hd.notFunc(reg)
}

// notFunc is Call's error for a registration that is not a Func (out of
// line: building it inline would enlarge Call's frame).
func (hd *Handle) notFunc(reg *registration) error {
	return modErr("call", hd.name, fmt.Errorf("%s is a %T, not a Func: %w", hd.kind, reg.value, ErrInvalid))
}
