// Package wasmcalls measures the wasm loader: a protected call into a wasm
// export (through a raceless.Handle, and by name through Host.Acquire)
// against a raw wazero call of the same export, load latency with a cold and a warm compilation
// cache, unload latency, and the host's heap after many load/unload cycles.
// It is run by `raceless bench wasm [--json]`.
package wasmcalls

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm"
)

// Options sets the counts. Zero values mean the defaults.
type Options struct {
	Calls  int // calls per call benchmark (default 1000000)
	Cycles int // load/unload cycles for the heap measurement (default 1000)
	Loads  int // loads averaged for load_warm and unload (default 20)
	// Module is the path of a built provider module; empty builds
	// examples/wasm/provider with the Go toolchain (cached).
	Module string
}

// Quick returns options for a smoke run: every benchmark, each with a tiny
// budget (the figures mean nothing). The CLI's "bench wasm --quick" uses
// them.
func Quick() Options { return Options{Calls: 200, Cycles: 3, Loads: 2} }

// Result is one measurement.
type Result struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Run runs the benchmarks and writes a table, or with jsonOut a JSON list
// of Results, to w. Results, calls in ns: raw_wazero_call
// (api.Function.Call on a runtime with default settings),
// raw_wazero_call_with_stack (api.Function.CallWithStack, reusing one
// stack: the floor), raw_wazero_call_close_on_ctx_done
// (RuntimeConfig.WithCloseOnContextDone, the usual way to make wazero
// calls interruptible), protected_call (Caller.Call: the owner's
// reference held in the goroutine's Caller for the call),
// protected_call_handle (Handle.Call: the reference on the owner's shared
// counter), protected_call_by_name (Host.Acquire, the Func,
// Binding.Release); the breakdown of protected_call over the floor:
// raw_call_with_stack_fresh_stack (CallWithStack on a new stack per call,
// cut from 64-value blocks as a Caller does), raw_call_with_stack_locked
// (CallWithStack under an uncontended compare-and-swap lock) and
// atomic_add (one uncontended atomic add); ratios (x): protected_over_raw,
// caller_over_call_with_stack (protected_call over
// raw_wazero_call_with_stack, also printed as a line "caller /
// CallWithStack = X.XX×" in the table), protected_handle_over_raw and
// protected_by_name_over_raw; load_cold,
// load_warm, unload (ms);
// heap_growth_after_N_cycles (bytes); cycle (ms).
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
	for _, r := range res {
		if r.Name == "caller_over_call_with_stack" {
			fmt.Fprintf(w, "caller / CallWithStack = %.2f×\n", r.Value)
		}
	}
	return nil
}

