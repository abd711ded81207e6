package wasm_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm"
)

func quiet() *raceless.Host {
	return raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
}

// TestCompileOutsideLoaderLock: while one binary compiles, the Loader goes
// on (another binary loads, the watchdog ticks), and a second load of the
// same binary waits for that compilation instead of compiling it again.
func TestCompileOutsideLoaderLock(t *testing.T) {
	ctx := context.Background()
	cfg := wasm.Config{CallTimeout: 80 * time.Millisecond} // a 10 ms tick
	l, err := wasm.NewLoader(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	a, err := l.OpenBytes("/virtual/a.wasm", tinyWithInfo(wasmtest.TinyOptions{}, "a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.OpenBytes("/virtual/b.wasm", tinyWithInfo(wasmtest.TinyOptions{ExitCode: 0}, "b"))
	if err != nil {
		t.Fatal(err)
	}
	aSum := a.Key()[len(a.Key())-64:]
	entered, release := make(chan struct{}, 4), make(chan struct{})
	var mu sync.Mutex
	compiles := map[string]int{}
	wasm.SetCompileHook(l, func(sum string) {
		mu.Lock()
		compiles[sum]++
		mu.Unlock()
		if sum == aSum {
			entered <- struct{}{}
			<-release
		}
	})
	h1, h2, h3 := quiet(), quiet(), quiet()
	defer h1.Shutdown(ctx)
	defer h2.Shutdown(ctx)
	defer h3.Shutdown(ctx)
	loaded := make(chan error, 2)
	go func() { _, err := h1.Load(ctx, a, nil); loaded <- err }()
	waitFor(t, entered, "compilation of a")
	go func() { _, err := h2.Load(ctx, a, nil); loaded <- err }()

	// Meanwhile: another binary loads and unloads, and the watchdog ticks.
	if _, err := h3.Load(ctx, b, nil); err != nil {
		t.Fatalf("load b during a's compilation: %v", err)
	}
	if err := h3.Unload(ctx, "b", raceless.UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	t0, deadline := wasm.Tick(l), time.Now().Add(time.Minute)
	for wasm.Tick(l) < t0+2 {
		if time.Now().After(deadline) {
			t.Fatal("the watchdog does not tick during a compilation")
		}
		runtime.Gosched()
	}

	close(release)
	for range 2 {
		if err := waitFor(t, loaded, "load of a"); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if compiles[aSum] != 1 {
		t.Fatalf("a compiled %d times, want 1 (single flight)", compiles[aSum])
	}
}

// TestInstrumentedCache: a Loader with a CacheDir keeps the instrumented
// binary there; a later Loader reads it, and one that finds it damaged
// instruments afresh and replaces it.
func TestInstrumentedCache(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bin := tinyWithInfo(wasmtest.TinyOptions{}, "tiny")
	want, err := wasm.Instrument(bin)
	if err != nil {
		t.Fatal(err)
	}
	load := func() (path string) {
		t.Helper()
		l, err := wasm.NewLoader(ctx, wasm.Config{CacheDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close(ctx)
		src, err := l.OpenBytes("/virtual/tiny.wasm", bin)
		if err != nil {
			t.Fatal(err)
		}
		h := quiet()
		defer h.Shutdown(ctx)
		if _, err := h.Load(ctx, src, nil); err != nil {
			t.Fatal(err)
		}
		return wasm.InstrumentedPath(l, src)
	}
	path := load()
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("cached instrumented binary: %v (equal: %v)", err, bytes.Equal(got, want))
	}
	if err := os.WriteFile(path, []byte("\x00asm damaged"), 0o600); err != nil {
		t.Fatal(err)
	}
	load()
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("damaged cache file not replaced: %v", err)
	}
}

// TestSizeFollowsMemory: a module's size (lsmod's) follows its linear
// memory as the guest grows it.
func TestSizeFollowsMemory(t *testing.T) {
	e := newEnv(t, wasmConfig())
	m := e.mustLoad(wasmtest.Misbehave, nil)
	before := m.Size()
	if _, err := e.call("eat", 8); err != nil {
		t.Fatalf("eat 8 MiB: %v", err)
	}
	if grown := m.Size() - before; grown < 8<<20 {
		t.Fatalf("size grew by %d bytes after the guest allocated 8 MiB", grown)
	}
}

// waitFor receives from c or fails the test after a minute.
func waitFor[T any](t testing.TB, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(time.Minute):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}
