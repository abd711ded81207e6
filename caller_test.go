package raceless

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
	hd := h.Handle("f")
	c := h.NewCaller()
	defer c.Close()
	if r, err := c.Call(context.Background(), hd, []uint64{2, 3}); err != nil || r[0] != 1 || r[1] != 5 {
		t.Fatalf("first call (resolves through the Handle): %v %v", r, err)
	}
	parks.Store(true)
	done := parkedCall(t, g, func() ([]uint64, error) { return c.Call(context.Background(), hd, nil) })
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
	if _, err := c.Call(context.Background(), hd, nil); err != nil { // re-resolves
		t.Fatal(err)
	}
	panics.Store(true) // this call goes through the Word
	if _, err := c.Call(context.Background(), hd, nil); err == nil || !strings.Contains(err.Error(), "panic") || !strings.Contains(err.Error(), "one") {
		t.Errorf("call of a panicking Func: %v, want an error naming the panic and the module", err)
	}
	if len(m.Taints()) == 0 {
		t.Error("a panicking Func did not taint its module")
	}
	if c.regs.hold.Holding() || m.Refs() != 0 {
		t.Fatalf("after a panic: holding %v, refs %d", c.regs.hold.Holding(), m.Refs())
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
	inner := h.Handle("f")
	var refs [2]int64
	var outerInst, innerInst *Instance
	innerInst = mustLoad(t, h, funcModule("one", 1, func() {
		refs = [2]int64{outerInst.Refs(), innerInst.Refs()}
	}))
	outerInst = mustLoad(t, h, src("outer", &testModule{init: func(k *Kernel) error {
		return k.Export("g", Func(func(ctx context.Context, args []uint64) ([]uint64, error) {
			return c.Call(ctx, inner, args)
		}))
	}}))
	outer := h.Handle("g")
	for range 2 { // resolving, then resolved
		if r, err := c.Call(context.Background(), outer, []uint64{4}); err != nil || r[0] != 1 || r[1] != 4 {
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
	hd := h.Handle("f")
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
				_, err := c.Call(context.Background(), hd, nil)
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
	hd := h.Handle("f")
	func() {
		c := h.NewCaller()
		if _, err := c.Call(context.Background(), hd, nil); err != nil {
			t.Fatal(err)
		}
		// Its grace-period reader registered too: the cleanup closes both.
		if err := c.CallHooks(context.Background(), "ev", nil); err != nil || c.regs.reader == nil {
			t.Fatalf("CallHooks: %v (reader %p)", err, c.regs.reader)
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
	// No reader left in a section: grace periods end.
	if err := h.Synchronize(deadline(t)); err != nil {
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
	hd := h.Handle("f")
	if _, err := hd.Call(context.Background(), nil); err != nil { // resolved
		t.Fatal(err)
	}
	c := h.NewCaller()
	c.Close()
	c.Close()
	parks.Store(true)
	done := parkedCall(t, g, func() ([]uint64, error) { return c.Call(context.Background(), hd, nil) })
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

// TestCallerCallInStackAllocatesNothing: a Caller's call computes in the
// caller's stack: with room for the results, they come back in it (the
// Func overwrote the arguments), and a caller that reuses one stack calls
// without allocating, through the Caller's own word (no reference left
// behind). A Handle's call, the shared path, computes in the stack too.
func TestCallerCallInStackAllocatesNothing(t *testing.T) {
	h := quietHost(t)
	m := mustLoad(t, h, src("adder", &testModule{init: func(k *Kernel) error {
		return k.Export("add", Func(func(_ context.Context, stack []uint64) ([]uint64, error) {
			return append(stack[:0], stack[0]+stack[1]), nil
		}))
	}}))
	hd := h.Handle("add")
	c := h.NewCaller()
	defer c.Close()
	ctx := context.Background()
	stack := make([]uint64, 2)
	for _, via := range []struct {
		name string
		call func() ([]uint64, error)
	}{
		{"Caller.Call", func() ([]uint64, error) { return c.Call(ctx, hd, stack) }},
		{"Handle.Call", func() ([]uint64, error) { return hd.Call(ctx, stack) }},
	} {
		var n uint64
		var bad string
		allocs := testing.AllocsPerRun(100, func() {
			n++
			stack[0], stack[1] = n, 2*n
			r, err := via.call()
			switch {
			case err != nil || len(r) != 1 || r[0] != 3*n:
				bad = fmt.Sprintf("call %d: %v %v, want [%d]", n, r, err, 3*n)
			case &r[0] != &stack[0]:
				bad = fmt.Sprintf("call %d: the result is not in the caller's stack", n)
			}
		})
		if bad != "" {
			t.Fatalf("%s: %s", via.name, bad)
		}
		if allocs != 0 {
			t.Errorf("%s with a stack that has room allocates %.1f times a call, want 0", via.name, allocs)
		}
		if m.Refs() != 0 || c.regs.hold.Holding() {
			t.Fatalf("%s: after the calls refs %d, holding %v", via.name, m.Refs(), c.regs.hold.Holding())
		}
	}
	if err := h.Unload(deadline(t), "adder", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// hookedModule is a module whose hook "outer" calls, through the Caller
// *c, the hooks of "inner" (nesting), then runs after (if set); the hook
// of "inner" reports whether its context is marked as h's read section.
func hookedModule(h *Host, mod *testModule, c **Caller, innerMarked chan<- bool, after func()) Source {
	mod.init = func(k *Kernel) error {
		if err := k.Hook("inner", func(ctx context.Context, _ any) error {
			innerMarked <- h.inReadSection(ctx)
			return nil
		}); err != nil {
			return err
		}
		return k.Hook("outer", func(ctx context.Context, _ any) error {
			if err := (*c).CallHooks(ctx, "inner", nil); err != nil {
				return err
			}
			if mod.exited.Load() {
				return errors.New("hook ran after its module's Exit")
			}
			if after != nil {
				after()
			}
			return nil
		})
	}
	return src("hooker", mod)
}

// graceHeld checks that a grace period of h cannot end now (a read
// section is parked): Synchronize must fail with its context. A negative
// check with a deadline, which can only pass wrongly (if the section were
// not seen, the grace period might still not have ended), never fail
// wrongly.
func graceHeld(t *testing.T, h *Host, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := h.Synchronize(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Synchronize during %s: %v, want DeadlineExceeded (the read section not waited for)", what, err)
	}
}

// unloadHeldByHook unloads "hooker" while a hook call is parked at g
// inside the hook, and checks that the unload's grace period ends only
// after g is released and the hook call (done) returned: the unload never
// reaches Exit while the call is inside.
func unloadHeldByHook(t *testing.T, h *Host, mod *testModule, m *Instance, g *gate, graced *atomic.Bool, done <-chan error) {
	t.Helper()
	killed := make(chan struct{})
	h.hooks.afterKill = func(*Instance) { close(killed) }
	h.hooks.afterGrace = func(*Instance) { graced.Store(true) }
	defer func() { h.hooks.afterKill, h.hooks.afterGrace = nil, nil }()
	unloaded := make(chan error, 1)
	go func() { unloaded <- h.Unload(deadline(t), "hooker", UnloadOptions{}) }()
	waitFor(t, killed, "unload start")
	if graced.Load() || mod.exits.Load() != 0 {
		t.Fatal("the unload's grace period ended with a hook call in flight")
	}
	g.release()
	if err := waitFor(t, done, "the hook call"); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(t, unloaded, "unload"); err != nil {
		t.Fatal(err)
	}
	if !graced.Load() || mod.exits.Load() != 1 || m.State() != StateGone {
		t.Fatalf("after the unload: grace period over %v, exits %d, state %s", graced.Load(), mod.exits.Load(), m.State())
	}
}

// TestCallerCallHooks: Caller.CallHooks runs the hooks in a read section
// entered through the Caller's own reader (registered at its first use),
// with the hooks' context marked; a hook that calls hooks through the same
// Caller again gets the shared path (the Caller's reader does not nest);
// and the Caller's section holds grace periods: Host.Synchronize, and the
// unload of the hooking module, which reaches Exit only after the call.
func TestCallerCallHooks(t *testing.T) {
	h := quietHost(t)
	g := newGate()
	var parks, graced atomic.Bool
	var viaCaller atomic.Bool // the outer hook ran inside the Caller's own section
	var c *Caller
	innerMarked := make(chan bool, 1)
	mod := &testModule{}
	m := mustLoad(t, h, hookedModule(h, mod, &c, innerMarked, func() {
		viaCaller.Store(c.inHooks)
		if parks.Load() {
			g.park()
			// Still inside the section: no grace period ended meanwhile.
			if graced.Load() {
				t.Error("the unload's grace period ended during the hook call")
			}
		}
	}))
	c = h.NewCaller()
	defer c.Close()
	if c.regs.reader != nil {
		t.Fatal("a new Caller registered a reader before its first CallHooks")
	}
	ctx := context.Background()
	for i := range 2 { // registering the reader, then registered
		if err := c.CallHooks(ctx, "outer", nil); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if marked := waitFor(t, innerMarked, "the nested hook"); !marked {
			t.Fatalf("call %d: the nested hook's context is not marked as the read section", i)
		}
		if !viaCaller.Load() || c.inHooks || c.regs.reader == nil {
			t.Fatalf("call %d: through the Caller's section %v, still in it %v, reader %p", i, viaCaller.Load(), c.inHooks, c.regs.reader)
		}
	}
	// Outside the section again: grace periods end.
	if err := h.Synchronize(deadline(t)); err != nil {
		t.Fatal(err)
	}

	// A call parked in the hook, after its nested call returned: the
	// Caller's section still holds grace periods.
	parks.Store(true)
	done := make(chan error, 1)
	go func() { done <- c.CallHooks(ctx, "outer", nil) }() // c handed over until done
	g.reached(t)
	waitFor(t, innerMarked, "the nested hook")
	graceHeld(t, h, "a Caller's hook call")
	unloadHeldByHook(t, h, mod, m, g, &graced, done)

	// The module is gone: its hooks are not called any more, and the
	// Caller's section is left (grace periods end).
	viaCaller.Store(false)
	if err := c.CallHooks(ctx, "outer", nil); err != nil || viaCaller.Load() {
		t.Fatalf("CallHooks after the unload: %v (hook ran %v)", err, viaCaller.Load())
	}
	if err := h.Synchronize(deadline(t)); err != nil {
		t.Fatal(err)
	}
}

// TestCallerCallHooksClosed: a closed Caller's CallHooks takes the shared
// path, Host.CallHooks (its reader is unregistered): the hooks still run
// in a read section, nesting included, and it still holds grace periods
// and the unload of the hooking module.
func TestCallerCallHooksClosed(t *testing.T) {
	h := quietHost(t)
	g := newGate()
	var parks, graced, ran atomic.Bool
	var c *Caller
	innerMarked := make(chan bool, 1)
	mod := &testModule{}
	m := mustLoad(t, h, hookedModule(h, mod, &c, innerMarked, func() {
		ran.Store(true)
		if c.regs == nil && c.inHooks {
			t.Error("a closed Caller's hook call entered the Caller's own section")
		}
		if parks.Load() {
			g.park()
			if graced.Load() {
				t.Error("the unload's grace period ended during the hook call")
			}
		}
	}))
	c = h.NewCaller()
	ctx := context.Background()
	if err := c.CallHooks(ctx, "outer", nil); err != nil { // registers its reader
		t.Fatal(err)
	}
	waitFor(t, innerMarked, "the nested hook")
	c.Close()
	c.Close()
	if c.regs != nil {
		t.Fatal("Close left the Caller registered")
	}
	if err := c.CallHooks(ctx, "outer", nil); err != nil || !ran.Load() {
		t.Fatalf("CallHooks through a closed Caller: %v (hook ran %v)", err, ran.Load())
	}
	if marked := waitFor(t, innerMarked, "the nested hook"); !marked {
		t.Fatal("the nested hook's context is not marked as the read section")
	}
	if err := h.Synchronize(deadline(t)); err != nil {
		t.Fatal(err)
	}

	parks.Store(true)
	done := make(chan error, 1)
	go func() { done <- c.CallHooks(ctx, "outer", nil) }()
	g.reached(t)
	waitFor(t, innerMarked, "the nested hook")
	graceHeld(t, h, "a closed Caller's hook call")
	unloadHeldByHook(t, h, mod, m, g, &graced, done)
}
