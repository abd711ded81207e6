package raceless

// Deterministic reproductions of the races argued over in the 2002 thread
// ("Question about pseudo filesystems" / "[RFC] Raceless module
// interface", ../shared/seed). Each test parks a goroutine at the exact
// window with a test hook or a gate (never a sleep) and shows the cure.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Race (a): "MOD_DEC_USE_COUNT; return;" — Jamie Lokier, 10 Sep 2002
// ("If any code within the module does `MOD_DEC_USE_COUNT; return;', you
// have a race condition ... the module is cleaned up and destroyed by the
// second task while it's in the small window just before `return'"). In
// raceless module code never drops the reference that keeps it alive: the
// host takes it before the call and drops it after the call has returned,
// so while any instruction of the call runs the count is at least one.
func TestRaceDecrementThenReturn(t *testing.T) {
	h := quietHost(t)
	inWindow := newGate()
	mod := &testModule{}
	mod.init = func(k *Kernel) error {
		return k.Export("work", func() {
			// The last instructions of the module function: the
			// 2002 module would have done MOD_DEC_USE_COUNT here.
			inWindow.park()
			if mod.exited.Load() {
				t.Error("module code ran after Exit")
			}
		})
	}
	mustLoad(t, h, src("dec", mod))
	callDone := make(chan struct{})
	go func() {
		defer close(callDone)
		b, err := h.Acquire(KindSymbol, "work")
		if err != nil {
			t.Error(err)
			return
		}
		b.Value().(func())()
		b.Release() // outside module code
	}()
	inWindow.reached(t)
	// The second task's sys_delete_module, in the window.
	err := h.Unload(deadline(t), "dec", UnloadOptions{})
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("unload in the window: %v, want ErrBusy", err)
	}
	inWindow.release()
	waitFor(t, callDone, "call")
	if err := h.Unload(deadline(t), "dec", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Race (b): try_inc_mod_count racing the unload — Daniel Phillips' RFC,
// 10 Sep 2002 ("Al's odd-looking try_inc_mod_count ... a special state of
// the counter variable", count -1 meaning "unloading"). Exactly one of a
// TryGet and an Unload wins; when the unload loses, the count is restored.
func TestRaceTryGetVersusUnload(t *testing.T) {
	h := quietHost(t)
	const rounds = 300
	getWins, unloadWins := 0, 0
	for i := range rounds {
		mod := &testModule{}
		m := mustLoad(t, h, src("tg", mod))
		start := make(chan struct{})
		var got atomic.Bool
		var wg sync.WaitGroup
		wg.Add(2)
		var unloadErr error
		release := make(chan struct{})
		go func() {
			defer wg.Done()
			<-start
			if m.tryGet() {
				got.Store(true)
				<-release // hold the reference until the unload has answered
				m.put()
			}
		}()
		go func() {
			defer wg.Done()
			<-start
			unloadErr = h.Unload(deadline(t), "tg", UnloadOptions{})
			close(release)
		}()
		close(start)
		wg.Wait()
		switch {
		case got.Load() && errors.Is(unloadErr, ErrBusy):
			getWins++
			if m.State() != StateLive || m.Refs() != 0 || mod.exits.Load() != 0 {
				t.Fatalf("round %d: unload lost but state %s refs %d exits %d", i, m.State(), m.Refs(), mod.exits.Load())
			}
			if err := h.Unload(deadline(t), "tg", UnloadOptions{}); err != nil {
				t.Fatal(err)
			}
		case !got.Load() && unloadErr == nil:
			unloadWins++
		default:
			t.Fatalf("round %d: TryGet=%v and Unload=%v: not exactly one winner", i, got.Load(), unloadErr)
		}
	}
	t.Logf("TryGet won %d, Unload won %d of %d", getWins, unloadWins, rounds)

	// And at the exact window: a TryGet after the kill always loses.
	m := mustLoad(t, h, src("tg", &testModule{}))
	h.hooks.afterKill = func(*Instance) {
		if m.tryGet() {
			t.Error("TryGet succeeded after the unload refused new references")
		}
	}
	defer func() { h.hooks.afterKill = nil }()
	if err := h.Unload(deadline(t), "tg", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Race (c): the half-init problem — Rusty Russell, 12 Sep 2002 ("B) We do
// not handle the 'half init problem' where a module fails to load ... a =
// register_xxx(); b = register_yyy(); if (!b) { unregister_xxx(a); ...}
// Someone can start using 'a'"). Registrations made in Init are only
// reserved; a lookup hammering "A" never sees it.
func TestRaceHalfInitIsNeverVisible(t *testing.T) {
	h := quietHost(t)
	mustLoad(t, h, src("owner-b", &testModule{init: func(k *Kernel) error { return k.Export("B", 1) }}))
	var seen, lookups atomic.Int64
	stop := hammer(4, func() {
		lookups.Add(1)
		if b, err := h.Acquire(KindSymbol, "A"); err == nil {
			seen.Add(1)
			b.Release()
		}
	})
	registeredA := newGate()
	for i := range 200 {
		mod := &testModule{init: func(k *Kernel) error {
			if err := k.Export("A", i); err != nil {
				return err
			}
			if i == 0 {
				registeredA.park() // hold the window open while lookups hammer
			}
			return k.Export("B", i) // clashes with owner-b: Init fails
		}}
		if i == 0 {
			done := make(chan error, 1)
			go func() { _, err := h.Load(deadline(t), src("half", mod), nil); done <- err }()
			registeredA.reached(t)
			before := lookups.Load()
			for lookups.Load() < before+1000 { // let the hammer run inside the window
				runtimeGosched()
			}
			registeredA.release()
			if err := waitFor(t, done, "load"); !errors.Is(err, ErrExists) {
				t.Fatalf("half init: %v, want ErrExists from the clash on B", err)
			}
			continue
		}
		if _, err := h.Load(deadline(t), src("half", mod), nil); !errors.Is(err, ErrExists) {
			t.Fatalf("half init %d: %v", i, err)
		}
	}
	stop()
	if seen.Load() != 0 {
		t.Fatalf("a half-initialised module's symbol was seen %d times", seen.Load())
	}
	t.Logf("%d lookups, none saw A", lookups.Load())
	if err := h.Unload(deadline(t), "owner-b", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Race (d): a load of the same name while the old instance is unloading —
// Jamie Lokier, 12 Sep 2002, step 3 ("sys_init_module() should block if
// there is a module of the same name currently in the 'unloading' state
// ... until that module's cleanup_module() returns"). The new load waits,
// then loads afresh.
func TestRaceLoadDuringUnload(t *testing.T) {
	h := quietHost(t)
	var order []string
	var mu sync.Mutex
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	old := &testModule{exit: func() (int, error) { note("old exit"); return 0, nil }}
	oldInst := mustLoad(t, h, src("swap", old))
	inExit := newGate()
	h.hooks.beforeExit = func(*Instance) { inExit.park() }
	unloadDone := make(chan error, 1)
	go func() { unloadDone <- h.Unload(deadline(t), "swap", UnloadOptions{}) }()
	inExit.reached(t)
	h.hooks.beforeExit = nil

	newMod := &testModule{init: func(*Kernel) error { note("new init"); return nil }}
	loadDone := make(chan *Instance, 1)
	waiting := make(chan struct{})
	h.hooks.goingWait = func(*Instance) { close(waiting) }
	defer func() { h.hooks.goingWait = nil }()
	go func() {
		m, err := h.Load(deadline(t), Native(Info{Name: "swap"}, func() Module { return newMod }), nil)
		if err != nil {
			t.Error(err)
		}
		loadDone <- m
	}()
	waitFor(t, waiting, "the new load to wait for the going instance")
	select {
	case <-loadDone:
		t.Fatal("load of a going name returned before the old instance was gone")
	default:
	}
	inExit.release()
	if err := waitFor(t, unloadDone, "unload"); err != nil {
		t.Fatal(err)
	}
	m := waitFor(t, loadDone, "load")
	if m == nil || m == oldInst || m.State() != StateLive {
		t.Fatalf("new instance %v", m)
	}
	mu.Lock()
	if len(order) != 2 || order[0] != "old exit" || order[1] != "new init" {
		t.Fatalf("order = %v, want old exit before new init", order)
	}
	mu.Unlock()
	if err := h.Unload(deadline(t), "swap", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Race (e): cleanup_module refusing — Daniel Phillips' RFC, 10 Sep 2002
// ("module_cleanup() is called, and the first thing it does is bail out
// with an error if there are users"). A refusing Exit puts the module back
// exactly as it was: Start runs again, registrations are republished.
func TestRaceExitRefuses(t *testing.T) {
	h := quietHost(t)
	var internalUsers atomic.Int32
	internalUsers.Store(3)
	var starts atomic.Int32
	mod := &testModule{
		init:  func(k *Kernel) error { return k.Export("svc", 1) },
		start: func() { starts.Add(1) },
		exit: func() (int, error) {
			if n := internalUsers.Load(); n > 0 {
				return int(n), nil
			}
			return 0, nil
		},
	}
	m := mustLoad(t, h, src("refuser", mod))
	err := h.Unload(deadline(t), "refuser", UnloadOptions{})
	var be *BusyError
	if !errors.As(err, &be) || be.Refs != 3 || be.Reason != "exit refused" {
		t.Fatalf("unload: %v, want exit refused with busy count 3", err)
	}
	if m.State() != StateLive || starts.Load() != 2 {
		t.Fatalf("after refusal: state %s starts %d", m.State(), starts.Load())
	}
	b, err := h.Acquire(KindSymbol, "svc")
	if err != nil {
		t.Fatalf("symbol not republished: %v", err)
	}
	b.Release()
	refusal := errors.New("flushing")
	mod.exit = func() (int, error) { return 0, refusal }
	if err := h.Unload(deadline(t), "refuser", UnloadOptions{}); !errors.Is(err, refusal) || !errors.Is(err, ErrBusy) {
		t.Fatalf("unload: %v, want the module's error wrapped in ErrBusy", err)
	}
	mod.exit = nil
	if err := h.Unload(deadline(t), "refuser", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if mod.exits.Load() != 3 {
		t.Fatalf("exits = %d, want 3 (two refused, one done)", mod.exits.Load())
	}
}

// Race (f): the stop/cleanup "lost race" — Rusty Russell, 12 Sep 2002
// ("call stop, realize the module is not at zero refcnt (you lost a race),
// then call start again") and Jamie Lokier, 10 Sep 2002 ("you can't just do
// wait_for_quiescent_state() followed by if (module->count): it's possible
// that someone may call MOD_INC_USE_COUNT after the quiescent state has
// passed"). A reference taken after unpublishing (here by the module's own
// code) is caught by the final count: the module is restored, Exit never
// runs.
func TestRaceReferenceSlipsInAfterUnpublish(t *testing.T) {
	h := quietHost(t)
	var k *Kernel
	mod := &testModule{init: func(kk *Kernel) error { k = kk; return kk.Export("late", 1) }}
	m := mustLoad(t, h, src("lost", mod))
	h.hooks.afterKill = func(*Instance) { k.Get() } // module code takes a reference in the window
	err := h.Unload(deadline(t), "lost", UnloadOptions{})
	h.hooks.afterKill = nil
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("unload: %v, want ErrBusy", err)
	}
	if mod.exits.Load() != 0 || m.State() != StateLive || m.Refs() != 1 {
		t.Fatalf("exits %d state %s refs %d", mod.exits.Load(), m.State(), m.Refs())
	}
	b, err := h.Acquire(KindSymbol, "late")
	if err != nil {
		t.Fatalf("not republished: %v", err)
	}
	b.Release()
	k.Put()
	if err := h.Unload(deadline(t), "lost", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Race (g): a hook call in flight when its module unloads — the
// non-counting modules of Daniel Phillips' RFC, 10 Sep 2002
// ("magic_wait_for_quiescence"), and Rusty's synchronize_kernel(). The
// unload unpublishes the hook, then waits a grace period: it cannot reach
// Exit while the call is inside.
func TestRaceHookInFlightDuringUnload(t *testing.T) {
	h := quietHost(t)
	inside := newGate()
	mod := &testModule{}
	mod.init = func(k *Kernel) error {
		return k.Hook("pkt", func(context.Context, any) error {
			inside.park()
			if mod.exited.Load() {
				t.Error("hook ran after its module's Exit")
			}
			return nil
		})
	}
	mustLoad(t, h, src("filter", mod))
	callDone := make(chan error, 1)
	go func() { callDone <- h.CallHooks(context.Background(), "pkt", nil) }()
	inside.reached(t)

	killed := make(chan struct{})
	h.hooks.afterKill = func(*Instance) { close(killed) }
	unloadDone := make(chan error, 1)
	go func() { unloadDone <- h.Unload(deadline(t), "filter", UnloadOptions{}) }()
	waitFor(t, killed, "unload start")
	// The unload has begun and the hook is inside: the unload must be
	// held in its grace period. (A negative check: it can only pass
	// wrongly, never fail wrongly.)
	select {
	case err := <-unloadDone:
		t.Fatalf("unload finished with a hook call in flight: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	if mod.exits.Load() != 0 {
		t.Fatal("Exit ran with a hook call in flight")
	}
	inside.release()
	if err := waitFor(t, callDone, "hook call"); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(t, unloadDone, "unload"); err != nil {
		t.Fatal(err)
	}
	h.hooks.afterKill = nil
	if mod.exits.Load() != 1 {
		t.Fatalf("exits = %d", mod.exits.Load())
	}
}
