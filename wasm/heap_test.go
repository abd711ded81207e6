package wasm_test

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
)

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestUnloadFrees loads and unloads a Go-built module many times and checks
// that the host's heap does not grow: unloading frees the instance (its
// linear memory) and the compiled code: 1000 cycles (about a minute on two
// cores), 20 under the race detector or -short, where a cycle costs ten
// times as much. `raceless bench wasm` reports the same measure.
func TestUnloadFrees(t *testing.T) {
	cycles := 1000
	if raceEnabled || testing.Short() {
		cycles = 20
	}
	e, load, unload := providerCycle(t)
	cycle := func() {
		load()
		if r, err := e.call("add", 1, 2); err != nil || r[0] != 3 {
			t.Fatalf("add: %v %v", r, err)
		}
		unload()
	}
	for range 5 { // warm up: caches, pools
		cycle()
	}
	before := heapInUse()
	start := time.Now()
	for range cycles {
		cycle()
	}
	d := time.Since(start)
	after := heapInUse()
	growth := int64(after) - int64(before)
	t.Logf("%d cycles in %v (%v each): heap %d -> %d bytes (growth %d)", cycles, d, d/time.Duration(cycles), before, after, growth)
	// A leaked instance is its linear memory: several MiB for a Go guest.
	// 8 MiB over all cycles is generous for caches yet far below one leak
	// per cycle.
	if growth > 8<<20 {
		t.Fatalf("heap grew by %d bytes over %d cycles", growth, cycles)
	}
}

// TestStaleHandleFreesInstance: a Handle (or a Func a caller kept) that
// outlives its owner pins no guest memory: teardown drops every reference
// the instance holds into wazero, so what stays reachable is a small
// tombstone that fails every call.
func TestStaleHandleFreesInstance(t *testing.T) {
	e, load, unload := providerCycle(t)
	ctx := context.Background()
	load() // warm up: caches, pools
	unload()
	before := heapInUse()
	load()
	m, _ := e.h.Module("provider")
	memory := m.Size()
	add := e.h.Handle("add")
	if r, err := add.Call(ctx, []uint64{1, 2}); err != nil || r[0] != 3 {
		t.Fatalf("add: %v %v", r, err)
	}
	b, err := e.h.Acquire(raceless.KindSymbol, "mul")
	if err != nil {
		t.Fatal(err)
	}
	mul := b.Value().(raceless.Func)
	b.Release()
	unload()
	growth := int64(heapInUse()) - int64(before)
	t.Logf("guest memory %d bytes; heap growth with a stale Handle and Func held: %d bytes", memory, growth)
	if growth > memory/4 {
		t.Fatalf("heap grew by %d bytes after unload (guest memory was %d): the stale Handle pins the instance", growth, memory)
	}
	if _, err := mul(ctx, []uint64{2, 3}); !errors.Is(err, raceless.ErrGone) {
		t.Fatalf("stale Func: %v, want ErrGone", err)
	}
	runtime.KeepAlive(add)
}

// providerCycle returns an env with the provider example opened, and
// functions that load and unload it (failing the test on an error).
func providerCycle(t *testing.T) (e *env, load, unload func()) {
	e = newEnv(t, wasmConfig())
	src, err := e.l.Open(wasmtest.Build(t, wasmtest.Provider))
	if err != nil {
		t.Fatal(err)
	}
	load = func() {
		if _, err := e.h.Load(context.Background(), src, nil); err != nil {
			t.Fatal(err)
		}
	}
	unload = func() {
		if err := e.h.Unload(context.Background(), "provider", raceless.UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return e, load, unload
}
