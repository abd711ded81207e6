package raceless

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
)

// funcModule exports "f" as a Func returning its id (and the arguments'
// sum), calling during (if set) inside the call.
func funcModule(name string, id uint64, during func()) Source {
	return src(name, &testModule{init: func(k *Kernel) error {
		return k.Export("f", Func(func(_ context.Context, args ...uint64) ([]uint64, error) {
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
	hd := h.Handle(KindSymbol, "f")
	if _, err := hd.Call(context.Background(), 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("before any load: %v, want ErrNotFound", err)
	}
	mustLoad(t, h, funcModule("one", 1, nil))
	if r, err := hd.Call(context.Background(), 2, 3); err != nil || r[0] != 1 || r[1] != 5 {
		t.Fatalf("first owner: %v %v", r, err)
	}
	if err := h.Unload(deadline(t), "one", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := hd.Call(context.Background()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after unload: %v, want ErrNotFound", err)
	}
	if hd.reg.Load() != nil {
		t.Fatal("handle still remembers the unloaded owner")
	}
	mustLoad(t, h, funcModule("two", 2, nil)) // another module, same symbol
	if r, err := hd.Call(context.Background()); err != nil || r[0] != 2 {
		t.Fatalf("second owner: %v %v", r, err)
	}
	if err := h.Unload(deadline(t), "two", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestHandleFollowsReplace(t *testing.T) {
	h := quietHost(t)
	mustLoad(t, h, versioned(1, &testModule{}))
	hd := h.Handle(KindSymbol, "version")
	call := func() int {
		b, err := hd.Acquire()
		if err != nil {
			t.Fatal(err)
		}
		defer b.Release()
		return b.Value().(func() int)()
	}
	if v := call(); v != 1 {
		t.Fatalf("version %d, want 1", v)
	}
	if _, err := h.Replace(deadline(t), "svc", versioned(2, &testModule{}), nil); err != nil {
		t.Fatal(err)
	}
	if v := call(); v != 2 {
		t.Fatalf("after replace: version %d, want 2", v)
	}
	if err := h.Unload(deadline(t), "svc", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestHandleCallNotAFunc(t *testing.T) {
	h := quietHost(t)
	m := mustLoad(t, h, versioned(1, &testModule{}))
	_, err := h.Handle(KindSymbol, "version").Call(context.Background())
	if !errors.Is(err, ErrInvalid) || m.Refs() != 0 {
		t.Fatalf("call of a func() int: %v (refs %d), want ErrInvalid and no reference left", err, m.Refs())
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
	hd := h.Handle(KindSymbol, "f")
	done := parkedCall(t, g, func() ([]uint64, error) { return hd.Call(context.Background()) })
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
		_, _ = hd.Call(context.Background())
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
	hd := h.Handle(KindSymbol, "f")
	var ok atomic.Int64
	stop := hammer(4, func() {
		_, err := hd.Call(context.Background())
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
				return k.Export("f", Func(func(context.Context, ...uint64) ([]uint64, error) {
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

// TestExportStack: a StackFunc symbol gets a private stack with room for
// its results, whether called through a Handle or through the Func that
// lookups see, and the caller's arguments stay as they were.
func TestExportStack(t *testing.T) {
	h := quietHost(t)
	swap3 := StackFunc(func(_ context.Context, stack []uint64) ([]uint64, error) {
		if len(stack) != 1 || cap(stack) < 3 {
			return nil, fmt.Errorf("stack len %d cap %d: %w", len(stack), cap(stack), ErrInvalid)
		}
		stack = stack[:3]
		stack[0], stack[1], stack[2] = stack[0]+1, stack[0]+2, stack[0]+3
		return stack, nil
	})
	mustLoad(t, h, src("stacky", &testModule{init: func(k *Kernel) error {
		if err := k.ExportStack("bad", -1, swap3); !errors.Is(err, ErrInvalid) {
			return fmt.Errorf("negative size: %v", err)
		}
		return k.ExportStack("three", 3, swap3)
	}}))
	args := []uint64{10}
	check := func(how string, r []uint64, err error) {
		t.Helper()
		if err != nil || len(r) != 3 || r[0] != 11 || r[2] != 13 || args[0] != 10 {
			t.Fatalf("%s: %v %v, arguments now %v", how, r, err, args)
		}
	}
	r, err := h.Handle(KindSymbol, "three").Call(context.Background(), args...)
	check("handle", r, err)
	b, err := h.Acquire(KindSymbol, "three")
	if err != nil {
		t.Fatal(err)
	}
	r, err = b.Value().(Func)(context.Background(), args...)
	b.Release()
	check("by name", r, err)

	// ImportStack hands an importer the StackFunc itself (and its size); a
	// plain Func comes wrapped, with size 0; anything else is ErrInvalid.
	// Each import makes the importer a holder of the exporter.
	mustLoad(t, h, funcModule("plain", 7, nil))
	mustLoad(t, h, src("valued", &testModule{init: func(k *Kernel) error { return k.Export("v", 42) }}))
	mustLoad(t, h, src("importer", &testModule{init: func(k *Kernel) error {
		f, size, err := k.ImportStack(context.Background(), "three")
		if err != nil || size != 3 {
			return fmt.Errorf("three: size %d, %v", size, err)
		}
		stack := make([]uint64, 1, size)
		stack[0] = 10
		if r, err := f(context.Background(), stack); err != nil || len(r) != 3 || r[0] != 11 || r[2] != 13 {
			return fmt.Errorf("three: %v %v", r, err)
		}
		f, size, err = k.ImportStack(context.Background(), "f")
		if err != nil || size != 0 {
			return fmt.Errorf("f: size %d, %v", size, err)
		}
		if r, err := f(context.Background(), []uint64{2, 3}); err != nil || len(r) != 2 || r[0] != 7 || r[1] != 5 {
			return fmt.Errorf("f: %v %v", r, err)
		}
		if _, _, err := k.ImportStack(context.Background(), "v"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "importer") {
			return fmt.Errorf("v (an int): %v, want ErrInvalid naming the importer", err)
		}
		return nil
	}}))
	if err := h.Unload(deadline(t), "stacky", UnloadOptions{}); !errors.Is(err, ErrBusy) {
		t.Fatalf("unload of an imported exporter: %v, want ErrBusy", err)
	}
	// The failed import of v left no dependency on valued.
	for _, name := range []string{"valued", "importer", "stacky", "plain"} {
		if err := h.Unload(deadline(t), name, UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}
