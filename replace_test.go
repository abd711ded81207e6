package raceless

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// versioned returns a module exporting "version" and the hook "tick".
func versioned(v int, mod *testModule) Source {
	mod.init = func(k *Kernel) error {
		if err := k.Export("version", func() int {
			if mod.exited.Load() {
				panic(fmt.Sprintf("v%d called after its Exit", v))
			}
			return v
		}); err != nil {
			return err
		}
		return k.Hook("tick", func(context.Context, any) error { return nil })
	}
	return Native(Info{Name: "svc", Version: fmt.Sprint(v)}, func() Module { return mod })
}

func callVersion(h *Host) (int, error) {
	b, err := h.Acquire(KindSymbol, "version")
	if err != nil {
		return 0, err
	}
	defer b.Release()
	return b.Value().(func() int)(), nil
}

func TestReplaceSwapsAndUnloadsOld(t *testing.T) {
	h := quietHost(t)
	v1 := &testModule{}
	old := mustLoad(t, h, versioned(1, v1))
	v2 := &testModule{}
	m, err := h.Replace(deadline(t), "svc", versioned(2, v2), nil, ReplaceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := callVersion(h); err != nil || got != 2 {
		t.Fatalf("after replace: version %d, %v", got, err)
	}
	if old.State() != StateGone || v1.exits.Load() != 1 || m.State() != StateLive {
		t.Fatalf("old %s exits %d, new %s", old.State(), v1.exits.Load(), m.State())
	}
	if cur, _ := h.Module("svc"); cur != m {
		t.Fatal("name not taken by the new instance")
	}
	if n := len(h.reg.hookList("tick", nil)); n != 1 {
		t.Fatalf("%d tick hooks published, want 1", n)
	}
	if err := h.Unload(deadline(t), "svc", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestReplaceUnderLoadHasNoFailedCalls(t *testing.T) {
	h := quietHost(t)
	mustLoad(t, h, versioned(0, &testModule{}))
	stop := make(chan struct{})
	var calls, failures atomic.Int64
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
				if _, err := callVersion(h); err != nil {
					failures.Add(1)
					t.Error(err)
				}
				if err := c.CallHooks(context.Background(), "tick", nil); err != nil {
					t.Error(err)
				}
				calls.Add(1)
			}
		}()
	}
	for v := 1; v <= 50; v++ {
		if _, err := h.Replace(deadline(t), "svc", versioned(v, &testModule{}), nil, ReplaceOptions{}); err != nil {
			t.Fatalf("swap to v%d: %v", v, err)
		}
	}
	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d of %d calls failed during 50 swaps", failures.Load(), calls.Load())
	}
	if got, _ := callVersion(h); got != 50 {
		t.Fatalf("version %d after the swaps", got)
	}
	t.Logf("%d calls, 0 failed, during 50 swaps", calls.Load())
	if err := h.Unload(deadline(t), "svc", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestReplaceWaitsForOldBindings(t *testing.T) {
	h := quietHost(t)
	v1 := &testModule{}
	mustLoad(t, h, versioned(1, v1))
	held, err := h.Acquire(KindSymbol, "version")
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	cancel := h.Subscribe(func(e Event) {
		if e.Module == "svc" && e.State == StateGoing {
			once.Do(func() { close(waiting) })
		}
	})
	defer cancel()
	go func() {
		_, err := h.Replace(deadline(t), "svc", versioned(2, &testModule{}), nil, ReplaceOptions{})
		done <- err
	}()
	waitFor(t, waiting, "the old instance to go")
	// New calls reach v2; the held binding still works on v1.
	if got, err := callVersion(h); err != nil || got != 2 {
		t.Fatalf("during replace: %d %v", got, err)
	}
	if got := held.Value().(func() int)(); got != 1 || v1.exits.Load() != 0 {
		t.Fatalf("held binding: %d, exits %d", got, v1.exits.Load())
	}
	held.Release()
	if err := waitFor(t, done, "replace"); err != nil {
		t.Fatal(err)
	}
	if v1.exits.Load() != 1 {
		t.Fatalf("v1 exits %d", v1.exits.Load())
	}
	if err := h.Unload(deadline(t), "svc", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestReplaceUndoneWhenOldExitRefuses(t *testing.T) {
	h := quietHost(t)
	v1 := &testModule{}
	old := mustLoad(t, h, versioned(1, v1))
	v1.exit = func() (int, error) { return 2, nil }
	v2 := &testModule{}
	_, err := h.Replace(deadline(t), "svc", versioned(2, v2), nil, ReplaceOptions{})
	var be *BusyError
	if !errors.As(err, &be) || be.Refs != 2 {
		t.Fatalf("replace with refusing exit: %v", err)
	}
	if got, err := callVersion(h); err != nil || got != 1 {
		t.Fatalf("after undo: version %d, %v", got, err)
	}
	if cur, _ := h.Module("svc"); cur != old || old.State() != StateLive {
		t.Fatalf("old not restored: %v %s", cur, old.State())
	}
	if v2.exits.Load() != 1 {
		t.Fatalf("new instance exits %d, want 1", v2.exits.Load())
	}
	v1.exit = nil
	if err := h.Unload(deadline(t), "svc", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestReplaceFailedInitChangesNothing(t *testing.T) {
	h := quietHost(t)
	old := mustLoad(t, h, versioned(1, &testModule{}))
	boom := errors.New("v2 broken")
	bad := Native(Info{Name: "svc"}, func() Module {
		return &testModule{init: func(k *Kernel) error {
			if err := k.Export("version", func() int { return 2 }); err != nil {
				return err
			}
			return boom
		}}
	})
	if _, err := h.Replace(deadline(t), "svc", bad, nil, ReplaceOptions{}); !errors.Is(err, boom) {
		t.Fatalf("replace: %v", err)
	}
	if got, err := callVersion(h); err != nil || got != 1 {
		t.Fatalf("version %d, %v", got, err)
	}
	if cur, _ := h.Module("svc"); cur != old || old.State() != StateLive {
		t.Fatal("old instance disturbed")
	}
	// A clash with another module's name still fails the replacement.
	mustLoad(t, h, src("other", &testModule{init: func(k *Kernel) error { return k.Export("taken", 1) }}))
	clash := Native(Info{Name: "svc"}, func() Module {
		return &testModule{init: func(k *Kernel) error { return k.Export("taken", 2) }}
	})
	if _, err := h.Replace(deadline(t), "svc", clash, nil, ReplaceOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("clash: %v", err)
	}
	if _, err := h.Replace(deadline(t), "nope", clash, nil, ReplaceOptions{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("name mismatch: %v", err)
	}
	for _, n := range []string{"svc", "other"} {
		if err := h.Unload(deadline(t), n, UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestUnloadDuringReplaceFollowsTheName: an Unload that found the old
// instance by name just before a hot swap gave the name to the new one
// unloads the module of that name (the new instance), never reports
// ErrNotFound for a name that exists. Found by the linearizability check
// with Replace in the mix.
func TestUnloadDuringReplaceFollowsTheName(t *testing.T) {
	h := quietHost(t)
	mustLoad(t, h, versioned(1, &testModule{}))
	found := make(chan struct{})
	resume := make(chan struct{})
	var once sync.Once
	h.hooks.unloadFound = func(*Instance) {
		once.Do(func() {
			close(found)
			<-resume
		})
	}
	unloaded := make(chan error)
	go func() { unloaded <- h.Unload(deadline(t), "svc", UnloadOptions{}) }()
	waitFor(t, found, "unload's lookup")
	v2, err := h.Replace(deadline(t), "svc", versioned(2, &testModule{}), nil, ReplaceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	close(resume)
	if err := waitFor(t, unloaded, "unload"); err != nil {
		t.Fatalf("unload after the swap: %v, want the new instance unloaded", err)
	}
	if _, ok := h.Module("svc"); ok || v2.State() != StateGone {
		t.Fatalf("after the unload: found %v, new instance %s", ok, v2.State())
	}
}
