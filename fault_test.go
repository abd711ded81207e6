package raceless_test

// Fault injection through the public API only: Init failing at every step,
// Exit refusing, erroring and blocking, panics in every kind of module code,
// and cancellation of every blocking operation at random points. After each
// fault the host must be consistent: nothing leaked, nothing that was never
// live was visible, the module restored and usable, unloading still works.
//
// goleak checks this package through the TestMain of the internal tests
// (helpers_test.go): one test binary holds one TestMain.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raceless/raceless"
)

// faultWait is the deadline of every wait in these tests: reaching it is a
// failure (a waiter never woken), never a synchronisation.
const faultWait = 10 * time.Second

func faultHost(opts ...raceless.Option) *raceless.Host {
	return raceless.New(append([]raceless.Option{raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)...)
}

func faultCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), faultWait)
	t.Cleanup(cancel)
	return ctx
}

func faultRecv[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(faultWait)
	defer timer.Stop()
	select {
	case v := <-c:
		return v
	case <-timer.C:
		t.Fatalf("%s: not done after %v (a waiter never woken?)", what, faultWait)
		panic("unreachable")
	}
}

// fmod is a configurable module. Its registrations are, in order:
// symbol NAME.a, hook "ev", symbol NAME.b, route /NAME, hook "ev.NAME".
type fmod struct {
	name    string
	failAt  int  // Init fails before registration failAt (-1: never); len(steps) fails after all
	panicIn bool // failure is a panic rather than an error
	exit    func() (int, error)
	stop    func()
	start   func()
	hook    func() error

	k      *raceless.Kernel
	calls  atomic.Int64
	exited atomic.Bool
}

const fmodSteps = 5

func (m *fmod) symA() string { return m.name + ".a" }
func (m *fmod) symB() string { return m.name + ".b" }

func (m *fmod) hookFn(ctx context.Context, arg any) error {
	m.calls.Add(1)
	if m.exited.Load() {
		return errors.New("hook ran after Exit")
	}
	if m.hook != nil {
		return m.hook()
	}
	return nil
}

func (m *fmod) Init(k *raceless.Kernel) error {
	m.k = k
	call := func() int64 {
		if m.exited.Load() {
			panic("call after Exit")
		}
		return m.calls.Add(1)
	}
	steps := []func() error{
		func() error { return k.Export(m.symA(), call) },
		func() error { return k.Hook("ev", m.hookFn) },
		func() error { return k.Export(m.symB(), call) },
		func() error { return k.Register(raceless.KindRoute, "/"+m.name, call) },
		func() error { return k.Hook("ev."+m.name, m.hookFn) },
	}
	for i := 0; i <= len(steps); i++ {
		if i == m.failAt {
			if m.panicIn {
				panic(fmt.Sprintf("%s: init panics at step %d", m.name, i))
			}
			return fmt.Errorf("%s: init fails at step %d", m.name, i)
		}
		if i == len(steps) {
			break
		}
		if err := steps[i](); err != nil {
			return err
		}
	}
	return nil
}

func (m *fmod) Exit() (int, error) {
	busy, err := 0, error(nil)
	if m.exit != nil {
		busy, err = m.exit()
	}
	if busy == 0 && err == nil {
		m.exited.Store(true)
	}
	return busy, err
}

func (m *fmod) Start() {
	if m.start != nil {
		m.start()
	}
}

func (m *fmod) Stop() {
	if m.stop != nil {
		m.stop()
	}
}

func fsrc(m *fmod) raceless.Source {
	return raceless.Native(raceless.Info{Name: m.name, Aliases: []string{"alias-" + m.name}}, func() raceless.Module { return m })
}

// visible lists what of name's registrations the host shows.
func visible(ctx context.Context, h *raceless.Host, m *fmod) []string {
	var out []string
	for _, kind := range []raceless.Kind{raceless.KindSymbol, raceless.KindRoute} {
		for _, r := range h.Lookup(kind) {
			if r.Owner == m.name {
				out = append(out, string(kind)+" "+r.Name)
			}
		}
	}
	for _, sym := range []string{m.symA(), m.symB()} {
		if b, err := h.Acquire(raceless.KindSymbol, sym); err == nil {
			out = append(out, "acquired "+sym)
			b.Release()
		}
	}
	before := m.calls.Load()
	_ = h.CallHooks(ctx, "ev", nil)
	_ = h.CallHooks(ctx, "ev."+m.name, nil)
	if m.calls.Load() != before {
		out = append(out, "hook called")
	}
	return out
}

