package raceless

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// recorder collects lifecycle events.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) record(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e.Module+":"+e.State.String())
	r.mu.Unlock()
}

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

func TestLifecycleStatesAndEvents(t *testing.T) {
	h := quietHost(t)
	var rec recorder
	cancel := h.Subscribe(rec.record)
	defer cancel()
	var order []string
	mod := &testModule{
		init: func(k *Kernel) error {
			order = append(order, "init:"+k.Instance().State().String())
			return k.Export("x", 1)
		},
		start: func() { order = append(order, "start") },
		stop:  func() { order = append(order, "stop") },
		exit:  func() (int, error) { order = append(order, "exit"); return 0, nil },
	}
	m := mustLoad(t, h, src("life", mod))
	if m.State() != StateLive {
		t.Fatalf("state after load = %s, want live", m.State())
	}
	if b, err := h.Acquire(KindSymbol, "x"); err != nil || b.Owner() != m {
		t.Fatalf("Acquire of the live module's symbol: owner %p, %v, want %p", b.Owner(), err, m)
	} else {
		b.Release()
	}
	if err := h.Unload(deadline(t), "life", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if m.State() != StateGone {
		t.Fatalf("state after unload = %s, want gone", m.State())
	}
	if want := []string{"init:coming", "start", "stop", "exit"}; !slices.Equal(order, want) {
		t.Errorf("call order = %v, want %v", order, want)
	}
	if want := []string{"life:coming", "life:live", "life:going", "life:gone"}; !slices.Equal(rec.get(), want) {
		t.Errorf("events = %v, want %v", rec.get(), want)
	}
	if _, ok := h.Module("life"); ok {
		t.Error("gone module still listed")
	}
	if m.tryGet() {
		t.Error("tryGet on a gone instance succeeded")
	}
	if b, err := h.Acquire(KindSymbol, "x"); !errors.Is(err, ErrNotFound) || b.Owner() != nil {
		t.Errorf("Acquire of a gone instance's symbol: owner %p, %v, want ErrNotFound", b.Owner(), err)
	}
}

func TestStateMachineRejectsOtherTransitions(t *testing.T) {
	all := []State{StateComing, StateLive, StateGoing, StateGone}
	allowed := map[[2]State]bool{
		{StateComing, StateLive}: true, {StateComing, StateGoing}: true,
		{StateLive, StateGoing}: true, {StateGoing, StateLive}: true, {StateGoing, StateGone}: true,
	}
	for _, from := range all {
		for _, to := range all {
			if got := validTransition(from, to); got != allowed[[2]State{from, to}] {
				t.Errorf("validTransition(%s, %s) = %v", from, to, got)
			}
		}
	}
}

func TestLegacyCleanupWaitsForReferences(t *testing.T) {
	h := quietHost(t)
	var cleanups atomic.Int32
	m := mustLoad(t, h, Native(Info{Name: "old"}, func() Module {
		return Legacy(legacyMod{cleanup: func() { cleanups.Add(1) }})
	}))
	if !m.tryGet() {
		t.Fatal("TryGet on live module failed")
	}
	err := h.Unload(deadline(t), "old", UnloadOptions{})
	var be *BusyError
	if !errors.As(err, &be) || be.Refs != 1 {
		t.Fatalf("unload with a reference: %v, want BusyError with 1 ref", err)
	}
	if cleanups.Load() != 0 {
		t.Fatal("legacy cleanup ran while a reference was held")
	}
	m.put()
	if err := h.Unload(deadline(t), "old", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if cleanups.Load() != 1 {
		t.Fatalf("cleanups = %d, want 1", cleanups.Load())
	}
}

type legacyMod struct{ cleanup func() }

func (legacyMod) Init(*Kernel) error { return nil }
func (l legacyMod) Cleanup()         { l.cleanup() }

func TestTryGetFailsWhileComing(t *testing.T) {
	h := quietHost(t)
	g := newGate()
	var self *Instance
	mod := &testModule{init: func(k *Kernel) error {
		self = k.Instance()
		// The module's own references work during Init and count.
		k.Get()
		k.Put()
		g.park()
		return nil
	}}
	done := make(chan error, 1)
	go func() { _, err := h.Load(deadline(t), src("slow", mod), nil); done <- err }()
	g.reached(t)
	if self.State() != StateComing {
		t.Fatalf("state during init = %s", self.State())
	}
	if self.tryGet() {
		t.Fatal("outside TryGet succeeded while coming")
	}
	if err := h.Unload(deadline(t), "slow", UnloadOptions{}); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "not live") {
		t.Fatalf("unload while coming: %v, want busy: not live", err)
	}
	g.release()
	if err := waitFor(t, done, "load"); err != nil {
		t.Fatal(err)
	}
	if !self.tryGet() {
		t.Fatal("TryGet on live module failed")
	}
	self.put()
	if err := h.Unload(deadline(t), "slow", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestPutWithoutGetIsReportedNeverNegative(t *testing.T) {
	h := quietHost(t)
	m := mustLoad(t, h, src("p", &testModule{}))
	m.put()
	if n := m.Refs(); n < 0 {
		t.Fatalf("refs = %d after a stray Put", n)
	}
	if err := h.Unload(deadline(t), "p", UnloadOptions{}); err != nil {
		t.Fatalf("unload after stray Put: %v", err)
	}
	if h.Underflows() != 1 {
		t.Fatalf("underflows = %d, want 1", h.Underflows())
	}
	if n := m.Refs(); n != 0 {
		t.Fatalf("refs = %d after unload, want 0", n)
	}
}

func TestSymbolCallsCountOutsideModuleCode(t *testing.T) {
	h := quietHost(t)
	var inside atomic.Int64
	mod := &testModule{}
	mod.init = func(k *Kernel) error {
		return k.Export("add", func(a, b int) int {
			inside.Store(k.Instance().Refs())
			return a + b
		})
	}
	mustLoad(t, h, src("math", mod))
	b, err := h.Acquire(KindSymbol, "add")
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Value().(func(int, int) int)(2, 3); got != 5 {
		t.Fatalf("add = %d", got)
	}
	b.Release()
	if inside.Load() != 1 {
		t.Fatalf("refs inside the call = %d, want 1 (taken by the host before the call)", inside.Load())
	}
	if _, err := h.Acquire(KindSymbol, "nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("unknown symbol: %v", err)
	}
	if err := h.Unload(deadline(t), "math", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Acquire(KindSymbol, "add"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("symbol of unloaded module: %v", err)
	}
}

func TestBindingReleaseTwiceIsNoop(t *testing.T) {
	h := quietHost(t)
	mod := &testModule{init: func(k *Kernel) error {
		if err := k.Export("f", 7); err != nil {
			return err
		}
		return k.Register(KindRoute, "f", 7)
	}}
	m := mustLoad(t, h, src("twice", mod))
	var zero Binding
	zero.Release() // the zero Binding holds nothing
	// Host.Acquire is the one way to a Binding (Instance.Acquire and
	// Handle.Acquire are gone): a symbol and a registration of another kind.
	for _, via := range []struct {
		name    string
		acquire func() (Binding, error)
	}{
		{"Host.Acquire/symbol", func() (Binding, error) { return h.Acquire(KindSymbol, "f") }},
		{"Host.Acquire/route", func() (Binding, error) { return h.Acquire(KindRoute, "f") }},
	} {
		b, err := via.acquire()
		if err != nil {
			t.Fatalf("%s: %v", via.name, err)
		}
		if b.Owner() != m || b.Value() != 7 || m.Refs() != 1 {
			t.Fatalf("%s: owner %p value %v refs %d, want %p 7 1", via.name, b.Owner(), b.Value(), m.Refs(), m)
		}
		b.Release()
		b.Release()
		if m.Refs() != 0 || b.Owner() != nil || h.Underflows() != 0 {
			t.Fatalf("%s: after two Releases refs %d owner %p underflows %d, want 0 nil 0", via.name, m.Refs(), b.Owner(), h.Underflows())
		}
	}
	if err := h.Unload(deadline(t), "twice", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if mod.exits.Load() != 1 || h.Underflows() != 0 {
		t.Fatalf("exits %d underflows %d, want 1 0", mod.exits.Load(), h.Underflows())
	}
}

func TestUnloadBusyLeavesModuleAsItWas(t *testing.T) {
	h := quietHost(t)
	mod := &testModule{init: func(k *Kernel) error { return k.Export("f", func() {}) }}
	m := mustLoad(t, h, src("busy", mod))
	m.tryGet()
	m.tryGet()
	err := h.Unload(deadline(t), "busy", UnloadOptions{})
	var be *BusyError
	if !errors.As(err, &be) || !errors.Is(err, ErrBusy) || be.Refs != 2 || be.Module != "busy" {
		t.Fatalf("unload: %v, want BusyError{Refs: 2}", err)
	}
	if m.State() != StateLive || m.Refs() != 2 || mod.exits.Load() != 0 {
		t.Fatalf("after refused unload: state %s refs %d exits %d", m.State(), m.Refs(), mod.exits.Load())
	}
	if b, err := h.Acquire(KindSymbol, "f"); err != nil {
		t.Fatalf("symbol after refused unload: %v", err)
	} else {
		b.Release()
	}
	m.put()
	m.put()
	if err := h.Unload(deadline(t), "busy", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if mod.exits.Load() != 1 {
		t.Fatalf("exits = %d, want exactly 1", mod.exits.Load())
	}
	if err := h.Unload(deadline(t), "busy", UnloadOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second unload: %v, want ErrNotFound", err)
	}
}

func TestUnloadWaitReportsProgressAndDrains(t *testing.T) {
	h := quietHost(t)
	m := mustLoad(t, h, src("w", &testModule{}))
	m.tryGet()
	progress := make(chan Progress, 100)
	done := make(chan error, 1)
	go func() {
		done <- h.Unload(deadline(t), "w", UnloadOptions{Wait: true, Progress: func(p Progress) {
			select {
			case progress <- p:
			default:
			}
		}})
	}()
	p := waitFor(t, progress, "progress")
	if p.Refs != 1 || p.Module != "w" {
		t.Fatalf("progress = %+v, want 1 ref", p)
	}
	if m.tryGet() {
		t.Fatal("TryGet succeeded while an unload waits")
	}
	m.put()
	if err := waitFor(t, done, "unload"); err != nil {
		t.Fatal(err)
	}
	if m.State() != StateGone {
		t.Fatalf("state = %s", m.State())
	}
}

func TestUnloadWaitCancelRestores(t *testing.T) {
	h := quietHost(t)
	mod := &testModule{init: func(k *Kernel) error { return k.Export("g", 1) }}
	m := mustLoad(t, h, src("wc", mod))
	m.tryGet()
	ctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- h.Unload(ctx, "wc", UnloadOptions{Wait: true, Progress: func(Progress) {
			select {
			case waiting <- struct{}{}:
			default:
			}
		}})
	}()
	waitFor(t, waiting, "waiting unload")
	cancel()
	if err := waitFor(t, done, "unload"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled unload: %v", err)
	}
	if m.State() != StateLive || m.Refs() != 1 || mod.exits.Load() != 0 {
		t.Fatalf("after cancel: state %s refs %d exits %d", m.State(), m.Refs(), mod.exits.Load())
	}
	if b, err := h.Acquire(KindSymbol, "g"); err != nil {
		t.Fatalf("symbol after cancelled unload: %v", err)
	} else {
		b.Release()
	}
	m.put()
	if err := h.Unload(deadline(t), "wc", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestForceTaintsAndStaleHandleIsGone(t *testing.T) {
	h := quietHost(t)
	mod := &testModule{init: func(k *Kernel) error { return k.Export("s", func() {}) }}
	m := mustLoad(t, h, src("f", mod))
	m.tryGet()
	if err := h.Unload(deadline(t), "f", UnloadOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if len(h.Taints()) == 0 || !strings.Contains(h.Taints()[0], "forced unload of f") {
		t.Fatalf("host taints = %v", h.Taints())
	}
	if len(m.Taints()) == 0 {
		t.Fatal("module not tainted")
	}
	if m.tryGet() {
		t.Fatal("stale handle tryGet succeeded")
	}
	if m.State() != StateGone {
		t.Fatalf("stale handle's state = %s, want gone", m.State())
	}
	if b, err := h.Acquire(KindSymbol, "s"); !errors.Is(err, ErrNotFound) || b.Owner() != nil {
		t.Fatalf("Acquire of the forced module's symbol: owner %p, %v, want ErrNotFound", b.Owner(), err)
	}
	m.put() // the holder drops its reference late: no underflow, no panic
	if h.Underflows() != 0 {
		t.Fatalf("underflows = %d", h.Underflows())
	}
}

func TestSameSourceLoadsAreMerged(t *testing.T) {
	h := quietHost(t)
	g := newGate()
	mod := &testModule{init: func(*Kernel) error { g.park(); return nil }}
	s := src("merge", mod)
	const n = 8
	merging := make(chan struct{}, n)
	h.hooks.mergeWait = func(*Instance) { merging <- struct{}{} }
	results := make(chan *Instance, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			m, err := h.Load(deadline(t), s, nil)
			results <- m
			errs <- err
		}()
	}
	g.reached(t)
	for range n - 1 {
		waitFor(t, merging, "merging load")
	}
	g.release()
	var first *Instance
	for range n {
		m := waitFor(t, results, "merged load")
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = m
		}
		if m != first {
			t.Fatal("merged loads returned different instances")
		}
	}
	if mod.inits.Load() != 1 {
		t.Fatalf("Init ran %d times, want 1", mod.inits.Load())
	}
	if _, err := h.Load(deadline(t), s, nil); !errors.Is(err, ErrExists) {
		t.Fatalf("load of live name: %v, want ErrExists", err)
	}
	if err := h.Unload(deadline(t), "merge", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestMergedLoadsShareInitFailure(t *testing.T) {
	h := quietHost(t)
	g := newGate()
	boom := errors.New("boom")
	s := src("fail", &testModule{init: func(*Kernel) error { g.park(); return boom }})
	errs := make(chan error, 2)
	go func() { _, err := h.Load(deadline(t), s, nil); errs <- err }()
	g.reached(t)
	go func() { _, err := h.Load(deadline(t), s, nil); errs <- err }()
	g.release()
	for range 2 {
		if err := waitFor(t, errs, "load"); !errors.Is(err, boom) || !errors.Is(err, ErrInit) {
			t.Fatalf("load: %v, want the init error", err)
		}
	}
}

func TestOtherSourceWaitsThenExists(t *testing.T) {
	h := quietHost(t)
	g := newGate()
	first := Native(Info{Name: "dup"}, func() Module { return &testModule{init: func(*Kernel) error { g.park(); return nil }} })
	second := dupSource{Native(Info{Name: "dup"}, func() Module { return &testModule{} })}
	done1 := make(chan error, 1)
	go func() { _, err := h.Load(deadline(t), first, nil); done1 <- err }()
	g.reached(t)
	done2 := make(chan error, 1)
	go func() { _, err := h.Load(deadline(t), second, nil); done2 <- err }()
	g.release()
	if err := waitFor(t, done1, "first load"); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(t, done2, "second load"); !errors.Is(err, ErrExists) {
		t.Fatalf("second source: %v, want ErrExists", err)
	}
	if err := h.Unload(deadline(t), "dup", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

type dupSource struct{ Source }

func (dupSource) Key() string { return "other:dup" }

func TestInitMayLoadOtherModules(t *testing.T) {
	h := quietHost(t)
	b := src("b", &testModule{})
	a := src("a", &testModule{init: func(k *Kernel) error {
		_, err := k.Load(deadline(t), b, nil)
		return err
	}})
	mustLoad(t, h, a)
	if _, ok := h.Module("b"); !ok {
		t.Fatal("b not loaded by a's Init")
	}
	for _, n := range []string{"a", "b"} {
		if err := h.Unload(deadline(t), n, UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoadCycleIsAnError(t *testing.T) {
	h := quietHost(t)
	var a, b Source
	a = Native(Info{Name: "ca"}, func() Module {
		return &testModule{init: func(k *Kernel) error { _, err := k.Load(deadline(t), b, nil); return err }}
	})
	b = Native(Info{Name: "cb"}, func() Module {
		return &testModule{init: func(k *Kernel) error { _, err := k.Load(deadline(t), a, nil); return err }}
	})
	_, err := h.Load(deadline(t), a, nil)
	if !errors.Is(err, ErrCycle) || !strings.Contains(err.Error(), "cb -> ca -> cb") {
		t.Fatalf("cycle: %v, want ErrCycle naming cb -> ca -> cb", err)
	}
	if len(h.Modules()) != 0 {
		t.Fatalf("modules left after cycle: %d", len(h.Modules()))
	}
	// A module loading itself.
	var self Source
	self = Native(Info{Name: "me"}, func() Module {
		return &testModule{init: func(k *Kernel) error { _, err := k.Load(deadline(t), self, nil); return err }}
	})
	if _, err := h.Load(deadline(t), self, nil); !errors.Is(err, ErrCycle) {
		t.Fatalf("self load: %v, want ErrCycle", err)
	}
}

func TestDependsCycleThroughResolver(t *testing.T) {
	srcs := map[string]Source{}
	srcs["da"] = src("da", &testModule{}, "db")
	srcs["db"] = src("db", &testModule{}, "da")
	h := quietHost(t, WithResolver(mapResolver(srcs)))
	if _, err := h.Load(deadline(t), srcs["da"], nil); !errors.Is(err, ErrCycle) {
		t.Fatalf("depends cycle: %v, want ErrCycle", err)
	}
	if len(h.Modules()) != 0 {
		t.Fatalf("modules left: %d", len(h.Modules()))
	}
}

type mapResolver map[string]Source

func (r mapResolver) Resolve(_ context.Context, name string) (Source, error) {
	if s, ok := r[name]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
}

func TestSymbolImportCreatesDependency(t *testing.T) {
	h := quietHost(t)
	provider := src("provider", &testModule{init: func(k *Kernel) error {
		return k.Export("double", func(x int) int { return 2 * x })
	}})
	var double func(int) int
	consumerMod := &testModule{init: func(k *Kernel) error {
		v, err := k.Import(deadline(t), "double")
		if err != nil {
			return err
		}
		double = v.(func(int) int)
		_, err = k.Import(deadline(t), "double") // a second import adds nothing
		return err
	}}
	mustLoad(t, h, provider)
	mustLoad(t, h, src("consumer", consumerMod))
	if double(21) != 42 {
		t.Fatal("imported symbol broken")
	}
	p, _ := h.Module("provider")
	if got := p.Holders(); !slices.Equal(got, []string{"consumer"}) || p.Refs() != 1 {
		t.Fatalf("provider holders %v refs %d, want [consumer] 1", got, p.Refs())
	}
	err := h.Unload(deadline(t), "provider", UnloadOptions{Force: true})
	var be *BusyError
	if !errors.As(err, &be) || !slices.Equal(be.Holders, []string{"consumer"}) || !strings.Contains(err.Error(), "in use by: consumer") {
		t.Fatalf("unload provider: %v, want busy naming consumer (even forced)", err)
	}
	if err := h.Unload(deadline(t), "consumer", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(p.Holders()) != 0 || p.Refs() != 0 {
		t.Fatalf("after consumer unload: holders %v refs %d", p.Holders(), p.Refs())
	}
	if err := h.Unload(deadline(t), "provider", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Load(deadline(t), src("orphan", &testModule{init: func(k *Kernel) error {
		_, err := k.Import(deadline(t), "double")
		return err
	}}), nil); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "double") {
		t.Fatalf("import of missing symbol: %v", err)
	}
}

func TestFailedInitWaitsForGraceAndOwnReferences(t *testing.T) {
	h := quietHost(t)
	hookRunning := newGate()
	// A hook of another module is inside a read section when the init fails.
	mustLoad(t, h, src("listener", &testModule{init: func(k *Kernel) error {
		return k.Hook("ev", func(context.Context, any) error { hookRunning.park(); return nil })
	}}))
	hookDone := make(chan error, 1)
	go func() { hookDone <- h.CallHooks(context.Background(), "ev", nil) }()
	hookRunning.reached(t)

	release := make(chan struct{})
	var selfp atomic.Pointer[Instance]
	boom := errors.New("no device")
	mod := &testModule{init: func(k *Kernel) error {
		selfp.Store(k.Instance())
		if err := k.Export("half", 1); err != nil {
			return err
		}
		k.Get() // handed to a goroutine that outlives Init
		go func() { <-release; k.Put() }()
		return boom
	}}
	loadDone := make(chan error, 1)
	go func() { _, err := h.Load(deadline(t), src("halfmod", mod), nil); loadDone <- err }()

	// While the read section and the module's own reference last, the
	// failed module keeps its name: nothing is freed.
	var rec recorder
	cancel := h.Subscribe(rec.record)
	defer cancel()
	hookRunning.release()
	if err := waitFor(t, hookDone, "hook"); err != nil {
		t.Fatal(err)
	}
	for self := selfp.Load(); self == nil || self.State() != StateGoing; self = selfp.Load() {
		// self is written by Init before the failure; wait for the
		// teardown to begin without sleeping.
		select {
		case err := <-loadDone:
			t.Fatalf("load returned before the module's reference was dropped: %v", err)
		default:
		}
		runtimeGosched()
	}
	if _, ok := h.Module("halfmod"); !ok {
		t.Fatal("name released before the module's own references drained")
	}
	close(release)
	err := waitFor(t, loadDone, "failed load")
	if !errors.Is(err, boom) || !errors.Is(err, ErrInit) || !strings.Contains(err.Error(), "halfmod") {
		t.Fatalf("failed load: %v", err)
	}
	if _, ok := h.Module("halfmod"); ok {
		t.Fatal("name not released")
	}
	if _, err := h.Acquire(KindSymbol, "half"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("symbol of failed module: %v", err)
	}
	// The name and the symbol are free for a new module.
	mustLoad(t, h, src("halfmod", &testModule{init: func(k *Kernel) error { return k.Export("half", 2) }}))
	if !slices.Contains(rec.get(), "halfmod:gone") {
		t.Fatalf("no gone event: %v", rec.get())
	}
	for _, n := range []string{"halfmod", "listener"} {
		if err := h.Unload(deadline(t), n, UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestInitPanicIsContained(t *testing.T) {
	h := quietHost(t)
	_, err := h.Load(deadline(t), src("panicky", &testModule{init: func(*Kernel) error { panic("oops") }}), nil)
	if !errors.Is(err, ErrInit) || !strings.Contains(err.Error(), "oops") {
		t.Fatalf("panicking init: %v", err)
	}
	if len(h.Modules()) != 0 {
		t.Fatal("module left after panicking init")
	}
}

func TestRegistrationOutsideInitRefused(t *testing.T) {
	h := quietHost(t)
	var k *Kernel
	mustLoad(t, h, src("late", &testModule{init: func(kk *Kernel) error { k = kk; return nil }}))
	if err := k.Export("later", 1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("export after init: %v, want ErrInvalid", err)
	}
	if err := h.Unload(deadline(t), "late", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestParamsValidatedBeforeInit(t *testing.T) {
	h := quietHost(t)
	mod := &testModule{}
	info := Info{Name: "par", Params: []ParamSpec{{Name: "count", Type: ParamInt, Default: "3"}, {Name: "name", Type: ParamString}}}
	s := Native(info, func() Module { return mod })
	for _, bad := range []map[string]string{{"count": "x"}, {"nope": "1"}} {
		if _, err := h.Load(deadline(t), s, bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("bad params %v: %v, want ErrInvalid", bad, err)
		}
	}
	if mod.inits.Load() != 0 {
		t.Fatal("Init ran with bad parameters")
	}
	m, err := h.Load(deadline(t), s, map[string]string{"name": "x"})
	if err != nil {
		t.Fatal(err)
	}
	if p := m.Params(); p["count"] != "3" || p["name"] != "x" {
		t.Fatalf("params = %v", p)
	}
	if err := h.Unload(deadline(t), "par", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Load(deadline(t), Native(Info{Name: "bad name!"}, func() Module { return mod }), nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad name: %v", err)
	}
}

func TestHooksAndPanickingHook(t *testing.T) {
	h := quietHost(t)
	var got []string
	var mu sync.Mutex
	mustLoad(t, h, src("h1", &testModule{init: func(k *Kernel) error {
		return k.Hook("net", func(_ context.Context, arg any) error {
			mu.Lock()
			got = append(got, "h1:"+arg.(string))
			mu.Unlock()
			return nil
		})
	}}))
	mustLoad(t, h, src("h2", &testModule{init: func(k *Kernel) error {
		return k.Hook("net", func(context.Context, any) error { panic("bad hook") })
	}}))
	c := h.NewCaller()
	defer c.Close()
	err := c.CallHooks(context.Background(), "net", "up")
	if err == nil || !strings.Contains(err.Error(), "h2") {
		t.Fatalf("hook errors: %v, want the panic of h2", err)
	}
	if !slices.Equal(got, []string{"h1:up"}) {
		t.Fatalf("hook calls = %v", got)
	}
	m2, _ := h.Module("h2")
	if len(m2.Taints()) == 0 {
		t.Fatal("panicking hook's module not tainted")
	}
	for _, n := range []string{"h1", "h2"} {
		if err := h.Unload(deadline(t), n, UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.CallHooks(context.Background(), "net", "down"); err != nil || len(got) != 1 {
		t.Fatalf("hooks after unload: %v %v", err, got)
	}
}

func TestDemandLoadAndAutoclean(t *testing.T) {
	srcs := mapResolver{"dyn": Native(Info{Name: "dyn"}, func() Module { return &testModule{} })}
	h := quietHost(t, WithResolver(srcs))
	if _, err := h.Request(deadline(t), ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty request: %v", err)
	}
	if _, err := h.Request(deadline(t), "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing request: %v", err)
	}
	if _, err := h.Request(deadline(t), "missing"); !strings.Contains(fmt.Sprint(err), "backing off") {
		t.Fatalf("second missing request should back off: %v", err)
	}
	m, err := h.Request(deadline(t), "dyn")
	if err != nil || !m.Autoclean() {
		t.Fatalf("request: %v autoclean=%v", err, m != nil && m.Autoclean())
	}
	m.tryGet() // used
	m.put()
	if removed, _ := h.Autoclean(deadline(t)); len(removed) != 0 {
		t.Fatalf("first sweep removed %v; a module used since the last sweep survives", removed)
	}
	if removed, _ := h.Autoclean(deadline(t)); !slices.Equal(removed, []string{"dyn"}) {
		t.Fatalf("second sweep removed %v, want [dyn]", removed)
	}
	if h2 := quietHost(t); true {
		if _, err := h2.Request(deadline(t), "dyn"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("request without resolver: %v", err)
		}
	}
}

func TestConcurrentRequestsOverTheCap(t *testing.T) {
	// kmod.sh: cap + cap/4 concurrent requests all succeed.
	srcs := mapResolver{"many": Native(Info{Name: "many"}, func() Module { return &testModule{} })}
	h := quietHost(t, WithResolver(srcs))
	n := maxConcurrentRequests + maxConcurrentRequests/4
	errs := make(chan error, n)
	for range n {
		go func() { _, err := h.Request(deadline(t), "many"); errs <- err }()
	}
	for range n {
		if err := waitFor(t, errs, "request"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.Shutdown(deadline(t)); err != nil {
		t.Fatal(err)
	}
}

func TestShutdownUnloadsDependentsFirst(t *testing.T) {
	h := quietHost(t)
	var order []string
	var mu sync.Mutex
	exit := func(n string) func() (int, error) {
		return func() (int, error) { mu.Lock(); order = append(order, n); mu.Unlock(); return 0, nil }
	}
	mustLoad(t, h, src("base", &testModule{exit: exit("base"), init: func(k *Kernel) error { return k.Export("b", 1) }}))
	mustLoad(t, h, src("mid", &testModule{exit: exit("mid"), init: func(k *Kernel) error {
		_, err := k.Import(deadline(t), "b")
		return err
	}}, "base"))
	held, _ := h.Module("mid")
	held.tryGet()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // deadline already passed: what is held is forced
	forced, err := h.Shutdown(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, []string{"mid", "base"}) || !slices.Equal(forced, []string{"mid"}) {
		t.Fatalf("exit order %v forced %v", order, forced)
	}
	held.put()
}

// ctxExiter's exit waits for its own worker until ctx is done, then refuses
// (a ContextExiter).
type ctxExiter struct {
	testModule
	entered chan struct{}
	done    chan struct{} // closed when the worker has finished
}

func (m *ctxExiter) ExitContext(ctx context.Context) (int, error) {
	m.entered <- struct{}{}
	select {
	case <-m.done:
		return 0, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("worker still running: %w", ctx.Err())
	}
}

// TestExitContext: a ContextExiter's exit gets the unload's context: a
// cancelled unload refuses, leaving the module live and published; a later
// unload whose module's wait ends succeeds. Exit itself is not called.
func TestExitContext(t *testing.T) {
	h := quietHost(t)
	m := &ctxExiter{entered: make(chan struct{}), done: make(chan struct{}),
		testModule: testModule{init: func(k *Kernel) error { return k.Export("s", 1) },
			exit: func() (int, error) { panic("Exit called on a ContextExiter") }}}
	inst := mustLoad(t, h, src("waiter", m))

	ctx, cancel := context.WithCancel(context.Background())
	unloaded := make(chan error)
	go func() { unloaded <- h.Unload(ctx, "waiter", UnloadOptions{}) }()
	waitFor(t, m.entered, "exit")
	cancel()
	err := waitFor(t, unloaded, "cancelled unload")
	if !errors.Is(err, ErrBusy) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled unload: %v, want ErrBusy wrapping context.Canceled", err)
	}
	if inst.State() != StateLive || len(inst.Taints()) != 0 {
		t.Fatalf("after the refusal: %s, taints %v", inst.State(), inst.Taints())
	}
	if b, err := h.Acquire(KindSymbol, "s"); err != nil {
		t.Fatalf("symbol after the refusal: %v", err)
	} else {
		b.Release()
	}

	go func() { unloaded <- h.Unload(deadline(t), "waiter", UnloadOptions{}) }()
	waitFor(t, m.entered, "exit")
	close(m.done)
	if err := waitFor(t, unloaded, "unload"); err != nil {
		t.Fatal(err)
	}
	if inst.State() != StateGone {
		t.Fatalf("after the unload: %s", inst.State())
	}
}

// TestTaintsBounded: a host tainted without end (a daemon force-unloading
// for months) keeps the first reasons and a count, not every reason.
func TestTaintsBounded(t *testing.T) {
	h := quietHost(t)
	for i := 0; i < 1000; i++ {
		h.taint(TaintForcedUnload, fmt.Sprintf("reason %d", i))
	}
	ts := h.Taints()
	if len(ts) != taintsKept+1 || ts[0] != "reason 0" || ts[taintsKept-1] != fmt.Sprintf("reason %d", taintsKept-1) {
		t.Fatalf("kept %d reasons, first %q", len(ts), ts[0])
	}
	if want := fmt.Sprintf(TaintsMoreFormat, 1000-taintsKept); ts[taintsKept] != want {
		t.Fatalf("last line %q, want %q", ts[taintsKept], want)
	}
	var m Instance
	m.host = h
	for i := 0; i < 40; i++ {
		m.Taint(TaintWarn, "again")
	}
	if got := m.Taints(); len(got) != taintsKept+1 || got[taintsKept] != fmt.Sprintf(TaintsMoreFormat, 8) {
		t.Fatalf("instance taints: %d lines, last %q", len(got), got[len(got)-1])
	}
	// The flags are kept whatever the reasons dropped.
	if h.TaintFlags() != "R" || h.TaintMask() != 1<<3 || m.TaintFlags() != "W" {
		t.Fatalf("flags: host %q (mask %#x), instance %q; want R (0x8), W", h.TaintFlags(), h.TaintMask(), m.TaintFlags())
	}
}

// TestTaintFlags: each flag is the kernel's letter and bit; the letters
// come in the kernel's order whatever the order of the taints; an unknown
// flag counts as TaintWarn.
func TestTaintFlags(t *testing.T) {
	h := quietHost(t)
	if h.TaintFlags() != "" || h.TaintMask() != 0 {
		t.Fatalf("an untainted host: %q %#x", h.TaintFlags(), h.TaintMask())
	}
	var m Instance
	m.host = h
	m.Taint(TaintWarn, "w")
	m.Taint(TaintDied, "d")
	m.Taint(TaintForcedUnload, "r")
	m.Taint(TaintFlag('?'), "unknown")
	if got := m.TaintFlags(); got != "RDW" {
		t.Fatalf("flags %q, want RDW (the kernel's bit order)", got)
	}
	if got := m.taints.taintMask(); got != 1<<3|1<<7|1<<9 {
		t.Fatalf("mask %#x, want %#x", got, 1<<3|1<<7|1<<9)
	}
	if got := m.Taints(); !slices.Equal(got, []string{"w", "d", "r", "unknown"}) {
		t.Fatalf("reasons %q", got)
	}
	// A module's own taints leave the host as it was, but for E: an
	// unsigned module taints the host too (the kernel's add_taint_module).
	if h.TaintMask() != 0 {
		t.Fatalf("host mask %#x after module taints", h.TaintMask())
	}
	m.name = "m"
	m.Taint(TaintUnsignedModule, "no signature")
	if got, mask := m.TaintFlags(), h.TaintMask(); got != "RDWE" || mask != 1<<13 || h.TaintFlags() != "E" {
		t.Fatalf("after E: module %q, host %q %#x", got, h.TaintFlags(), mask)
	}
	if got := h.Taints(); !slices.Equal(got, []string{"m: no signature"}) {
		t.Fatalf("host reasons %q", got)
	}
}
