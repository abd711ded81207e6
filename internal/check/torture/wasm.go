package torture

import (
	"context"
	"errors"
	"log/slog"
	"slices"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm"
)

// WasmModule is a loadable module the run loads, unloads (plain and
// forced) and calls alongside the native test modules, with the calls to
// make into it and their expected results. Options.Wasm lists them; the
// caller owns the wasm.Loader behind Source and closes it after Run.
type WasmModule struct {
	Source raceless.Source
	Calls  []WasmCall
}

// WasmCall is one symbol call (a raceless.Func) and its expected result.
type WasmCall struct {
	Symbol string
	Args   []uint64
	Want   []uint64
}

// ProviderModule builds examples/wasm/provider with the Go toolchain
// (cached by content, as wasmtest.BuildCached does), opens it on a new
// Loader whose compilation cache is cacheDir, and compiles it once there,
// so that the run's loads are not cold compiles. The module's calls are
// add(2, 3) and mul(6, 7). close closes the Loader; call it after Run.
func ProviderModule(ctx context.Context, cacheDir string) (m WasmModule, close func() error, err error) {
	path, err := wasmtest.BuildCached(ctx, wasmtest.Provider)
	if err != nil {
		return WasmModule{}, nil, err
	}
	l, err := wasm.NewLoader(ctx, wasm.Config{CacheDir: cacheDir})
	if err != nil {
		return WasmModule{}, nil, err
	}
	close = func() error { return l.Close(context.WithoutCancel(ctx)) }
	src, err := l.Open(path)
	if err == nil {
		h := raceless.New(raceless.WithLogger(slog.New(slog.DiscardHandler)))
		_, err = h.Load(ctx, src, nil)
		if _, serr := h.Shutdown(context.WithoutCancel(ctx)); err == nil {
			err = serr
		}
	}
	if err != nil {
		return WasmModule{}, nil, errors.Join(err, close())
	}
	return WasmModule{Source: src, Calls: []WasmCall{
		{Symbol: "add", Args: []uint64{2, 3}, Want: []uint64{5}},
		{Symbol: "mul", Args: []uint64{6, 7}, Want: []uint64{42}},
	}}, close, nil
}

// wasmOpTable is added to the mix when Options.Wasm is not empty.
var wasmOpTable = []opEntry{
	{"wasm-load", 1, (*worker).opWasmLoad},
	{"wasm-unload", 1, (*worker).opWasmUnload},
	{"wasm-call", 8, (*worker).opWasmCall},
	{"wasm-handle-call", 4, (*worker).opWasmHandleCall},
}

// wasmHeld is a Binding on a wasm symbol kept across operations.
type wasmHeld struct {
	b    *raceless.Binding
	call WasmCall
}

func (w *worker) wasmModule() WasmModule {
	return w.r.opts.Wasm[w.rng.IntN(len(w.r.opts.Wasm))]
}

func (w *worker) opWasmLoad(ctx context.Context) {
	w.releaseAll()
	m := w.wasmModule()
	octx, cancel := w.r.opContext(ctx)
	defer cancel()
	cctx, stop := w.withCancel(octx, 10)
	defer stop()
	_, err := w.r.host.Load(cctx, m.Source, nil)
	w.outcome("wasm-load", err)
	w.hung(octx, "load "+m.Source.Info().Name, err)
}

// opWasmUnload runs guest code (its exit) and waits a grace period, both
// slow enough that it runs, like every waiting operation, with nothing
// held.
func (w *worker) opWasmUnload(ctx context.Context) {
	w.releaseAll()
	m := w.wasmModule()
	opts := raceless.UnloadOptions{Force: w.rng.IntN(10) == 0}
	octx, cancel := w.r.opContext(ctx)
	defer cancel()
	name := m.Source.Info().Name
	before, _ := w.r.host.Module(name)
	err := w.r.host.Unload(octx, name, opts)
	op := "wasm-unload"
	if opts.Force {
		op = "wasm-unload-force"
	}
	w.outcome(op, err)
	w.hung(octx, op+" "+name, err)
	if err == nil && before != nil && before.State() == raceless.StateLive {
		w.r.violate("api", "%s %s returned nil, instance %p is still live", op, name, before)
	}
}