// callSym acquires and calls a symbol of m.
func callSym(t *testing.T, h *raceless.Host, sym string) {
	t.Helper()
	b, err := h.Acquire(raceless.KindSymbol, sym)
	if err != nil {
		t.Fatalf("Symbol(%s): %v", sym, err)
	}
	defer b.Release()
	b.Value().(func() int64)()
}

// TestFaultInitFailsAtEveryStep fails Init before each registration and
// after the last, by error and by panic, while a prober looks for any of
// its registrations from outside: nothing may be visible, ever; nothing may
// leak (the same names register again at once); the instance is gone.
func TestFaultInitFailsAtEveryStep(t *testing.T) {
	for _, panics := range []bool{false, true} {
		for step := 0; step <= fmodSteps; step++ {
			t.Run(fmt.Sprintf("panic=%v/step=%d", panics, step), func(t *testing.T) {
				ctx := faultCtx(t)
				h := faultHost()
				m := &fmod{name: "f", failAt: step, panicIn: panics}
				// Probe from outside while Init runs.
				stopProbe := make(chan struct{})
				probeDone := make(chan []string)
				go func() {
					var seen []string
					for {
						select {
						case <-stopProbe:
							probeDone <- seen
							return
						default:
						}
						seen = append(seen, visible(ctx, h, m)...)
						runtime.Gosched()
					}
				}()
				var events []string
				var evMu sync.Mutex
				cancelSub := h.Subscribe(func(e raceless.Event) {
					evMu.Lock()
					events = append(events, e.State.String())
					evMu.Unlock()
				})
				_, err := h.Load(ctx, fsrc(m), nil)
				close(stopProbe)
				seen := faultRecv(t, probeDone, "prober")
				cancelSub()
				if !errors.Is(err, raceless.ErrInit) {
					t.Fatalf("Load: %v, want ErrInit", err)
				}
				if len(seen) > 0 {
					t.Errorf("registrations of a failed init were visible: %v", seen)
				}
				if v := visible(ctx, h, m); len(v) > 0 {
					t.Errorf("after the failed load: %v", v)
				}
				if _, ok := h.Module("f"); ok {
					t.Errorf("name still taken after a failed init")
				}
				inst := m.k.Instance()
				if inst.State() != raceless.StateGone {
					t.Errorf("failed instance is %s, want gone", inst.State())
				}
				// No reference can be taken on it, not even by its own
				// Kernel (Get fails on a gone module), and none is left.
				if m.k.Get() {
					t.Errorf("Kernel.Get succeeded on a failed instance")
					m.k.Put()
				}
				if n := inst.Refs(); n != 0 {
					t.Errorf("failed instance has %d references, want 0", n)
				}
				if panics && len(inst.Taints()) == 0 {
					t.Errorf("a panicking Init did not taint the instance")
				}
				evMu.Lock()
				if got := strings.Join(events, ","); got != "coming,going,gone" {
					t.Errorf("events %s, want coming,going,gone", got)
				}
				evMu.Unlock()
				// Nothing leaked: the same names register again.
				ok := &fmod{name: "f", failAt: -1}
				if _, err := h.Load(ctx, fsrc(ok), nil); err != nil {
					t.Fatalf("reload after failed init: %v", err)
				}
				callSym(t, h, ok.symB())
				if err := h.Unload(ctx, "f", raceless.UnloadOptions{}); err != nil {
					t.Fatalf("unload: %v", err)
				}
				if n := h.Underflows(); n != 0 {
					t.Errorf("%d reference underflows", n)
				}
			})
		}
	}
}

