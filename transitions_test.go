package raceless

// Issue 13: the failed-Init teardown honours the caller's context; every
// transition reaches the subscribers, in order; TryGet succeeds only on a
// live module, also on the restore paths; Kernel.Get fails on a gone one.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
)

// TestFailedInitHonoursContext: a module that leaks a Kernel.Get during a
// failed Init keeps its teardown waiting, but Load returns when its ctx
// ends; the name stays reserved (going) until the reference is dropped,
// then the teardown finishes in the background.
func TestFailedInitHonoursContext(t *testing.T) {
	h := quietHost(t)
	var leaked *Kernel
	mod := &testModule{init: func(k *Kernel) error {
		leaked = k
		k.Get() // never dropped by the module
		return errors.New("no device")
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.hooks.initFailed = func(*Instance) { cancel() } // the caller gives up during the teardown
	loaded := make(chan error, 1)
	go func() { _, err := h.Load(ctx, src("leaky", mod), nil); loaded <- err }()
	err := waitFor(t, loaded, "Load after its ctx ended (the failed teardown ignores ctx?)")
	if !errors.Is(err, ErrInit) {
		t.Fatalf("load: %v, want ErrInit", err)
	}
	h.hooks.initFailed = nil
	m, ok := h.Module("leaky")
	if !ok || m.State() != StateGoing {
		t.Fatalf("name released (or not going) while the module's own reference is held: %v", ok)
	}
	// A load of the name waits for the teardown, and honours its own ctx.
	lctx, lcancel := context.WithCancel(context.Background())
	waiting := make(chan struct{})
	h.hooks.goingWait = func(*Instance) { close(waiting) }
	second := make(chan error, 1)
	go func() { _, err := h.Load(lctx, src("leaky", &testModule{}), nil); second <- err }()
	waitFor(t, waiting, "the second load to wait for the going instance")
	lcancel()
	if err := waitFor(t, second, "the waiting load"); !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting load: %v, want context.Canceled", err)
	}
	h.hooks.goingWait = nil
	leaked.Put()
	waitFor(t, m.Gone(), "the teardown after the reference was dropped")
	mustLoad(t, h, src("leaky", &testModule{}))
	if _, err := h.Shutdown(deadline(t)); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownForcesFailedTeardown: Shutdown waits for a failed Init's
// teardown running in the background and, past its deadline, forces it.
func TestShutdownForcesFailedTeardown(t *testing.T) {
	h := quietHost(t)
	var leaked *Kernel
	ctx, cancel := context.WithCancel(context.Background())
	h.hooks.initFailed = func(*Instance) { cancel() }
	loaded := make(chan error, 1)
	go func() {
		_, err := h.Load(ctx, src("leaky", &testModule{init: func(k *Kernel) error {
			leaked = k
			k.Get()
			return errors.New("no device")
		}}), nil)
		loaded <- err
	}()
	if err := waitFor(t, loaded, "Load after its ctx ended"); !errors.Is(err, ErrInit) {
		t.Fatal(err)
	}
	m, _ := h.Module("leaky")
	sctx, scancel := context.WithCancel(context.Background())
	scancel() // deadline passed: force
	shut := make(chan error, 1)
	go func() { _, err := h.Shutdown(sctx); shut <- err }()
	if err := waitFor(t, shut, "Shutdown past its deadline"); err != nil {
		t.Fatal(err)
	}
	if m.State() != StateGone || len(h.Taints()) == 0 || len(m.Taints()) == 0 {
		t.Fatalf("after a forced shutdown: %s, host taints %v, module taints %v", m.State(), h.Taints(), m.Taints())
	}
	leaked.Put()
}

// eventLog records every event, and Exit calls, in one sequence, per
// instance.
type eventLog struct {
	mu  sync.Mutex
	seq map[*Instance][]string
	all []string
}

func (l *eventLog) record(e Event) { l.add(e.Instance, e.State.String()) }

func (l *eventLog) add(m *Instance, what string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seq == nil {
		l.seq = map[*Instance][]string{}
	}
	l.seq[m] = append(l.seq[m], what)
	l.all = append(l.all, m.Name()+":"+what)
}

func (l *eventLog) of(m *Instance) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.seq[m])
}

