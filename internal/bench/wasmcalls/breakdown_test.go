package wasmcalls

// BenchmarkBreakdown is the steady-state view of what `bench wasm` measures
// in rounds (where a collection runs before each round, so that the
// garbage a round makes is not paid in it): the floor (CallWithStack on
// one stack, on the binary as built and as the loader instruments it), the
// floor plus a part of a protected call's cost on its own (a
// compare-and-swap lock), and the protected calls, each reusing one stack
// as the floor does. With -benchmem.
//
//	go test -run XXX -bench Breakdown -count 5 ./internal/bench/wasmcalls

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm"
)

type benchEnv struct {
	raw    *rawCall
	rawI   *rawCall // the instrumented binary
	h      *raceless.Host
	l      *wasm.Loader
	hd     *raceless.Handle
	caller *raceless.Caller
}

func newBenchEnv(b *testing.B) *benchEnv {
	ctx := context.Background()
	path, err := wasmtest.BuildCached(ctx, wasmtest.Provider)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := newRawCall(ctx, path, false)
	if err != nil {
		b.Fatal(err)
	}
	h := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	cache := b.TempDir()
	l, err := wasm.NewLoader(ctx, wasm.Config{CacheDir: cache})
	if err != nil {
		b.Fatal(err)
	}
	if err := loadOnce(ctx, h, l, path); err != nil {
		b.Fatal(err)
	}
	ins, _ := filepath.Glob(filepath.Join(cache, "raceless-instrumented-v*", "*.wasm"))
	if len(ins) != 1 {
		b.Fatalf("instrumented binaries: %v", ins)
	}
	rawI, err := newRawCall(ctx, ins[0], false)
	if err != nil {
		b.Fatal(err)
	}
	e := &benchEnv{raw: raw, rawI: rawI, h: h, l: l, hd: h.Handle("add"), caller: h.NewCaller()}
	b.Cleanup(func() {
		e.caller.Close()
		h.Shutdown(ctx)
		l.Close(ctx)
		raw.close()
		rawI.close()
	})
	return e
}

func BenchmarkBreakdown(b *testing.B) {
	e := newBenchEnv(b)
	bg := context.Background()
	b.Run("CallWithStack", func(b *testing.B) {
		b.ReportAllocs()
		stack := make([]uint64, 2)
		for b.Loop() {
			stack[0], stack[1] = 1, 2
			if err := e.raw.f.CallWithStack(bg, stack); err != nil || stack[0] != 3 {
				b.Fatal(err)
			}
		}
	})
	b.Run("CallWithStackInstrumented", func(b *testing.B) {
		b.ReportAllocs()
		stack := make([]uint64, 2)
		for b.Loop() {
			stack[0], stack[1] = 1, 2
			if err := e.rawI.f.CallWithStack(bg, stack); err != nil || stack[0] != 3 {
				b.Fatal(err)
			}
		}
	})
	b.Run("CallWithStack+CAS", func(b *testing.B) {
		b.ReportAllocs()
		stack := make([]uint64, 2)
		var w uint64
		for b.Loop() {
			if !atomic.CompareAndSwapUint64(&w, 0, 5) {
				b.Fatal()
			}
			stack[0], stack[1] = 1, 2
			if err := e.raw.f.CallWithStack(bg, stack); err != nil || stack[0] != 3 {
				b.Fatal(err)
			}
			w = 0
		}
	})
	b.Run("Call", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, err := e.raw.f.Call(bg, 1, 2)
			if err != nil || r[0] != 3 {
				b.Fatal(err)
			}
		}
	})
	b.Run("Caller", func(b *testing.B) {
		b.ReportAllocs()
		stack := make([]uint64, 2)
		for b.Loop() {
			stack[0], stack[1] = 1, 2
			r, err := e.caller.Call(bg, e.hd, stack)
			if err != nil || r[0] != 3 {
				b.Fatal(err)
			}
		}
	})
	b.Run("Handle", func(b *testing.B) {
		b.ReportAllocs()
		stack := make([]uint64, 2)
		for b.Loop() {
			stack[0], stack[1] = 1, 2
			r, err := e.hd.Call(bg, stack)
			if err != nil || r[0] != 3 {
				b.Fatal(err)
			}
		}
	})
}