// TestFaultExitRefuses: a refusing Exit (busy count, error) leaves the
// module exactly as it was: live, Start run again after Stop, symbols and
// hooks usable, no reference left; the next unload works.
func TestFaultExitRefuses(t *testing.T) {
	errNo := errors.New("not now")
	cases := []struct {
		name     string
		exit     func() (int, error)
		wantRefs int64
		wantErr  error
	}{
		{"busy-count", func() (int, error) { return 3, nil }, 3, nil},
		{"error", func() (int, error) { return 0, errNo }, 0, errNo},
		{"both", func() (int, error) { return 2, errNo }, 2, errNo},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := faultCtx(t)
			h := faultHost()
			var starts, stops atomic.Int32
			refuse := atomic.Bool{}
			refuse.Store(true)
			m := &fmod{name: "r", failAt: -1,
				start: func() { starts.Add(1) },
				stop:  func() { stops.Add(1) },
				exit: func() (int, error) {
					if refuse.Load() {
						return c.exit()
					}
					return 0, nil
				}}
			inst, err := h.Load(ctx, fsrc(m), nil)
			if err != nil {
				t.Fatal(err)
			}
			err = h.Unload(ctx, "r", raceless.UnloadOptions{})
			var be *raceless.BusyError
			if !errors.As(err, &be) || !errors.Is(err, raceless.ErrBusy) {
				t.Fatalf("Unload: %v, want a *BusyError", err)
			}
			if be.Refs != c.wantRefs || be.Reason != "exit refused" || !errors.Is(err, c.wantErr) && c.wantErr != nil {
				t.Errorf("BusyError %+v, want refs %d, reason exit refused, err %v", be, c.wantRefs, c.wantErr)
			}
			if inst.State() != raceless.StateLive || inst.Refs() != 0 {
				t.Errorf("after refusal: %s with %d refs, want live with 0", inst.State(), inst.Refs())
			}
			if starts.Load() != 2 || stops.Load() != 1 {
				t.Errorf("Start ran %d times, Stop %d; want 2 and 1", starts.Load(), stops.Load())
			}
			callSym(t, h, m.symA())
			before := m.calls.Load()
			if err := h.CallHooks(ctx, "ev.r", nil); err != nil || m.calls.Load() != before+1 {
				t.Errorf("hook after refusal: err %v, calls %d -> %d", err, before, m.calls.Load())
			}
			if got := len(h.Lookup(raceless.KindRoute)); got != 1 {
				t.Errorf("%d routes after refusal, want 1", got)
			}
			refuse.Store(false)
			if err := h.Unload(ctx, "r", raceless.UnloadOptions{}); err != nil {
				t.Fatalf("second unload: %v", err)
			}
			if inst.State() != raceless.StateGone || !m.exited.Load() {
				t.Errorf("after unload: %s, exited %v", inst.State(), m.exited.Load())
			}
		})
	}
}

// TestFaultExitBlocks: Exit has no context, so an Unload whose Exit blocks
// cannot be cancelled: it returns only when Exit does, whatever its ctx.
// (A core limitation, reported: nothing tells a blocking Exit to give up.)
// When the blocked Exit finally refuses, the module is restored and usable.
func TestFaultExitBlocks(t *testing.T) {
	ctx := faultCtx(t)
	h := faultHost()
	entered := make(chan struct{})
	release := make(chan struct{})
	var blockOnce sync.Once
	m := &fmod{name: "b", failAt: -1, exit: func() (int, error) {
		blocked := false
		blockOnce.Do(func() {
			blocked = true
			close(entered)
			<-release
		})
		if blocked {
			return 1, nil // gives up: refuses
		}
		return 0, nil
	}}
	inst, err := h.Load(ctx, fsrc(m), nil)
	if err != nil {
		t.Fatal(err)
	}
	uctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.Unload(uctx, "b", raceless.UnloadOptions{Wait: true}) }()
	faultRecv(t, entered, "Exit entered")
	cancel()
	// Other goroutines keep working while Exit blocks: the name is going,
	// nothing is reachable, and nothing waits on a lock.
	if _, err := h.Acquire(raceless.KindSymbol, m.symA()); err == nil {
		t.Errorf("Symbol reachable while Exit runs")
	}
	if err := h.CallHooks(ctx, "ev", nil); err != nil {
		t.Errorf("CallHooks while Exit blocks: %v", err)
	}
	if _, ok := h.Module("b"); !ok {
		t.Errorf("name free while Exit still runs")
	}
	select {
	case err := <-done:
		t.Fatalf("Unload returned while Exit blocked: %v", err)
	default:
		t.Logf("core limitation: Unload's ctx is cancelled but it waits for the blocked Exit (Exit has no context)")
	}
	close(release)
	err = faultRecv(t, done, "Unload after Exit returned")
	if !errors.Is(err, raceless.ErrBusy) {
		t.Errorf("Unload: %v, want ErrBusy (exit refused)", err)
	}
	if inst.State() != raceless.StateLive {
		t.Fatalf("after a refused blocking Exit: %s, want live", inst.State())
	}
	callSym(t, h, m.symA())
	if err := h.Unload(ctx, "b", raceless.UnloadOptions{}); err != nil {
		t.Fatalf("unload: %v", err)
	}
}

