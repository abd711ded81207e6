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
	"math"
	"os"
	"runtime"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
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
// of Results, to w. Results: raw_wazero_call (default runtime settings),
// raw_wazero_call_close_on_ctx_done (RuntimeConfig.WithCloseOnContextDone,
// the usual way to make wazero calls interruptible), protected_call and
// raw_wazero_call_interleaved (ns: the best of rounds alternating the
// two), protected_over_raw (their ratio), load_cold, load_warm, unload
// (ms), heap_growth_after_N_cycles (bytes), cycle (ms).
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

	// Raw wazero: the same export on a runtime with default settings (the
	// honest baseline: a plain, uninterruptible call), and on one with
	// CloseOnContextDone, which makes wazero start a goroutine per call
	// to watch its context (for comparison; the loader does not use it).
	// The default one stays up: it is measured again, interleaved with
	// the protected call, below.
	raw, err := newRawCall(ctx, path, false)
	if err != nil {
		return nil, err
	}
	defer raw.close()
	rawNs, err := raw.measure(opts.Calls)
	if err != nil {
		return nil, err
	}
	add("raw_wazero_call", rawNs, "ns")
	rawCtx, err := newRawCall(ctx, path, true)
	if err != nil {
		return nil, err
	}
	ns, err := rawCtx.measure(opts.Calls)
	rawCtx.close()
	if err != nil {
		return nil, err
	}
	add("raw_wazero_call_close_on_ctx_done", ns, "ns")

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
	// The ratio is of the best of a few interleaved rounds of each, so
	// that a burst of load on the machine (a 2-core CI box) hits both.
	const rounds = 5
	prot, rawBest := math.Inf(1), math.Inf(1)
	for range rounds {
		n := max(opts.Calls/rounds, 1)
		t0 = time.Now()
		for range n {
			if err := call(); err != nil {
				return nil, err
			}
		}
		prot = min(prot, float64(time.Since(t0).Nanoseconds())/float64(n))
		ns, err := raw.measure(n)
		if err != nil {
			return nil, err
		}
		rawBest = min(rawBest, ns)
	}
	add("protected_call", prot, "ns")
	add("raw_wazero_call_interleaved", rawBest, "ns")
	add("protected_over_raw", prot/rawBest, "x")
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

// rawCall is api.Function.Call of the export "add" on a bare wazero
// runtime (with CloseOnContextDone if deadline), the host module stubbed,
// the module not instrumented, called with context.Background.
type rawCall struct {
	ctx context.Context
	rt  wazero.Runtime
	f   api.Function
}

func newRawCall(ctx context.Context, path string, deadline bool) (*rawCall, error) {
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(deadline))
	r := &rawCall{ctx: ctx, rt: rt}
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
		r.close()
		return nil, err
	}
	m, err := rt.InstantiateWithConfig(ctx, bin, wazero.NewModuleConfig().WithStartFunctions("_initialize"))
	if err != nil {
		r.close()
		return nil, err
	}
	if r.f = m.ExportedFunction("add"); r.f == nil {
		r.close()
		return nil, fmt.Errorf("%s: no export add", path)
	}
	if _, err := r.measure(1000); err != nil { // warm up
		r.close()
		return nil, err
	}
	return r, nil
}

// measure returns the mean time of n calls, in ns.
func (r *rawCall) measure(n int) (float64, error) {
	bg := context.Background()
	t0 := time.Now()
	for range n {
		if _, err := r.f.Call(bg, 1, 2); err != nil {
			return 0, err
		}
	}
	return float64(time.Since(t0).Nanoseconds()) / float64(n), nil
}

func (r *rawCall) close() { _ = r.rt.Close(context.WithoutCancel(r.ctx)) }
