package wasm_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm"
)

// checkFault checks that err is a call error naming the module and
// matching want, that the module is tainted, that further calls are
// refused, that other modules go on and that it can still be unloaded.
func checkFault(t *testing.T, e *env, err error, want error, text string) {
	t.Helper()
	if !errors.Is(err, want) || !strings.Contains(err.Error(), "misbehave") || !strings.Contains(err.Error(), text) {
		t.Fatalf("got %v, want %v mentioning misbehave and %q", err, want, text)
	}
	m, _ := e.h.Module("misbehave")
	if len(m.Taints()) == 0 {
		t.Fatal("module not tainted")
	}
	if _, err := e.call("echo", 1); !errors.Is(err, wasm.ErrAborted) {
		t.Fatalf("call after fault: %v", err)
	}
	if r, err := e.call("add", 1, 2); err != nil || r[0] != 3 {
		t.Fatalf("other module after fault: %v %v", r, err)
	}
	if err := e.h.Unload(context.Background(), "misbehave", raceless.UnloadOptions{}); err != nil {
		t.Fatalf("unload after fault: %v", err)
	}
}

func TestGuestPanic(t *testing.T) {
	e := newEnv(t, wasmConfig())
	e.mustLoad(wasmtest.Provider, nil)
	for _, sym := range []string{"boom", "nilderef"} {
		e.mustLoad(wasmtest.Misbehave, nil)
		_, err := e.call(sym)
		text := "boom on request"
		if sym == "nilderef" {
			text = "nil pointer"
		}
		checkFault(t, e, err, wasm.ErrTrap, text)
	}
}

func TestCallDeadline(t *testing.T) {
	cfg := wasmConfig()
	cfg.CallTimeout = 300 * time.Millisecond
	e := newEnv(t, cfg)
	e.mustLoad(wasmtest.Provider, nil)
	e.mustLoad(wasmtest.Misbehave, nil)
	start := time.Now()
	_, err := e.call("spin")
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("spin returned after %v", d)
	}
	checkFault(t, e, err, wasm.ErrLimit, "deadline")
}

// TestCallDeadlineDuringGC: a garbage collection that starts while a guest
// spins must not wait for it forever. Native code cannot be preempted, so
// without the loader's periodic yield the collection's stop-the-world would
// stop the watchdog too, and this test would hang until go test's timeout.
func TestCallDeadlineDuringGC(t *testing.T) {
	cfg := wasmConfig()
	cfg.CallTimeout = 300 * time.Millisecond
	e := newEnv(t, cfg)
	e.mustLoad(wasmtest.Provider, nil)
	e.mustLoad(wasmtest.Misbehave, nil)
	stop := make(chan struct{})
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
			}
		}
	}()
	_, err := e.call("spin")
	close(stop)
	<-gcDone
	checkFault(t, e, err, wasm.ErrLimit, "deadline")
}

// TestCallerContext: a caller's context with a deadline (or already
// cancelled) neither breaks nor cancels a call: only the loader's
// deadlines and unloads stop guest code.
func TestCallerContext(t *testing.T) {
	e := newEnv(t, wasmConfig())
	e.mustLoad(wasmtest.Provider, nil)
	b, err := e.h.Acquire(raceless.KindSymbol, "add")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if r, err := b.Value().(raceless.Func)(ctx, []uint64{2, 3}); err != nil || r[0] != 5 {
		t.Fatalf("add with a deadline: %v %v", r, err)
	}
	cancel()
	if r, err := b.Value().(raceless.Func)(ctx, []uint64{2, 3}); err != nil || r[0] != 5 {
		t.Fatalf("add with a cancelled context: %v %v", r, err)
	}
}

// TestModuleMemoryLimit: one module's own limit, below the Loader's; the
// other modules of the Loader are not bound by it.
func TestModuleMemoryLimit(t *testing.T) {
	e := newEnv(t, wasmConfig())
	e.mustLoad(wasmtest.Provider, nil)
	src, err := e.l.Open(wasmtest.Build(t, wasmtest.Misbehave))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.h.Load(context.Background(), src.WithMemoryLimit(512), nil); err != nil { // 32 MiB
		t.Fatal(err)
	}
	if _, err := e.call("eat", 8); err != nil {
		t.Fatalf("eat 8 MiB: %v", err)
	}
	_, err = e.call("eat", 64)
	checkFault(t, e, err, wasm.ErrLimit, "memory")
}

func TestMemoryLimit(t *testing.T) {
	cfg := wasmConfig()
	cfg.MemoryLimitPages = 1024 // 64 MiB
	e := newEnv(t, cfg)
	e.mustLoad(wasmtest.Provider, nil)
	e.mustLoad(wasmtest.Misbehave, nil)
	if _, err := e.call("eat", 8); err != nil {
		t.Fatalf("eat 8 MiB: %v", err)
	}
	_, err := e.call("eat", 128)
	checkFault(t, e, err, wasm.ErrLimit, "memory")
}

// TestForcedUnload unloads a module with calls in flight (spinning) and
// queued: every one fails with ErrGone, and no call runs afterwards.
func TestForcedUnload(t *testing.T) {
	cfg := wasmConfig()
	cfg.CallTimeout = time.Minute
	e := newEnv(t, cfg)
	m := e.mustLoad(wasmtest.Misbehave, nil)
	const n = 4
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		b, err := e.h.Acquire(raceless.KindSymbol, "spin")
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer b.Release()
			_, err := b.Value().(raceless.Func)(context.Background(), nil)
			errs <- err
		}()
	}
	if m.Refs() < n {
		t.Fatalf("refs %d", m.Refs())
	}
	if err := e.h.Unload(context.Background(), "misbehave", raceless.UnloadOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, raceless.ErrGone) {
			t.Fatalf("in-flight call: %v", err)
		}
	}
	if len(e.h.Taints()) == 0 {
		t.Fatal("forced unload did not taint the host")
	}
}

// TestHammer calls symbols from several goroutines while a consumer is
// loaded and unloaded.
func TestHammer(t *testing.T) {
	e := newEnv(t, wasmConfig())
	e.mustLoad(wasmtest.Provider, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(0); ctx.Err() == nil; i++ {
				r, err := e.call("add", i, uint64(g))
				if err != nil || r[0] != i+uint64(g) {
					t.Errorf("add: %v %v", r, err)
					return
				}
				if r, err := e.call("sum3", 1, 2, 3); err == nil && r[0] != 6 {
					t.Errorf("sum3 = %v", r)
					return
				}
			}
		}()
	}
	for range 3 {
		e.mustLoad(wasmtest.Consumer, nil)
		if err := e.h.Unload(context.Background(), "consumer", raceless.UnloadOptions{Wait: true}); err != nil {
			t.Error(err)
		}
	}
	cancel()
	wg.Wait()
}