// TestFaultPanics: a panic in a hook, in Init, in Stop and in Exit is
// recovered by the host, which survives and taints the module; unloading
// still works. A panic inside a symbol call happens in the caller's own
// code (the host only hands out the value): the caller's deferred Release
// drops the reference and nothing is tainted.
func TestFaultPanics(t *testing.T) {
	t.Run("hook", func(t *testing.T) {
		ctx := faultCtx(t)
		h := faultHost()
		m := &fmod{name: "hp", failAt: -1, hook: func() error { panic("boom in hook") }}
		other := &fmod{name: "ok", failAt: -1}
		inst, err := h.Load(ctx, fsrc(m), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Load(ctx, fsrc(other), nil); err != nil {
			t.Fatal(err)
		}
		err = h.CallHooks(ctx, "ev", nil)
		if err == nil || !strings.Contains(err.Error(), "panic") || !strings.Contains(err.Error(), "hp") {
			t.Errorf("CallHooks: %v, want an error naming the panic and the module", err)
		}
		if other.calls.Load() != 1 {
			t.Errorf("the other module's hook ran %d times, want 1", other.calls.Load())
		}
		if len(inst.Taints()) == 0 {
			t.Errorf("panicking hook did not taint its module")
		}
		c := h.NewCaller()
		if err := c.CallHooks(ctx, "ev.hp", nil); err == nil {
			t.Errorf("Caller.CallHooks: no error from a panicking hook")
		}
		c.Close()
		if err := h.Unload(ctx, "hp", raceless.UnloadOptions{}); err != nil {
			t.Fatalf("unload after hook panic: %v", err)
		}
		if err := h.Synchronize(ctx); err != nil {
			t.Fatalf("Synchronize after hook panic (read section leaked?): %v", err)
		}
	})
	t.Run("symbol-call", func(t *testing.T) {
		ctx := faultCtx(t)
		h := faultHost()
		m := &fmod{name: "sp", failAt: -1}
		inst, err := h.Load(ctx, fsrc(m), nil)
		if err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() { _ = recover() }()
			b, err := h.Acquire(raceless.KindSymbol, m.symA())
			if err != nil {
				t.Fatal(err)
			}
			defer b.Release()
			b.Value().(func() int64)()
			panic("boom in the caller, after the module's code returned")
		}()
		if inst.Refs() != 0 {
			t.Errorf("%d references after a panicking caller released", inst.Refs())
		}
		if err := h.Unload(ctx, "sp", raceless.UnloadOptions{}); err != nil {
			t.Fatalf("unload: %v", err)
		}
	})
	t.Run("init", func(t *testing.T) {
		ctx := faultCtx(t)
		h := faultHost()
		m := &fmod{name: "ip", failAt: 2, panicIn: true}
		if _, err := h.Load(ctx, fsrc(m), nil); !errors.Is(err, raceless.ErrInit) || !strings.Contains(err.Error(), "panic") {
			t.Fatalf("Load: %v, want ErrInit naming the panic", err)
		}
		if len(m.k.Instance().Taints()) == 0 {
			t.Errorf("instance not tainted")
		}
	})
	t.Run("stop-and-exit", func(t *testing.T) {
		ctx := faultCtx(t)
		h := faultHost()
		m := &fmod{name: "ep", failAt: -1,
			stop: func() { panic("boom in stop") },
			exit: func() (int, error) { panic("boom in exit") }}
		inst, err := h.Load(ctx, fsrc(m), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Unload(ctx, "ep", raceless.UnloadOptions{}); err != nil {
			t.Fatalf("unload with panicking Stop and Exit: %v", err)
		}
		if inst.State() != raceless.StateGone {
			t.Errorf("state %s, want gone", inst.State())
		}
		if got := strings.Join(inst.Taints(), "; "); !strings.Contains(got, "stop") || !strings.Contains(got, "exit") {
			t.Errorf("taints %q, want the stop and exit panics", got)
		}
		if v := visible(ctx, h, m); len(v) > 0 {
			t.Errorf("visible after unload: %v", v)
		}
		// The name is free again.
		if _, err := h.Load(ctx, fsrc(&fmod{name: "ep", failAt: -1}), nil); err != nil {
			t.Fatalf("reload: %v", err)
		}
	})
}

// TestFaultCancelWaitUnload cancels a waiting unload at random points
// while a reference is held: it must return the cancellation and leave the
// module live, with its reference, reachable; releasing then unloading works.
func TestFaultCancelWaitUnload(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ctx := faultCtx(t)
	h := faultHost()
	m := &fmod{name: "w", failAt: -1}
	inst, err := h.Load(ctx, fsrc(m), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.Acquire(raceless.KindSymbol, m.symA())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		uctx, cancel := context.WithCancel(ctx)
		timer := time.AfterFunc(time.Duration(rng.IntN(300))*time.Microsecond, cancel)
		err := h.Unload(uctx, "w", raceless.UnloadOptions{Wait: true, ProgressInterval: 50 * time.Microsecond})
		timer.Stop()
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("iteration %d: Unload: %v, want context.Canceled", i, err)
		}
		if inst.State() != raceless.StateLive || inst.Refs() != 1 {
			t.Fatalf("iteration %d: %s with %d refs, want live with 1", i, inst.State(), inst.Refs())
		}
		callSym(t, h, m.symB())
	}
	b.Release()
	if err := h.Unload(ctx, "w", raceless.UnloadOptions{}); err != nil {
		t.Fatalf("unload: %v", err)
	}
}

