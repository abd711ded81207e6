package wasm_test

import (
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm/modinfo"
)

// Tiny modules for tests (encoded with internal/wasmtest's encoder):
// modules without a Go runtime, to check the loader's handling of bad
// input and to cycle load/unload fast.

type tinyOpts struct {
	noInit, noExit, noMemory bool
	importMod, importName    string // an imported function of type () -> i32
	exitCode                 int8   // what raceless_exit returns
}

// tiny returns a module exporting raceless_init and raceless_exit (both
// "i32.const N; end") and a memory, with the given variations.
func tiny(o tinyOpts) []byte {
	b := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	b = append(b, wasmtest.Section(1, wasmtest.Vec([]byte{0x60, 0, 1, 0x7f}))...) // type 0: () -> i32
	nimp := uint32(0)
	if o.importMod != "" {
		b = append(b, wasmtest.Section(2, wasmtest.Vec(append(append(wasmtest.Name(o.importMod), wasmtest.Name(o.importName)...), 0, 0)))...)
		nimp = 1
	}
	b = append(b, wasmtest.Section(3, wasmtest.Vec([]byte{0}, []byte{0}))...) // two functions of type 0
	b = append(b, wasmtest.Section(5, wasmtest.Vec([]byte{0, 1}))...)         // memory, min 1 page
	var exps [][]byte
	if !o.noInit {
		exps = append(exps, append(wasmtest.Name("raceless_init"), append([]byte{0}, wasmtest.ULEB(nimp)...)...))
	}
	if !o.noExit {
		exps = append(exps, append(wasmtest.Name("raceless_exit"), append([]byte{0}, wasmtest.ULEB(nimp+1)...)...))
	}
	if !o.noMemory {
		exps = append(exps, append(wasmtest.Name("memory"), 2, 0))
	}
	b = append(b, wasmtest.Section(7, wasmtest.Vec(exps...))...)
	body := func(v int8) []byte {
		c := []byte{0, 0x41, byte(v) & 0x7f, 0x0b}
		return append(wasmtest.ULEB(uint32(len(c))), c...)
	}
	b = append(b, wasmtest.Section(10, wasmtest.Vec(body(0), body(o.exitCode)))...)
	return b
}

func tinyWithInfo(o tinyOpts, name string) []byte {
	b, err := modinfo.Append(tiny(o), tinyInfo(name))
	if err != nil {
		panic(err)
	}
	return b
}
