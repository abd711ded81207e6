package wasm_test

import (
	"context"
	"github.com/raceless/raceless/internal/wasmtest"
	"testing"

	"github.com/raceless/raceless/wasm"
)

// FuzzOpen checks that OpenBytes never panics and that whatever it accepts
// has a valid name and a stable key. Seeds: testdata/fuzz/FuzzOpen.
func FuzzOpen(f *testing.F) {
	f.Add(tinyWithInfo(wasmtest.TinyOptions{}, "tiny"))
	f.Add(tiny(wasmtest.TinyOptions{}))
	f.Add([]byte{})
	l, err := wasm.NewLoader(context.Background(), wasm.Config{MaxFileSize: 1 << 20})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = l.Close(context.Background()) })
	f.Fuzz(func(t *testing.T, b []byte) {
		src, err := l.OpenBytes("/fuzz.wasm", b)
		if err != nil {
			return
		}
		if src.Info().Name == "" || src.Key() == "" {
			t.Fatalf("accepted a module without name or key: %+v", src.Info())
		}
	})
}