// TestFaultCancelSameNameWait cancels a load that waits for its name's
// previous instance to go: the load returns the cancellation, the unload
// completes when the reference is dropped, and the name loads afresh.
func TestFaultCancelSameNameWait(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	ctx := faultCtx(t)
	h := faultHost()
	for i := 0; i < 50; i++ {
		m := &fmod{name: "s", failAt: -1}
		inst, err := h.Load(ctx, fsrc(m), nil)
		if err != nil {
			t.Fatalf("iteration %d: load: %v", i, err)
		}
		b, err := h.Acquire(raceless.KindSymbol, m.symA())
		if err != nil {
			t.Fatal(err)
		}
		waiting := make(chan struct{}, 1)
		unloaded := make(chan error, 1)
		go func() {
			unloaded <- h.Unload(ctx, "s", raceless.UnloadOptions{Wait: true, ProgressInterval: time.Millisecond,
				Progress: func(raceless.Progress) {
					select {
					case waiting <- struct{}{}:
					default:
					}
				}})
		}()
		faultRecv(t, waiting, "unload waiting")
		lctx, cancel := context.WithCancel(ctx)
		timer := time.AfterFunc(time.Duration(rng.IntN(300))*time.Microsecond, cancel)
		_, err = h.Load(lctx, fsrc(&fmod{name: "s", failAt: -1}), nil)
		timer.Stop()
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("iteration %d: load of a going name: %v, want context.Canceled", i, err)
		}
		if inst.State() != raceless.StateGoing {
			t.Fatalf("iteration %d: old instance %s, want going", i, inst.State())
		}
		b.Release()
		if err := faultRecv(t, unloaded, "unload"); err != nil {
			t.Fatalf("iteration %d: unload: %v", i, err)
		}
	}
	if _, err := h.Load(ctx, fsrc(&fmod{name: "s", failAt: -1}), nil); err != nil {
		t.Fatalf("final load: %v", err)
	}
}

// fresolver resolves names and aliases of fmods built by mk.
type fresolver struct{ mk func(name string) *fmod }

