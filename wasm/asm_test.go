package wasm_test

import "github.com/raceless/raceless/wasm/modinfo"

// A tiny wasm assembler for tests: modules without a Go runtime, to check
// the loader's handling of bad input and to cycle load/unload fast.

func leb(v uint32) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

func str(s string) []byte { return append(leb(uint32(len(s))), s...) }

func section(id byte, body ...[]byte) []byte {
	var p []byte
	for _, b := range body {
		p = append(p, b...)
	}
	return append(append([]byte{id}, leb(uint32(len(p)))...), p...)
}

func vec(items ...[]byte) []byte {
	out := leb(uint32(len(items)))
	for _, it := range items {
		out = append(out, it...)
	}
	return out
}

type tinyOpts struct {
	noInit, noExit, noMemory bool
	importMod, importName    string // an imported function of type () -> i32
	exitCode                 int8   // what raceless_exit returns
}

// tiny returns a module exporting raceless_init and raceless_exit (both
// "i32.const N; end") and a memory, with the given variations.
func tiny(o tinyOpts) []byte {
	b := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	b = append(b, section(1, vec([]byte{0x60, 0, 1, 0x7f}))...) // type 0: () -> i32
	nimp := uint32(0)
	if o.importMod != "" {
		b = append(b, section(2, vec(append(append(str(o.importMod), str(o.importName)...), 0, 0)))...)
		nimp = 1
	}
	b = append(b, section(3, vec([]byte{0}, []byte{0}))...) // two functions of type 0
	b = append(b, section(5, vec([]byte{0, 1}))...)         // memory, min 1 page
	var exps [][]byte
	if !o.noInit {
		exps = append(exps, append(str("raceless_init"), append([]byte{0}, leb(nimp)...)...))
	}
	if !o.noExit {
		exps = append(exps, append(str("raceless_exit"), append([]byte{0}, leb(nimp+1)...)...))
	}
	if !o.noMemory {
		exps = append(exps, append(str("memory"), 2, 0))
	}
	b = append(b, section(7, vec(exps...))...)
	body := func(v int8) []byte {
		c := []byte{0, 0x41, byte(v) & 0x7f, 0x0b}
		return append(leb(uint32(len(c))), c...)
	}
	b = append(b, section(10, vec(body(0), body(o.exitCode)))...)
	return b
}

func tinyWithInfo(o tinyOpts, name string) []byte {
	b, err := modinfo.Append(tiny(o), tinyInfo(name))
	if err != nil {
		panic(err)
	}
	return b
}
