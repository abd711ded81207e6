// Package wasmbench measures the wasm loader: a protected call into a wasm
// export (Host.Symbol -> Binding -> raceless.Func) against a raw wazero
// call of the same export, load latency with a cold and a warm compilation
// cache, unload latency, and the host's heap after many load/unload cycles.
// It is run by `raceless bench wasm [--json]`.
package wasmbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm"
	"github.com/raceless/raceless/wasm/wasmtest"
)

// Options sets the counts. Zero values mean the defaults.
type Options struct {
	Calls  int // calls per call benchmark (default 200000)
	Cycles int // load/unload cycles for the heap measurement (default 1000)
	Loads  int // loads averaged for load_warm and unload (default 20)
	// Module is the path of a built provider module; empty builds
	// examples/wasm/provider with the Go toolchain (cached).
	Module string
}

// Result is one measurement.
type Result struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Run runs the benchmarks and writes a table, or with jsonOut a JSON list
// of Results, to w. Results: raw_wazero_call, raw_wazero_call_no_deadline,
// protected_call (ns), protected_over_raw (ratio), load_cold, load_warm,
// unload (ms), heap_growth_after_N_cycles (bytes), cycle (ms).
func Run(ctx context.Context, w io.Writer, jsonOut bool, opts Options) error {
	res, err := Measure(ctx, opts)
	if err != nil {
		return err
	}
	if jsonOut {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	for _, r := range res {
		fmt.Fprintf(w, "%-32s %14.2f %s\n", r.Name, r.Value, r.Unit)
	}
	return nil
}

// Measure runs the benchmarks and returns the results.
func Measure(ctx context.Context, opts Options) ([]Result, error) {
	if opts.Calls <= 0 {
		opts.Calls = 200000
	}
	if opts.Cycles <= 0 {
		opts.Cycles = 1000
	}
	if opts.Loads <= 0 {
		opts.Loads = 20
	}
	path := opts.Module
	if path == "" {
		p, err := wasmtest.BuildCached(ctx, wasmtest.Provider)
		if err != nil {
			return nil, err
		}
		path = p
	}
	cache, err := os.MkdirTemp("", "raceless-wasmbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(cache)
	var out []Result
	add := func(name string, v float64, unit string) { out = append(out, Result{name, v, unit}) }
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }

	// Raw wazero: the same export, on a runtime configured as the
	// loader's (deadlines make wazero watch every call) and on a default
	// one.
	for _, c := range []struct {
		name     string
		deadline bool
	}{{"raw_wazero_call", true}, {"raw_wazero_call_no_deadline", false}} {
		ns, err := rawCall(ctx, path, c.deadline, opts.Calls)
		if err != nil {
			return nil, err
		}
		add(c.name, ns, "ns")
	}

	h := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer h.Shutdown(context.WithoutCancel(ctx))

	// Cold load: an empty cache; warm: a new Loader (new runtime) on the
	// filled cache, as a second process would see it.
	cold, err := wasm.NewLoader(ctx, wasm.Config{CacheDir: cache})
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := loadOnce(ctx, h, cold, path); err != nil {
		return nil, err
	}
	add("load_cold", ms(time.Since(t0)), "ms")
	if err := h.Unload(ctx, "provider", raceless.UnloadOptions{}); err != nil {
		return nil, err
	}
	_ = cold.Close(ctx)

	l, err := wasm.NewLoader(ctx, wasm.Config{CacheDir: cache})
	if err != nil {
		return nil, err
	}
	defer l.Close(context.WithoutCancel(ctx))
	var loadT, unloadT time.Duration
	for range opts.Loads {
		t0 := time.Now()
		if err := loadOnce(ctx, h, l, path); err != nil {
			return nil, err
		}
		t1 := time.Now()
		if err := h.Unload(ctx, "provider", raceless.UnloadOptions{}); err != nil {
			return nil, err
		}
		loadT += t1.Sub(t0)
		unloadT += time.Since(t1)
	}
	add("load_warm", ms(loadT/time.Duration(opts.Loads)), "ms")
	add("unload", ms(unloadT/time.Duration(opts.Loads)), "ms")

	// Protected call: Symbol (takes the owner's reference), call, Release.
	if err := loadOnce(ctx, h, l, path); err != nil {
		return nil, err
	}
	call := func() error {
		b, err := h.Symbol("add")
		if err != nil {
			return err
		}
		r, err := b.Value.(raceless.Func)(ctx, 1, 2)
		b.Release()
		if err == nil && r[0] != 3 {
			err = fmt.Errorf("add(1, 2) = %d", r[0])
		}
		return err
	}
	for range 1000 {
		if err := call(); err != nil {
			return nil, err
		}
	}
	t0 = time.Now()
	for range opts.Calls {
		if err := call(); err != nil {
			return nil, err
		}
	}
	prot := float64(time.Since(t0).Nanoseconds()) / float64(opts.Calls)
	add("protected_call", prot, "ns")
	add("protected_over_raw", prot/out[0].Value, "x")
	if err := h.Unload(ctx, "provider", raceless.UnloadOptions{}); err != nil {
		return nil, err
	}

	// Heap after load/unload cycles.
	before := heap()
	t0 = time.Now()
	for range opts.Cycles {
		if err := loadOnce(ctx, h, l, path); err != nil {
			return nil, err
		}
		if err := h.Unload(ctx, "provider", raceless.UnloadOptions{}); err != nil {
			return nil, err
		}
	}
	cycleT := time.Since(t0)
	add(fmt.Sprintf("heap_growth_after_%d_cycles", opts.Cycles), float64(int64(heap())-int64(before)), "bytes")
	add("cycle", ms(cycleT/time.Duration(opts.Cycles)), "ms")
	return out, nil
}

func loadOnce(ctx context.Context, h *raceless.Host, l *wasm.Loader, path string) error {
	src, err := l.Open(path)
	if err != nil {
		return err
	}
	_, err = h.Load(ctx, src, nil)
	return err
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// rawCall measures api.Function.Call of the export "add" on a bare wazero
// runtime, the host module stubbed.
func rawCall(ctx context.Context, path string, deadline bool, n int) (float64, error) {
	bin, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(deadline))
	defer rt.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	b := rt.NewHostModuleBuilder(wasm.HostModule)
	b.NewFunctionBuilder().WithFunc(func(int32, uint32, uint32) {}).Export("log")
	b.NewFunctionBuilder().WithFunc(func(uint32, uint32) {}).Export("set_error")
	b.NewFunctionBuilder().WithFunc(func(uint32, uint32, uint32, uint32) int32 { return -2 }).Export("param")
	for _, name := range []string{"export", "import", "request"} {
		b.NewFunctionBuilder().WithFunc(func(uint32, uint32) int32 { return 0 }).Export(name)
	}
	b.NewFunctionBuilder().WithFunc(func(int32, uint32, uint32, uint32, uint32) int32 { return -22 }).Export("call")
	b.NewFunctionBuilder().WithFunc(func(uint32, uint32, uint32) int32 { return 0 }).Export("hook")
	if _, err := b.Instantiate(ctx); err != nil {
		return 0, err
	}
	m, err := rt.InstantiateWithConfig(ctx, bin, wazero.NewModuleConfig().WithStartFunctions("_initialize"))
	if err != nil {
		return 0, err
	}
	f := m.ExportedFunction("add")
	if f == nil {
		return 0, fmt.Errorf("%s: no export add", path)
	}
	bg := context.Background()
	for range 1000 {
		if _, err := f.Call(bg, 1, 2); err != nil {
			return 0, err
		}
	}
	t0 := time.Now()
	for range n {
		if _, err := f.Call(bg, 1, 2); err != nil {
			return 0, err
		}
	}
	return float64(time.Since(t0).Nanoseconds()) / float64(n), nil
}