func (r fresolver) Resolve(ctx context.Context, name string) (raceless.Source, error) {
	name = strings.TrimPrefix(name, "alias-")
	if m := r.mk(name); m != nil {
		return fsrc(m), nil
	}
	return nil, fmt.Errorf("%s: %w", name, raceless.ErrNotFound)
}

// TestFaultCancelDemandLoad cancels requests merged with a demand load
// whose Init is still running, at random points: each returns its
// cancellation promptly; the load itself completes; the module is live,
// marked autoclean, and later requests get it.
func TestFaultCancelDemandLoad(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	ctx := faultCtx(t)
	for i := 0; i < 30; i++ {
		gate := make(chan struct{})
		inInit := make(chan struct{})
		h := faultHost(raceless.WithResolver(fresolver{mk: func(name string) *fmod {
			if name != "d" {
				return nil
			}
			return &fmod{name: "d", failAt: -1, start: func() { close(inInit); <-gate }}
		}}))
		first := make(chan error, 1)
		go func() { _, err := h.Request(ctx, "alias-d"); first <- err }()
		faultRecv(t, inInit, "Start of the demand-loaded module")
		var wg sync.WaitGroup
		for j := 0; j < 3; j++ {
			rctx, cancel := context.WithCancel(ctx)
			timer := time.AfterFunc(time.Duration(rng.IntN(200))*time.Microsecond, cancel)
			name := []string{"d", "alias-d"}[j%2]
			wg.Go(func() {
				defer cancel()
				defer timer.Stop()
				if _, err := h.Request(rctx, name); !errors.Is(err, context.Canceled) {
					t.Errorf("iteration %d: merged Request(%s): %v, want context.Canceled", i, name, err)
				}
			})
		}
		wg.Wait()
		close(gate)
		if err := faultRecv(t, first, "first request"); err != nil {
			t.Fatalf("iteration %d: first request: %v", i, err)
		}
		inst, err := h.Request(ctx, "d")
		if err != nil || inst.State() != raceless.StateLive || !inst.Autoclean() {
			t.Fatalf("iteration %d: after: %v, %v", i, inst, err)
		}
		if _, err := h.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFaultMergedRequestKeepsOwnContext: two requests for one name are
// merged; cancelling the first must not fail the second, whose context is
// alive: it should get the module once the old instance is gone.
func TestFaultMergedRequestKeepsOwnContext(t *testing.T) {
	ctx := faultCtx(t)
	h := faultHost(raceless.WithResolver(fresolver{mk: func(name string) *fmod {
		if name != "q" {
			return nil
		}
		return &fmod{name: "q", failAt: -1}
	}}))
	if _, err := h.Request(ctx, "q"); err != nil {
		t.Fatal(err)
	}
	b, err := h.Acquire(raceless.KindSymbol, "q.a")
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{}, 1)
	unloaded := make(chan error, 1)
	go func() {
		unloaded <- h.Unload(ctx, "q", raceless.UnloadOptions{Wait: true, ProgressInterval: time.Millisecond,
			Progress: func(raceless.Progress) {
				select {
				case waiting <- struct{}{}:
				default:
				}
			}})
	}()
	faultRecv(t, waiting, "unload waiting")
	// The first request finds q going and waits for it to be gone.
	actx, cancelA := context.WithCancel(ctx)
	aDone := make(chan error, 1)
	go func() { _, err := h.Request(actx, "q"); aDone <- err }()
	// Let it reach its wait; a second request merges with it.
	for i := 0; i < 100; i++ {
		runtime.Gosched()
	}
	bDone := make(chan error, 1)
	go func() { _, err := h.Request(ctx, "q"); bDone <- err }()
	for i := 0; i < 100; i++ {
		runtime.Gosched()
	}
	cancelA()
	if err := faultRecv(t, aDone, "cancelled request"); !errors.Is(err, context.Canceled) {
		t.Errorf("first request: %v, want context.Canceled", err)
	}
	b.Release()
	if err := faultRecv(t, unloaded, "unload"); err != nil {
		t.Fatal(err)
	}
	if err := faultRecv(t, bDone, "second request"); err != nil {
		t.Errorf("second request, whose context is alive, failed with the first one's cancellation: %v", err)
	}
}

// TestFaultSameNameLoadWokenWhenUnloadRefused: a load of a name that is
// going waits; when the unload is refused (here: a cancelled wait) and the
// module is live again, the load must wake and report ErrExists.
func TestFaultSameNameLoadWokenWhenUnloadRefused(t *testing.T) {
	ctx := faultCtx(t)
	h := faultHost()
	m := &fmod{name: "n", failAt: -1}
	inst, err := h.Load(ctx, fsrc(m), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.Acquire(raceless.KindSymbol, m.symA())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	uctx, cancelU := context.WithCancel(ctx)
	waiting := make(chan struct{}, 1)
	unloaded := make(chan error, 1)
	go func() {
		unloaded <- h.Unload(uctx, "n", raceless.UnloadOptions{Wait: true, ProgressInterval: time.Millisecond,
			Progress: func(raceless.Progress) {
				select {
				case waiting <- struct{}{}:
				default:
				}
			}})
	}()
	faultRecv(t, waiting, "unload waiting")
	lctx, cancelL := context.WithTimeout(ctx, 2*time.Second)
	defer cancelL()
	loaded := make(chan error, 1)
	go func() { _, err := h.Load(lctx, fsrc(&fmod{name: "n", failAt: -1}), nil); loaded <- err }()
	for i := 0; i < 100; i++ { // let the load reach its wait (either order is correct)
		runtime.Gosched()
	}
	cancelU()
	if err := faultRecv(t, unloaded, "unload"); !errors.Is(err, context.Canceled) {
		t.Fatalf("unload: %v, want context.Canceled", err)
	}
	if inst.State() != raceless.StateLive {
		t.Fatalf("after the cancelled unload: %s", inst.State())
	}
	if err := faultRecv(t, loaded, "load"); !errors.Is(err, raceless.ErrExists) {
		t.Errorf("load waiting for a going name that went live again: %v, want ErrExists (never woken?)", err)
	}
}

// TestFaultNoRegistrationAfterUnloadRace unloads a module the instant it
// goes live, many times: when the unload succeeds nothing of the module
// may stay published (its Exit has run).
func TestFaultNoRegistrationAfterUnloadRace(t *testing.T) {
	ctx := faultCtx(t)
	h := faultHost()
	stale := 0
	// The window is a few instructions wide: try for a few seconds and
	// stop at the first stale registration.
	end := time.Now().Add(4 * time.Second)
	iterations := 0
	for ; stale == 0 && time.Now().Before(end); iterations++ {
		m := &fmod{name: "u", failAt: -1}
		coming := make(chan *raceless.Instance, 1)
		cancelSub := h.Subscribe(func(e raceless.Event) {
			if e.State == raceless.StateComing {
				coming <- e.Instance
			}
		})
		unloaded := make(chan error, 1)
		go func() {
			<-coming
			// Hammer Unload (it takes the host's lock) until the module
			// is no longer coming: the first attempt after it went live
			// wins the race with the rest of the load.
			for {
				err := h.Unload(ctx, "u", raceless.UnloadOptions{})
				var be *raceless.BusyError
				if errors.As(err, &be) && strings.Contains(be.Reason, "coming") {
					continue
				}
				unloaded <- err
				return
			}
		}()
		_, lerr := h.Load(ctx, fsrc(m), nil)
		uerr := faultRecv(t, unloaded, "unload")
		cancelSub()
		if lerr != nil {
			t.Fatalf("load: %v", lerr)
		}
		if uerr != nil {
			// Lost the race: unload it now.
			if err := h.Unload(ctx, "u", raceless.UnloadOptions{}); err != nil {
				t.Fatalf("unload: %v", err)
			}
		}
		if v := visible(ctx, h, m); len(v) > 0 {
			stale++
			t.Errorf("iteration %d: after a successful unload (Exit ran) the host still shows %v", iterations, v)
		}
	}
	t.Logf("%d iterations", iterations)
}

// TestFaultReplaceUndoAfterNewInstanceUnloaded: while a hot swap waits for
// the old instance's references, the new instance is live under the name.
// An Unload of the name must then be refused (the replacement is in
// progress), and when the swap is undone (its ctx ends) the old instance
// must come back — never a panic inside the host.
func TestFaultReplaceUndoAfterNewInstanceUnloaded(t *testing.T) {
	ctx := faultCtx(t)
	h := faultHost()
	old := &fmod{name: "x", failAt: -1}
	oldInst, err := h.Load(ctx, fsrc(old), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.Acquire(raceless.KindSymbol, old.symA()) // keeps the swap waiting
	if err != nil {
		t.Fatal(err)
	}
	live := make(chan *raceless.Instance, 1)
	cancelSub := h.Subscribe(func(e raceless.Event) {
		if e.State == raceless.StateLive && e.Instance != oldInst {
			select {
			case live <- e.Instance:
			default:
			}
		}
	})
	defer cancelSub()
	type result struct {
		inst  *raceless.Instance
		err   error
		panic any
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() { r.panic = recover(); done <- r }()
		r.inst, r.err = h.Replace(rctx, "x", fsrc(&fmod{name: "x", failAt: -1}), nil, raceless.ReplaceOptions{})
	}()
	newInst := faultRecv(t, live, "the new instance going live")
	uerr := h.Unload(ctx, "x", raceless.UnloadOptions{})
	if uerr == nil {
		t.Errorf("Unload of the name during a hot swap unloaded the new instance (%s)", newInst.State())
	}
	cancel()
	r := faultRecv(t, done, "Replace")
	if r.panic != nil {
		b.Release()
		t.Fatalf("Replace panicked while undoing the swap: %v (the host's lock is left held)", r.panic)
	}
	if !errors.Is(r.err, context.Canceled) {
		t.Errorf("Replace: %v, want context.Canceled", r.err)
	}
	if oldInst.State() != raceless.StateLive {
		t.Errorf("old instance %s after the undone swap, want live", oldInst.State())
	}
	callSym(t, h, old.symB())
	b.Release()
	if err := h.Unload(ctx, "x", raceless.UnloadOptions{}); err != nil {
		t.Fatalf("unload: %v", err)
	}
}

// TestFaultReplaceUndoHonoursContext: when a hot swap is undone because
// its ctx ended, Replace must return; it must not wait, with no deadline,
// for references someone holds on the new instance (a Binding here; a
// mount of its filesystem would hold one indefinitely).
func TestFaultReplaceUndoHonoursContext(t *testing.T) {
	ctx := faultCtx(t)
	h := faultHost()
	old := &fmod{name: "y", failAt: -1}
	oldInst, err := h.Load(ctx, fsrc(old), nil)
	if err != nil {
		t.Fatal(err)
	}
	bOld, err := h.Acquire(raceless.KindSymbol, old.symA()) // keeps the swap waiting
	if err != nil {
		t.Fatal(err)
	}
	live := make(chan *raceless.Instance, 1)
	cancelSub := h.Subscribe(func(e raceless.Event) {
		if e.State == raceless.StateLive && e.Instance != oldInst {
			select {
			case live <- e.Instance:
			default:
			}
		}
	})
	defer cancelSub()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := h.Replace(rctx, "y", fsrc(&fmod{name: "y", failAt: -1}), nil, raceless.ReplaceOptions{})
		done <- err
	}()
	newInst := faultRecv(t, live, "the new instance going live")
	bNew, err := h.Acquire(raceless.KindSymbol, old.symA())
	if err != nil {
		t.Fatalf("acquire on the new instance: %v", err)
	}
	if bNew.Owner() != newInst {
		bNew.Release()
		t.Fatalf("acquire after the new instance went live: owner %v, want the new instance %v", bNew.Owner(), newInst)
	}
	cancel()
	timer := time.NewTimer(2 * time.Second)
	defer timer.Stop()
	returned := false
	select {
	case err := <-done:
		returned = true
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Replace: %v, want context.Canceled", err)
		}
	case <-timer.C:
		t.Errorf("Replace did not return 2s after its ctx ended: the undo waits, without a deadline, for the new instance's references")
	}
	bNew.Release()
	if !returned {
		if err := faultRecv(t, done, "Replace after the release"); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Replace: %v", err)
		}
	}
	bOld.Release()
	if oldInst.State() != raceless.StateLive {
		t.Errorf("old instance %s after the undone swap, want live", oldInst.State())
	}
}