// TestSubscribersSeeEveryTransition: a subscriber sees each transition of
// the state machine, in order, as it happens (going before Exit runs).
func TestSubscribersSeeEveryTransition(t *testing.T) {
	check := func(t *testing.T, l *eventLog, m *Instance, want ...string) {
		t.Helper()
		if got := l.of(m); !slices.Equal(got, want) {
			t.Errorf("%s: events %v, want %v", m.Name(), got, want)
		}
	}
	// exitLogged is a module whose Exit is logged and refuses while
	// refuse > 0.
	type exitLogged struct {
		*testModule
		self   *Instance
		refuse int
	}
	newMod := func(l *eventLog) *exitLogged {
		x := &exitLogged{testModule: &testModule{}}
		x.init = func(k *Kernel) error { x.self = k.Instance(); return k.Export(k.Name()+".s", 1) }
		x.exit = func() (int, error) {
			l.add(x.self, "exit")
			if x.refuse > 0 {
				x.refuse--
				return 1, nil
			}
			return 0, nil
		}
		return x
	}
	t.Run("refused-unload", func(t *testing.T) {
		h := quietHost(t)
		var l eventLog
		defer h.Subscribe(l.record)()
		x := newMod(&l)
		m := mustLoad(t, h, src("a", x))
		// A reference slips in after the kill: the count after the grace
		// period refuses and restores.
		h.hooks.afterKill = func(*Instance) { x.self.kernel.Get() }
		if err := h.Unload(deadline(t), "a", UnloadOptions{}); !errors.Is(err, ErrBusy) {
			t.Fatalf("unload: %v", err)
		}
		h.hooks.afterKill = nil
		x.self.kernel.Put()
		if err := h.Unload(deadline(t), "a", UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
		check(t, &l, m, "coming", "live", "going", "live", "going", "exit", "gone")
	})
	t.Run("exit-refused", func(t *testing.T) {
		h := quietHost(t)
		var l eventLog
		defer h.Subscribe(l.record)()
		x := newMod(&l)
		x.refuse = 1
		m := mustLoad(t, h, src("a", x))
		if err := h.Unload(deadline(t), "a", UnloadOptions{}); !errors.Is(err, ErrBusy) {
			t.Fatalf("unload: %v", err)
		}
		if err := h.Unload(deadline(t), "a", UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
		check(t, &l, m, "coming", "live", "going", "exit", "live", "going", "exit", "gone")
	})
	t.Run("cancelled-wait", func(t *testing.T) {
		h := quietHost(t)
		var l eventLog
		defer h.Subscribe(l.record)()
		m := mustLoad(t, h, src("a", newMod(&l)))
		b, err := h.Acquire(KindSymbol, "a.s")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		err = h.Unload(ctx, "a", UnloadOptions{Wait: true, Progress: func(Progress) { cancel() }})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("unload: %v", err)
		}
		b.Release()
		if err := h.Unload(deadline(t), "a", UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
		check(t, &l, m, "coming", "live", "going", "live", "going", "exit", "gone")
	})
	t.Run("unload", func(t *testing.T) {
		h := quietHost(t)
		var l eventLog
		defer h.Subscribe(l.record)()
		m := mustLoad(t, h, src("a", newMod(&l)))
		if err := h.Unload(deadline(t), "a", UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
		check(t, &l, m, "coming", "live", "going", "exit", "gone")
	})
	t.Run("failed-init", func(t *testing.T) {
		h := quietHost(t)
		var l eventLog
		defer h.Subscribe(l.record)()
		var self *Instance
		if _, err := h.Load(deadline(t), src("a", &testModule{init: func(k *Kernel) error {
			self = k.Instance()
			return errors.New("no")
		}}), nil); !errors.Is(err, ErrInit) {
			t.Fatal(err)
		}
		check(t, &l, self, "coming", "going", "gone")
	})
	t.Run("replace-and-undone-replace", func(t *testing.T) {
		h := quietHost(t)
		var l eventLog
		defer h.Subscribe(l.record)()
		x := newMod(&l)
		old := mustLoad(t, h, src("a", x))
		// 1. A hot swap undone: the old Exit refuses.
		x.refuse = 1
		y := newMod(&l)
		if _, err := h.Replace(deadline(t), "a", Native(Info{Name: "a"}, func() Module { return y }), nil, ReplaceOptions{}); !errors.Is(err, ErrBusy) {
			t.Fatalf("replace: %v", err)
		}
		check(t, &l, old, "coming", "live", "going", "exit", "live")
		check(t, &l, y.self, "coming", "live", "going", "exit", "gone")
		// 2. A hot swap that succeeds.
		z := newMod(&l)
		nw, err := h.Replace(deadline(t), "a", Native(Info{Name: "a"}, func() Module { return z }), nil, ReplaceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		check(t, &l, old, "coming", "live", "going", "exit", "live", "going", "exit", "gone")
		check(t, &l, nw, "coming", "live")
		// The new instance is live before the old one is going.
		l.mu.Lock()
		all := slices.Clone(l.all)
		l.mu.Unlock()
		if i, j := slices.Index(all[len(all)-4:], "a:live"), slices.Index(all[len(all)-4:], "a:going"); i < 0 || j < i {
			t.Errorf("swap events out of order: %v", all)
		}
		if err := h.Unload(deadline(t), "a", UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("start-panics", func(t *testing.T) {
		h := quietHost(t)
		var l eventLog
		defer h.Subscribe(l.record)()
		x := newMod(&l)
		x.start = func() { panic("start") }
		if _, err := h.Load(deadline(t), src("a", x), nil); !errors.Is(err, ErrInit) {
			t.Fatal(err)
		}
		check(t, &l, x.self, "coming", "going", "exit", "gone")
	})
}

// TestTryGetFailsUnlessLiveOnRestore: on the restore paths of Unload (a
// reference slipped in; Exit refused; a cancelled wait) and of Replace
// (the swap undone), a TryGet that succeeds sees the module live.
func TestTryGetFailsUnlessLiveOnRestore(t *testing.T) {
	probe := func(t *testing.T, h *Host) *int {
		var n int
		h.hooks.revived = func(m *Instance) {
			// Host.mu is held: only lock-free calls here.
			n++
			if m.tryGet() {
				s := m.State()
				m.put()
				if s != StateLive {
					t.Errorf("TryGet on %s succeeded while it is %s", m.Name(), s)
				}
			} else {
				t.Errorf("TryGet on %s failed once it accepts references again", m.Name())
			}
		}
		return &n
	}
	t.Run("unload-restore", func(t *testing.T) {
		h := quietHost(t)
		n := probe(t, h)
		refuse := 1
		var k *Kernel
		mustLoad(t, h, src("a", &testModule{
			init: func(kk *Kernel) error { k = kk; return kk.Export("s", 1) },
			exit: func() (int, error) {
				if refuse > 0 {
					refuse--
					return 1, nil
				}
				return 0, nil
			},
		}))
		// Exit refuses.
		if err := h.Unload(deadline(t), "a", UnloadOptions{}); !errors.Is(err, ErrBusy) {
			t.Fatal(err)
		}
		// A reference slips in after the kill.
		h.hooks.afterKill = func(*Instance) { k.Get() }
		if err := h.Unload(deadline(t), "a", UnloadOptions{}); !errors.Is(err, ErrBusy) {
			t.Fatal(err)
		}
		h.hooks.afterKill = nil
		// A cancelled wait for that reference.
		ctx, cancel := context.WithCancel(context.Background())
		if err := h.Unload(ctx, "a", UnloadOptions{Wait: true, Progress: func(Progress) { cancel() }}); !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		k.Put()
		if *n != 3 {
			t.Fatalf("%d restores probed, want 3", *n)
		}
		if err := h.Unload(deadline(t), "a", UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("undone-replace", func(t *testing.T) {
		h := quietHost(t)
		n := probe(t, h)
		mustLoad(t, h, src("a", &testModule{exit: func() (int, error) { return 1, nil }}))
		if _, err := h.Replace(deadline(t), "a", Native(Info{Name: "a"}, func() Module { return &testModule{} }), nil, ReplaceOptions{}); !errors.Is(err, ErrBusy) {
			t.Fatal(err)
		}
		if *n != 1 {
			t.Fatalf("%d restores probed, want 1", *n)
		}
		h.hooks.revived = nil
		if _, err := h.Shutdown(canceledCtx()); err != nil {
			t.Fatal(err)
		}
	})
}

func canceledCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestKernelGetOnGoneFails: Kernel.Get takes a reference in any state but
// gone; on a gone module it fails and takes nothing.
func TestKernelGetOnGoneFails(t *testing.T) {
	h := quietHost(t)
	var k *Kernel
	m := mustLoad(t, h, src("a", &testModule{init: func(kk *Kernel) error {
		k = kk
		if !kk.Get() { // coming
			return fmt.Errorf("Get while coming failed")
		}
		kk.Put()
		return nil
	}}))
	if !k.Get() {
		t.Fatal("Get while live failed")
	}
	k.Put()
	if err := h.Unload(deadline(t), "a", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if k.Get() {
		t.Error("Kernel.Get on a gone module succeeded")
		k.Put()
	}
	if n := m.Refs(); n != 0 {
		t.Errorf("a gone module holds %d references after Kernel.Get", n)
	}
}

// TestReplaceUndoDoesNotWaitForGraceInCaller: a hot swap undone because
// its ctx ended returns although a hook call is still inside its read
// section (the new instance's grace period is waited for in the
// background); the new instance goes once the hook returns.
func TestReplaceUndoDoesNotWaitForGraceInCaller(t *testing.T) {
	h := quietHost(t)
	inHook := newGate()
	mustLoad(t, h, src("listener", &testModule{init: func(k *Kernel) error {
		return k.Hook("ev", func(context.Context, any) error { inHook.park(); return nil })
	}}))
	mustLoad(t, h, src("a", &testModule{init: func(k *Kernel) error { return k.Export("a.s", 1) }}))
	hooked := make(chan error, 1)
	go func() { hooked <- h.CallHooks(context.Background(), "ev", nil) }()
	inHook.reached(t)
	live := make(chan *Instance, 1)
	defer h.Subscribe(func(e Event) {
		if e.Module == "a" && e.State == StateLive {
			select {
			case live <- e.Instance:
			default: // the old instance live again: not waited for
			}
		}
	})()
	ctx, cancel := context.WithCancel(context.Background())
	// The swap waits for the old instance's grace period, which waits
	// for the parked hook; the caller gives up.
	swapped := make(chan error, 1)
	go func() {
		_, err := h.Replace(ctx, "a", Native(Info{Name: "a"}, func() Module {
			return &testModule{init: func(k *Kernel) error { return k.Export("a.s", 2) }}
		}), nil, ReplaceOptions{})
		swapped <- err
	}()
	newInst := waitFor(t, live, "the new instance live")
	cancel()
	if err := waitFor(t, swapped, "Replace after its ctx ended (the undo waits for the grace period?)"); !errors.Is(err, context.Canceled) {
		t.Fatalf("replace: %v, want context.Canceled", err)
	}
	if m, _ := h.Module("a"); m == newInst || m.State() != StateLive {
		t.Fatal("old instance not restored")
	}
	inHook.release()
	if err := waitFor(t, hooked, "hook"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, newInst.Gone(), "the undone instance")
	if _, err := h.Shutdown(deadline(t)); err != nil {
		t.Fatal(err)
	}
}

// TestTeardownsGainWhileWaited: background teardowns may begin at any
// time, also while Shutdown waits for the tracker to be idle (a load
// failing during Shutdown); a sync.WaitGroup forbids an Add from zero
// concurrent with a Wait. The tracker is idle exactly when none runs.
func TestTeardownsGainWhileWaited(t *testing.T) {
	var td teardowns
	isClosed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	if !isClosed(td.Idle()) {
		t.Fatal("a fresh tracker is not idle")
	}
	td.Add(1)
	first := td.Idle()
	waited := make(chan struct{})
	go func() { <-first; close(waited) }() // a waiter, as Shutdown's
	td.Add(1)                              // a teardown begins meanwhile
	td.Done()
	if isClosed(first) {
		t.Fatal("idle with a teardown running")
	}
	td.Done()
	waitFor(t, waited, "idle")
	td.Add(1) // and again after a wait
	if isClosed(td.Idle()) {
		t.Fatal("idle with a teardown running")
	}
	td.Done()
}

// TestComingDeliveredBeforeInit: the coming event reaches a subscriber
// before the module's Init runs (initialize delivers it first), and a
// transition made while no one subscribes queues nothing: a subscriber
// added afterwards sees only what follows.
func TestComingDeliveredBeforeInit(t *testing.T) {
	h := quietHost(t)
	var log eventLog
	var seenAtInit []string
	mod := &testModule{init: func(k *Kernel) error {
		seenAtInit = log.of(k.Instance())
		return nil
	}}
	cancelSub := h.Subscribe(log.record)
	m := mustLoad(t, h, src("early", mod))
	if !slices.Equal(seenAtInit, []string{"coming"}) {
		t.Fatalf("events seen when Init ran: %v, want [coming]", seenAtInit)
	}
	cancelSub()
	if err := h.Unload(deadline(t), "early", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := log.of(m); !slices.Equal(got, []string{"coming", "live"}) {
		t.Fatalf("events after the subscriber left: %v, want [coming live]", got)
	}
	if m.eventsPending.Load() || len(m.events) != 0 {
		t.Fatalf("events queued with no subscriber: %v", m.events)
	}

	// Subscribed while the module is live: going and gone only.
	m2 := mustLoad(t, h, src("late", &testModule{}))
	var log2 eventLog
	defer h.Subscribe(log2.record)()
	if err := h.Unload(deadline(t), "late", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := log2.of(m2); !slices.Equal(got, []string{"going", "gone"}) {
		t.Fatalf("events of a module loaded before the subscriber: %v, want [going gone]", got)
	}
}
