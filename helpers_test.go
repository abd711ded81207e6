package raceless

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testModule is a native module whose every lifecycle point is a hook.
type testModule struct {
	init   func(k *Kernel) error
	exit   func() (int, error)
	start  func()
	stop   func()
	exited atomic.Bool // poisoned: set when Exit succeeded
	inits  atomic.Int32
	exits  atomic.Int32
}

func (t *testModule) Init(k *Kernel) error {
	t.inits.Add(1)
	if t.init != nil {
		return t.init(k)
	}
	return nil
}

func (t *testModule) Exit() (int, error) {
	t.exits.Add(1)
	if t.exit != nil {
		busy, err := t.exit()
		if busy == 0 && err == nil {
			t.exited.Store(true)
		}
		return busy, err
	}
	t.exited.Store(true)
	return 0, nil
}

func (t *testModule) Start() {
	if t.start != nil {
		t.start()
	}
}

func (t *testModule) Stop() {
	if t.stop != nil {
		t.stop()
	}
}

// src returns a Source that hands out mod for every load.
func src(name string, mod Module, deps ...string) Source {
	return Native(Info{Name: name, Depends: deps}, func() Module { return mod })
}

func quietHost(t testing.TB, opts ...Option) *Host {
	t.Helper()
	opts = append([]Option{WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)
	return New(opts...)
}

// deadline returns a context that fails the test loudly if a wait hangs.
func deadline(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor receives from c or fails the test after 10 s.
func waitFor[T any](t testing.TB, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// mustLoad loads or fails the test.
func mustLoad(t testing.TB, h *Host, s Source) *Instance {
	t.Helper()
	m, err := h.Load(deadline(t), s, nil)
	if err != nil {
		t.Fatalf("load %s: %v", s.Info().Name, err)
	}
	return m
}

// gate is a one-shot rendezvous: the parked side calls park, the test
// calls reached then release.
type gate struct {
	arrived, resume chan struct{}
	once            sync.Once
}

func newGate() *gate { return &gate{arrived: make(chan struct{}), resume: make(chan struct{})} }

// park signals arrival and blocks until released (only the first caller).
func (g *gate) park() {
	first := false
	g.once.Do(func() { first = true })
	if !first {
		return
	}
	close(g.arrived)
	<-g.resume
}

func (g *gate) reached(t testing.TB) { waitFor(t, g.arrived, "gate") }
func (g *gate) release()             { close(g.resume) }

// parkedCall runs call on a new goroutine and returns once the call has
// reached g (parked inside the module); the channel gets call's error
// after g.release.
func parkedCall(t testing.TB, g *gate, call func() ([]uint64, error)) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := call()
		done <- err
	}()
	g.reached(t)
	return done
}

func runtimeGosched() { runtime.Gosched() }

// hammer runs f in a loop on n goroutines until the returned stop is
// called; stop waits for them.
func hammer(n int, f func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				f()
			}
		}()
	}
	return func() { close(done); wg.Wait() }
}
