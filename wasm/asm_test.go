package wasm_test

import (
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm/modinfo"
)

// Tiny modules for tests (encoded with internal/wasmtest's encoder):
// modules without a Go runtime, to check the loader's handling of bad
// input and to cycle load/unload fast.

// tiny is wasmtest.Tiny (a module without modinfo).
func tiny(o wasmtest.TinyOptions) []byte { return wasmtest.Tiny(o) }

func tinyWithInfo(o wasmtest.TinyOptions, name string) []byte {
	b, err := modinfo.Append(tiny(o), tinyInfo(name))
	if err != nil {
		panic(err)
	}
	return b
}