func (w *worker) opWasmCall(ctx context.Context) {
	m := w.wasmModule()
	if len(m.Calls) == 0 {
		return
	}
	c := m.Calls[w.rng.IntN(len(m.Calls))]
	b, err := w.r.host.Acquire(raceless.KindSymbol, c.Symbol)
	w.outcome("wasm-call", err)
	if err != nil {
		return
	}
	w.wasmCall(ctx, &b, c)
	if len(w.wheld) < maxHeld && w.rng.IntN(4) == 0 {
		w.wheld = append(w.wheld, wasmHeld{&b, c})
		return
	}
	b.Release()
}

// wasmCall calls c through b: a result must be the expected one; an error
// is acceptable only once the instance is no longer live (a forced unload:
// the call must fail cleanly, never run in freed memory or panic).
func (w *worker) wasmCall(ctx context.Context, b *raceless.Binding, c WasmCall) {
	f, ok := b.Value().(raceless.Func)
	if !ok {
		w.r.violate("api", "wasm symbol %s is a %T, not a raceless.Func", c.Symbol, b.Value())
		return
	}
	octx, cancel := w.r.opContext(ctx)
	defer cancel()
	got, err := f(octx, w.args(c))
	switch {
	case err == nil && !slices.Equal(got, c.Want):
		w.r.violate("wasm", "%s%v = %v, want %v", c.Symbol, c.Args, got, c.Want)
	case err != nil:
		w.outcomes["wasm-call-result/"+errClass(err)]++
		w.hung(octx, "call "+c.Symbol, err)
		if b.Owner().State() == raceless.StateLive && !errors.Is(err, context.Canceled) && !tainted(b.Owner()) {
			w.r.violate("wasm", "%s%v failed on a live, untainted instance: %v", c.Symbol, c.Args, err)
		}
	default:
		w.outcomes["wasm-call-result/ok"]++
	}
}

// opWasmHandleCall calls a wasm symbol through the runner's shared Handle,
// with the reference taken in the worker's Caller or on the owner's
// counter: a result must be the expected one; an error must be that no
// live owner was found (not loaded, going) or, after a forced unload
// during the call, ErrGone. The Handle follows reloads on its own.
func (w *worker) opWasmHandleCall(ctx context.Context) {
	m := w.wasmModule()
	if len(m.Calls) == 0 {
		return
	}
	c := m.Calls[w.rng.IntN(len(m.Calls))]
	hd := w.r.handles[c.Symbol]
	var got []uint64
	var err error
	if w.rng.IntN(2) == 0 {
		got, err = w.caller.Call(ctx, hd, w.args(c))
	} else {
		got, err = hd.Call(ctx, w.args(c))
	}
	w.outcome("wasm-handle-call", err)
	switch {
	case err == nil && !slices.Equal(got, c.Want):
		w.r.violate("wasm", "%s%v through a Handle = %v, want %v", c.Symbol, c.Args, got, c.Want)
	case err == nil, errors.Is(err, raceless.ErrNotFound), errors.Is(err, raceless.ErrNotLive), errors.Is(err, raceless.ErrGone):
	default:
		w.r.violate("wasm", "%s%v through a Handle: %v", c.Symbol, c.Args, err)
	}
}

func tainted(inst *raceless.Instance) bool { return len(inst.Taints()) > 0 }

func (w *worker) releaseWasm() {
	for _, h := range w.wheld {
		if w.rng.IntN(2) == 0 {
			w.wasmCall(context.Background(), h.b, h.call)
		}
		h.b.Release()
	}
	w.wheld = w.wheld[:0]
}

// args returns c's arguments in the worker's own stack, with room for the
// results: the callee computes in it, and c.Args is shared by the workers.
func (w *worker) args(c WasmCall) []uint64 {
	n := max(len(c.Args), len(c.Want))
	if cap(w.stack) < n {
		w.stack = make([]uint64, n)
	}
	return append(w.stack[:0], c.Args...)
}
