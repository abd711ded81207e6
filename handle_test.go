package raceless

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
)

// funcModule exports "f" as a Func returning its id (and the arguments'
// sum) in a new slice, calling during (if set) inside the call.
func funcModule(name string, id uint64, during func()) Source {
	return src(name, &testModule{init: func(k *Kernel) error {
		return k.Export("f", Func(func(_ context.Context, args []uint64) ([]uint64, error) {
			if during != nil {
				during()
			}
			var sum uint64
			for _, a := range args {
				sum += a
			}
			return []uint64{id, sum}, nil
		}))
	}})
}

func TestHandleResolvesLazilyAndFollowsReloads(t *testing.T) {
	h := quietHost(t)
	hd := h.Handle("f")
	if hd.Name() != "f" {
		t.Fatalf("Name = %q, want f", hd.Name())
	}
	if _, err := hd.Call(context.Background(), []uint64{1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("before any load: %v, want ErrNotFound", err)
	}
	mustLoad(t, h, funcModule("one", 1, nil))
	if r, err := hd.Call(context.Background(), []uint64{2, 3}); err != nil || r[0] != 1 || r[1] != 5 {
		t.Fatalf("first owner: %v %v", r, err)
	}
	if err := h.Unload(deadline(t), "one", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := hd.Call(context.Background(), nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after unload: %v, want ErrNotFound", err)
	}
	if hd.reg.Load() != nil {
		t.Fatal("handle still remembers the unloaded owner")
	}
	mustLoad(t, h, funcModule("two", 2, nil)) // another module, same symbol
	if r, err := hd.Call(context.Background(), nil); err != nil || r[0] != 2 {
		t.Fatalf("second owner: %v %v", r, err)
	}
	if err := h.Unload(deadline(t), "two", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// versionedFunc is versioned with the Func symbol "vf" too: it returns
// the version in its stack, and panics if called after its module's Exit.
func versionedFunc(v int, mod *testModule) Source {
	s := versioned(v, mod)
	init := mod.init
	mod.init = func(k *Kernel) error {
		if err := init(k); err != nil {
			return err
		}
		return k.Export("vf", Func(func(_ context.Context, stack []uint64) ([]uint64, error) {
			if mod.exited.Load() {
				panic(fmt.Sprintf("v%d called after its Exit", v))
			}
			return append(stack[:0], uint64(v)), nil
		}))
	}
	return s
}

// TestHandleFollowsReplace: a Handle (and a Caller through it) follows a
// hot swap: once Replace returns, calls reach the new instance.
func TestHandleFollowsReplace(t *testing.T) {
	h := quietHost(t)
	mustLoad(t, h, versionedFunc(1, &testModule{}))
	hd := h.Handle("vf")
	c := h.NewCaller()
	defer c.Close()
	call := func(how string, want uint64) {
		t.Helper()
		stack := make([]uint64, 1)
		r, err := hd.Call(context.Background(), stack)
		if err != nil || len(r) != 1 || r[0] != want {
			t.Fatalf("%s: Handle.Call = %v %v, want [%d]", how, r, err, want)
		}
		r, err = c.Call(context.Background(), hd, stack)
		if err != nil || len(r) != 1 || r[0] != want {
			t.Fatalf("%s: Caller.Call = %v %v, want [%d]", how, r, err, want)
		}
	}
	call("first", 1)
	if _, err := h.Replace(deadline(t), "svc", versionedFunc(2, &testModule{}), nil, ReplaceOptions{}); err != nil {
		t.Fatal(err)
	}
	call("after replace", 2)
	if err := h.Unload(deadline(t), "svc", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestHandleCallNotAFunc(t *testing.T) {
	h := quietHost(t)
	m := mustLoad(t, h, versioned(1, &testModule{}))
	hd := h.Handle("version")
	_, err := hd.Call(context.Background(), nil)
	if !errors.Is(err, ErrInvalid) || m.Refs() != 0 {
		t.Fatalf("call of a func() int: %v (refs %d), want ErrInvalid and no reference left", err, m.Refs())
	}
	// Through a Caller too: resolved now, so the call takes the Caller's
	// own path, which must drop the reference it took.
	c := h.NewCaller()
	defer c.Close()
	for range 2 {
		_, err = c.Call(context.Background(), hd, nil)
		if !errors.Is(err, ErrInvalid) || m.Refs() != 0 || c.regs.hold.Holding() {
			t.Fatalf("Caller call of a func() int: %v (refs %d, holding %v), want ErrInvalid and no reference left", err, m.Refs(), c.regs.hold.Holding())
		}
	}
	if err := h.Unload(deadline(t), "svc", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestHandleCallHoldsOwner: a call in flight through a Handle holds its
// owner's reference, so an unload is refused until it returns, and a
// panicking Func does not leak the reference.
func TestHandleCallHoldsOwner(t *testing.T) {
	h := quietHost(t)
	g := newGate()
	var panics atomic.Bool
	mustLoad(t, h, funcModule("one", 1, func() {
		if panics.Load() {
			panic("boom")
		}
		g.park()
	}))
	hd := h.Handle("f")
	done := parkedCall(t, g, func() ([]uint64, error) { return hd.Call(context.Background(), nil) })
	if err := h.Unload(deadline(t), "one", UnloadOptions{}); !errors.Is(err, ErrBusy) {
		t.Fatalf("unload during a call: %v, want ErrBusy", err)
	}
	g.release()
	if err := waitFor(t, done, "call"); err != nil {
		t.Fatal(err)
	}
	panics.Store(true)
	func() {
		defer func() { _ = recover() }()
		_, _ = hd.Call(context.Background(), nil)
	}()
	if err := h.Unload(deadline(t), "one", UnloadOptions{}); err != nil {
		t.Fatalf("unload after the calls: %v", err)
	}
}

// TestHandleConcurrentReloads calls through one Handle from several
// goroutines while the owner is unloaded and loaded again: every call
// either reaches a live owner or fails with ErrNotFound or ErrNotLive.
func TestHandleConcurrentReloads(t *testing.T) {
	h := quietHost(t)
	mod := exitChecked(t)
	mustLoad(t, h, mod())
	hd := h.Handle("f")
	var ok atomic.Int64
	stop := hammer(4, func() {
		_, err := hd.Call(context.Background(), nil)
		countCall(t, &ok, err)
	})
	// Each round waits for a call to get through to the new owner, so that
	// the calls really interleave with the reloads.
	for range 50 {
		waitCalls(t, &ok)
		_ = h.Unload(deadline(t), "one", UnloadOptions{Wait: true})
		mustLoad(t, h, mod())
	}
	waitCalls(t, &ok)
	stop()
	if err := h.Unload(deadline(t), "one", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// exitChecked returns a maker of fresh "one" modules exporting "f", a Func
// that fails the test if it runs after its module's Exit.
func exitChecked(t *testing.T) func() Source {
	var exited atomic.Bool
	return func() Source {
		exited.Store(false)
		return src("one", &testModule{
			init: func(k *Kernel) error {
				return k.Export("f", Func(func(context.Context, []uint64) ([]uint64, error) {
					if exited.Load() {
						t.Error("called after Exit")
					}
					return nil, nil
				}))
			},
			exit: func() (int, error) { exited.Store(true); return 0, nil },
		})
	}
}

// countCall counts a call that got through to a live owner; while the
// owner reloads a call may also fail with ErrNotFound or ErrNotLive, and
// any other error fails the test.
func countCall(t *testing.T, ok *atomic.Int64, err error) {
	switch {
	case err == nil:
		ok.Add(1)
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrNotLive):
	default:
		t.Error(err)
	}
}

// waitCalls waits (with a deadline) for the count to grow.
func waitCalls(t *testing.T, ok *atomic.Int64) {
	t.Helper()
	n, ctx := ok.Load(), deadline(t)
	for ok.Load() == n {
		if ctx.Err() != nil {
			t.Fatal("no call got through")
		}
		runtimeGosched()
	}
}

// TestFuncStackConvention: a Func computes in the stack it is given (the
// CallWithStack convention): called through a Handle, through a Caller,
// as the value Host.Acquire and Kernel.Import return, the results come
// back in the caller's stack when it has room, and in a new slice when it
// has not; a plain func of Func's signature is called the same way. Each
// import makes the importer a holder of the exporter, whatever the value.
func TestFuncStackConvention(t *testing.T) {
	h := quietHost(t)
	// three computes three results from its one argument, in its stack
	// when that has room (append reallocates when it has not).
	three := func(_ context.Context, stack []uint64) ([]uint64, error) {
		if len(stack) != 1 {
			return nil, fmt.Errorf("stack len %d: %w", len(stack), ErrInvalid)
		}
		a := stack[0]
		return append(stack[:0], a+1, a+2, a+3), nil
	}
	mustLoad(t, h, src("stacky", &testModule{init: func(k *Kernel) error {
		if err := k.Export("", Func(three)); !errors.Is(err, ErrInvalid) {
			return fmt.Errorf("empty name: %v", err)
		}
		if err := k.Export("three", Func(three)); err != nil {
			return err
		}
		return k.Export("plain", three) // a plain func of Func's signature
	}}))
	// check calls f with a stack holding 10, of capacity room, and checks
	// the results, and where they are: in the stack when it has room.
	check := func(how string, room int, f func(stack []uint64) ([]uint64, error)) {
		t.Helper()
		stack := make([]uint64, 1, room)
		stack[0] = 10
		r, err := f(stack)
		if err != nil || len(r) != 3 || r[0] != 11 || r[1] != 12 || r[2] != 13 {
			t.Fatalf("%s (room %d): %v %v, want [11 12 13]", how, room, r, err)
		}
		if inPlace := &r[0] == &stack[:1][0]; inPlace != (room >= 3) {
			t.Fatalf("%s (room %d): results in the caller's stack %v, want %v", how, room, inPlace, room >= 3)
		}
		if room < 3 && stack[0] != 10 {
			t.Fatalf("%s (room %d): the stack, too small for the results, is now %v", how, room, stack)
		}
	}
	ctx := context.Background()
	c := h.NewCaller()
	defer c.Close()
	for _, name := range []string{"three", "plain"} {
		hd := h.Handle(name)
		b, err := h.Acquire(KindSymbol, name)
		if err != nil {
			t.Fatal(err)
		}
		f, _ := asFunc(b.Value())
		if f == nil {
			t.Fatalf("%s: the value of a symbol exported as a %T is no Func", name, b.Value())
		}
		for _, room := range []int{1, 3, 8} {
			check(name+" by Handle", room, func(s []uint64) ([]uint64, error) { return hd.Call(ctx, s) })
			check(name+" by Caller", room, func(s []uint64) ([]uint64, error) { return c.Call(ctx, hd, s) })
			check(name+" by name", room, func(s []uint64) ([]uint64, error) { return f(ctx, s) })
		}
		b.Release()
	}

	// Import returns the Func itself (a plain func of its signature as
	// exported) and any other value as it is, and records the dependency
	// in every case.
	mustLoad(t, h, funcModule("fmod", 7, nil))
	mustLoad(t, h, src("valued", &testModule{init: func(k *Kernel) error { return k.Export("v", 42) }}))
	importer := mustLoad(t, h, src("importer", &testModule{init: func(k *Kernel) error {
		v, err := k.Import(context.Background(), "three")
		if err != nil {
			return fmt.Errorf("three: %v", err)
		}
		f, ok := v.(Func)
		if !ok {
			return fmt.Errorf("three: imported a %T, want a Func", v)
		}
		stack := make([]uint64, 1, 3)
		stack[0] = 10
		if r, err := f(context.Background(), stack); err != nil || len(r) != 3 || r[0] != 11 || r[2] != 13 || &r[0] != &stack[0] {
			return fmt.Errorf("three: %v %v, want [11 12 13] in the stack", r, err)
		}
		if v, err = k.Import(context.Background(), "f"); err != nil {
			return fmt.Errorf("f: %v", err)
		}
		if f, ok = v.(Func); !ok {
			return fmt.Errorf("f: imported a %T, want a Func", v)
		}
		if r, err := f(context.Background(), []uint64{2, 3}); err != nil || len(r) != 2 || r[0] != 7 || r[1] != 5 {
			return fmt.Errorf("f: %v %v", r, err)
		}
		if v, err = k.Import(context.Background(), "v"); err != nil || v != 42 {
			return fmt.Errorf("v (an int): %v %v, want 42", v, err)
		}
		return nil
	}}))
	for _, name := range []string{"stacky", "fmod", "valued"} {
		if err := h.Unload(deadline(t), name, UnloadOptions{}); !errors.Is(err, ErrBusy) {
			t.Fatalf("unload of imported exporter %s: %v, want ErrBusy", name, err)
		}
	}
	if deps := importer.Deps(); len(deps) != 3 {
		t.Fatalf("importer depends on %v, want stacky, fmod and valued", deps)
	}
	for _, name := range []string{"importer", "stacky", "fmod", "valued"} {
		if err := h.Unload(deadline(t), name, UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}