// Measure runs the benchmarks and returns the results.
func Measure(ctx context.Context, opts Options) ([]Result, error) {
	if opts.Calls <= 0 {
		opts.Calls = 1000000
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

	// Protected calls, interleaved with raw calls in rounds so that a
	// burst of load on the machine (a 2-core CI box) hits all of them:
	// each figure is the median over the rounds, and each ratio the
	// median of the rounds' ratios.
	if err := loadOnce(ctx, h, l, path); err != nil {
		return nil, err
	}
	// The calls get context.Background, as the raw ones do: a host's call
	// looks up the caller's context once (for the call chain), as wazero
	// does, and a deeper context costs both the same.
	bg := context.Background()
	// Each reuses one stack, as the raw CallWithStack does.
	add3 := h.Handle("add")
	caller := h.NewCaller()
	defer caller.Close()
	cst := make([]uint64, 2)
	byCaller := func() error { // the reference in the goroutine's Caller
		cst[0], cst[1] = 1, 2
		r, err := caller.Call(bg, add3, cst)
		return checkAdd(r, err)
	}
	hst := make([]uint64, 2)
	byHandle := func() error { // the owner's reference for the call only
		hst[0], hst[1] = 1, 2
		r, err := add3.Call(bg, hst)
		return checkAdd(r, err)
	}
	nst := make([]uint64, 2)
	byName := func() error { // a lookup by name and a Binding per call
		b, err := h.Acquire(raceless.KindSymbol, "add")
		if err != nil {
			return err
		}
		nst[0], nst[1] = 1, 2
		r, err := b.Value().(raceless.Func)(bg, nst)
		b.Release()
		return checkAdd(r, err)
	}
	for range 1000 {
		if err := byCaller(); err != nil {
			return nil, err
		}
		if err := byHandle(); err != nil {
			return nil, err
		}
		if err := byName(); err != nil {
			return nil, err
		}
	}
	const rounds = 21
	n := max(opts.Calls/rounds, 1)
	timeN := func(f func() error) (float64, error) {
		// A collection before each round, as testing.B does before a
		// benchmark: a round of a few ms then never overlaps a mark phase
		// begun by the allocations of another (on 2 cores the background
		// mark worker takes one). The garbage a round makes is swept and
		// marked after it: this favours the raw call, which makes twice as
		// much.
		runtime.GC()
		t0 := time.Now()
		for range n {
			if err := f(); err != nil {
				return 0, err
			}
		}
		return float64(time.Since(t0).Nanoseconds()) / float64(n), nil
	}
	// The raw calls go through the same harness (a func value, the result
	// checked), so that only the call differs.
	rawCall := func() error {
		r, err := raw.f.Call(bg, 1, 2)
		return checkAdd(r, err)
	}
	stack := make([]uint64, 2)
	rawStack := func() error { // wazero's allocation-free form: the floor
		stack[0], stack[1] = 1, 2
		err := raw.f.CallWithStack(bg, stack)
		return checkAdd(stack[:1], err)
	}
	// The breakdown of a Caller's call over the floor, each part measured
	// in these rounds: CallWithStack on a fresh stack per call, cut from a
	// 64-value block as a Caller cuts them (results stay the caller's:
	// the allocation, amortized, and the collections it brings); under an
	// uncontended call lock (a compare-and-swap to take it, a store to
	// release it: wasm's callLock without its deadline); and one
	// uncontended atomic add alone, the machine's price of a locked
	// instruction.
	var free []uint64
	rawFresh := func() error {
		if len(free) < 2 {
			free = make([]uint64, 64)
		}
		st := free[:2:2]
		free = free[2:]
		st[0], st[1] = 1, 2
		err := raw.f.CallWithStack(bg, st)
		return checkAdd(st[:1], err)
	}
	var word uint64
	rawLocked := func() error {
		if !atomic.CompareAndSwapUint64(&word, 0, 1) {
			return fmt.Errorf("lock held")
		}
		stack[0], stack[1] = 1, 2
		err := raw.f.CallWithStack(bg, stack)
		atomic.StoreUint64(&word, 0)
		return checkAdd(stack[:1], err)
	}
	var counter atomic.Uint64
	atomicAdd := func() error {
		counter.Add(1)
		return nil
	}
	var rawNs, stackNs, freshNs, lockedNs, addNs, callerNs, handleNs, nameNs, callerRatio, stackRatio, handleRatio, nameRatio []float64
	for range rounds {
		r, err := timeN(rawCall)
		if err != nil {
			return nil, err
		}
		s, err := timeN(rawStack)
		if err != nil {
			return nil, err
		}
		fr, err := timeN(rawFresh)
		if err != nil {
			return nil, err
		}
		lk, err := timeN(rawLocked)
		if err != nil {
			return nil, err
		}
		ad, err := timeN(atomicAdd)
		if err != nil {
			return nil, err
		}
		freshNs, lockedNs, addNs = append(freshNs, fr), append(lockedNs, lk), append(addNs, ad)
		c, err := timeN(byCaller)
		if err != nil {
			return nil, err
		}
		hd, err := timeN(byHandle)
		if err != nil {
			return nil, err
		}
		nm, err := timeN(byName)
		if err != nil {
			return nil, err
		}
		rawNs, stackNs, callerNs, handleNs, nameNs = append(rawNs, r), append(stackNs, s), append(callerNs, c), append(handleNs, hd), append(nameNs, nm)
		callerRatio, handleRatio, nameRatio = append(callerRatio, c/r), append(handleRatio, hd/r), append(nameRatio, nm/r)
		stackRatio = append(stackRatio, c/s)
	}
	add("raw_wazero_call", median(rawNs), "ns")
	add("raw_wazero_call_with_stack", median(stackNs), "ns")
	add("raw_call_with_stack_fresh_stack", median(freshNs), "ns")
	add("raw_call_with_stack_locked", median(lockedNs), "ns")
	add("atomic_add", median(addNs), "ns")
	add("protected_call", median(callerNs), "ns")
	add("protected_call_handle", median(handleNs), "ns")
	add("protected_call_by_name", median(nameNs), "ns")
	add("protected_over_raw", median(callerRatio), "x")
	add("caller_over_call_with_stack", median(stackRatio), "x")
	add("protected_handle_over_raw", median(handleRatio), "x")
	add("protected_by_name_over_raw", median(nameRatio), "x")
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
	m   api.Module
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
	r.m = m
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

func checkAdd(r []uint64, err error) error {
	if err == nil && (len(r) != 1 || r[0] != 3) {
		err = fmt.Errorf("add(1, 2) = %v", r)
	}
	return err
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
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
