package raceless

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TestCallerHoldsOwner: a call in flight through a Caller holds its owner's
// reference (counted, so an unload is refused, and an unload that waits
// wakes when the call returns: the Word's Put on a dead Ref), and a
// panicking Func is recovered (an error naming its module, which is
// tainted) and leaves no reference behind.
func TestCallerHoldsOwner(t *testing.T) {
	h := quietHost(t)
	g := newGate()
	var panics, parks atomic.Bool
	during := func() {
		if panics.Load() {
			panic("boom")
		}
		if parks.Load() {
			g.park()
		}
	}
	m := mustLoad(t, h, funcModule("one", 1, during))
	hd := h.Handle(KindSymbol, "f")
	c := h.NewCaller()
	defer c.Close()
	if r, err := c.Call(context.Background(), hd, 2, 3); err != nil || r[0] != 1 || r[1] != 5 {
		t.Fatalf("first call (resolves through the Handle): %v %v", r, err)
	}
	parks.Store(true)
	done := parkedCall(t, g, func() ([]uint64, error) { return c.Call(context.Background(), hd) })
	if n := m.Refs(); n != 1 {
		t.Fatalf("Refs during a call = %d, want 1", n)
	}
	if err := h.Unload(deadline(t), "one", UnloadOptions{}); !errors.Is(err, ErrBusy) {
		t.Fatalf("unload during a call: %v, want ErrBusy", err)
	}
	// An unload that waits: the call's Put comes after the Kill, on a dead
	// Ref, and must wake it.
	killed := make(chan struct{})
	h.hooks.afterKill = func(*Instance) { close(killed) }
	unloaded := make(chan error)
	go func() { unloaded <- h.Unload(deadline(t), "one", UnloadOptions{Wait: true}) }()
	waitFor(t, killed, "kill")
	h.hooks.afterKill = nil
	g.release()
	if err := waitFor(t, done, "call"); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(t, unloaded, "unload --wait"); err != nil {
		t.Fatal(err)
	}

	m = mustLoad(t, h, funcModule("one", 1, during))
	if _, err := c.Call(context.Background(), hd); err != nil { // re-resolves
		t.Fatal(err)
	}
	panics.Store(true) // this call goes through the Word
	if _, err := c.Call(context.Background(), hd); err == nil || !strings.Contains(err.Error(), "panic") || !strings.Contains(err.Error(), "one") {
		t.Errorf("call of a panicking Func: %v, want an error naming the panic and the module", err)
	}
	if len(m.Taints()) == 0 {
		t.Error("a panicking Func did not taint its module")
	}
	if c.hold.Holding() || m.Refs() != 0 {
		t.Fatalf("after a panic: holding %v, refs %d", c.hold.Holding(), m.Refs())
	}
	if err := h.Unload(deadline(t), "one", UnloadOptions{}); err != nil {
		t.Fatalf("unload after the calls: %v", err)
	}
}

// TestCallerNested: a Func that calls through the same Caller gets the
// shared path for the inner call; both owners are held meanwhile.
func TestCallerNested(t *testing.T) {
	h := quietHost(t)
	c := h.NewCaller()
	defer c.Close()
	inner := h.Handle(KindSymbol, "f")
	var refs [2]int64
	var outerInst, innerInst *Instance
	innerInst = mustLoad(t, h, funcModule("one", 1, func() {
		refs = [2]int64{outerInst.Refs(), innerInst.Refs()}
	}))
	outerInst = mustLoad(t, h, src("outer", &testModule{init: func(k *Kernel) error {
		return k.Export("g", Func(func(ctx context.Context, args ...uint64) ([]uint64, error) {
			return c.Call(ctx, inner, args...)
		}))
	}}))
	outer := h.Handle(KindSymbol, "g")
	for range 2 { // resolving, then resolved
		if r, err := c.Call(context.Background(), outer, 4); err != nil || r[0] != 1 || r[1] != 4 {
			t.Fatalf("nested call: %v %v", r, err)
		}
		if refs != [2]int64{1, 1} {
			t.Fatalf("refs during the inner call = %v, want [1 1]", refs)
		}
	}
	for _, name := range []string{"outer", "one"} {
		if err := h.Unload(deadline(t), name, UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCallerConcurrentReloads: goroutines with a Caller each call through
// one Handle while its owner is unloaded and loaded again: no call runs
// after Exit, and every call reaches a live owner or fails cleanly.
func TestCallerConcurrentReloads(t *testing.T) {
	h := quietHost(t)
	mod := exitChecked(t)
	mustLoad(t, h, mod())
	hd := h.Handle(KindSymbol, "f")
	var ok atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := h.NewCaller()
			defer c.Close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := c.Call(context.Background(), hd)
				countCall(t, &ok, err)
			}
		}()
	}
	for i := range 50 {
		waitCalls(t, &ok)
		// Alternate refusing unloads (they revive the Ref under the
		// Callers) and waiting ones.
		_ = h.Unload(deadline(t), "one", UnloadOptions{Wait: i%2 == 0})
		if _, loaded := h.Module("one"); !loaded {
			mustLoad(t, h, mod())
		}
	}
	waitCalls(t, &ok)
	close(stop)
	wg.Wait()
	if err := h.Unload(deadline(t), "one", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestCallerDroppedUnclosed: a Caller dropped without Close is unregistered
// once the garbage collector finds it, so unloads stop scanning it.
func TestCallerDroppedUnclosed(t *testing.T) {
	h := quietHost(t)
	mustLoad(t, h, funcModule("one", 1, nil))
	hd := h.Handle(KindSymbol, "f")
	func() {
		c := h.NewCaller()
		if _, err := c.Call(context.Background(), hd); err != nil {
			t.Fatal(err)
		}
	}()
	kept := h.NewCaller()
	defer kept.Close()
	ctx := deadline(t)
	for h.words.Len() != 1 {
		if ctx.Err() != nil {
			t.Fatalf("%d Callers registered, want 1 (the kept one)", h.words.Len())
		}
		runtime.GC()
		runtime.Gosched()
	}
	if err := h.Unload(deadline(t), "one", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestCallerClosed: a closed Caller, whose word unloads no longer scan,
// takes the shared path, so a call in flight still holds its owner.
func TestCallerClosed(t *testing.T) {
	h := quietHost(t)
	g := newGate()
	var parks atomic.Bool
	m := mustLoad(t, h, funcModule("one", 1, func() {
		if parks.Load() {
			g.park()
		}
	}))
	hd := h.Handle(KindSymbol, "f")
	if _, err := hd.Call(context.Background()); err != nil { // resolved
		t.Fatal(err)
	}
	c := h.NewCaller()
	c.Close()
	c.Close()
	parks.Store(true)
	done := parkedCall(t, g, func() ([]uint64, error) { return c.Call(context.Background(), hd) })
	if err := h.Unload(deadline(t), "one", UnloadOptions{}); !errors.Is(err, ErrBusy) || m.Refs() != 1 {
		t.Fatalf("unload during a closed Caller's call: %v (refs %d), want ErrBusy", err, m.Refs())
	}
	g.release()
	if err := waitFor(t, done, "call"); err != nil {
		t.Fatal(err)
	}
	if err := h.Unload(deadline(t), "one", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}
