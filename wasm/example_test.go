package wasm_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm"
)

// Load a module from a file, call its symbol through the counting path,
// unload it.
func Example() {
	ctx := context.Background()
	path, err := wasmtest.BuildCached(ctx, wasmtest.Provider) // GOOS=wasip1 go build + modinfo
	if err != nil {
		panic(err)
	}
	l, err := wasm.NewLoader(ctx, wasm.Config{}) // set CacheDir for an on-disk cache
	if err != nil {
		panic(err)
	}
	defer l.Close(ctx)
	h := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))

	src, err := l.Open(path)
	if err != nil {
		panic(err)
	}
	fmt.Println(src.Info().Name, src.Info().Version)
	if _, err := h.Load(ctx, src, nil); err != nil {
		panic(err)
	}
	b, err := h.Acquire(raceless.KindSymbol, "add")
	if err != nil {
		panic(err)
	}
	r, err := b.Value().(raceless.Func)(ctx, []uint64{2, 40})
	b.Release()
	fmt.Println(r[0], err)
	fmt.Println(h.Unload(ctx, "provider", raceless.UnloadOptions{}))
	// Output:
	// provider 1.0.0
	// 42 <nil>
	// <nil>
}

func ExampleReadInfo() {
	path, err := wasmtest.BuildCached(context.Background(), wasmtest.Hello)
	if err != nil {
		panic(err)
	}
	info, err := wasm.ReadInfo(path)
	fmt.Println(info.Name, info.Params[0].Name, info.Params[0].Default, err)
	// Output: hello who world <nil>
}
