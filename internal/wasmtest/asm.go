package wasmtest

import "github.com/raceless/raceless/wasm/modinfo"

// A tiny WebAssembly binary encoder, for tests that need modules without a
// Go runtime (built in microseconds): the rejections of the compile stage,
// fast load/unload cycles, the compilation cache. The encodings are the
// specification's (https://webassembly.github.io/spec/core/binary/).

// ULEB is v in unsigned LEB128.
func ULEB(v uint32) []byte { return modinfo.AppendUleb32(nil, v) }

// Name is s as a name: its length, then its bytes.
func Name(s string) []byte { return append(ULEB(uint32(len(s))), s...) }

// Section is the section id with the concatenated body, prefixed by its size.
func Section(id byte, body ...[]byte) []byte {
	var p []byte
	for _, b := range body {
		p = append(p, b...)
	}
	return append(append([]byte{id}, ULEB(uint32(len(p)))...), p...)
}

// Vec is a vector: the count of items, then the items.
func Vec(items ...[]byte) []byte {
	out := ULEB(uint32(len(items)))
	for _, it := range items {
		out = append(out, it...)
	}
	return out
}

// TinyOptions are the variations of a Tiny module.
type TinyOptions struct {
	NoInit, NoExit, NoMemory bool   // leave out that export
	ImportModule, ImportName string // import a function of type () -> i32
	ExtraExport              string // export raceless_init under this name too
	InitCode, ExitCode       int8   // what raceless_init and raceless_exit return
	BadCode                  bool   // raceless_exit leaves two values: does not validate
	MemoryPages              uint32 // minimum memory (0: 1 page)
}

// Tiny returns a module with no Go runtime and no modinfo, exporting
// raceless_init and raceless_exit ("i32.const N; end") and a memory, with
// the variations of o.
func Tiny(o TinyOptions) []byte {
	b := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	b = append(b, Section(1, Vec([]byte{0x60, 0, 1, 0x7f}))...) // type 0: () -> i32
	nimp := uint32(0)
	if o.ImportModule != "" {
		b = append(b, Section(2, Vec(append(append(Name(o.ImportModule), Name(o.ImportName)...), 0, 0)))...)
		nimp = 1
	}
	b = append(b, Section(3, Vec([]byte{0}, []byte{0}))...) // two functions of type 0
	if o.MemoryPages == 0 {
		o.MemoryPages = 1
	}
	b = append(b, Section(5, Vec(append([]byte{0}, ULEB(o.MemoryPages)...)))...)
	var exps [][]byte
	if !o.NoInit {
		exps = append(exps, append(Name("raceless_init"), append([]byte{0}, ULEB(nimp)...)...))
	}
	if !o.NoExit {
		exps = append(exps, append(Name("raceless_exit"), append([]byte{0}, ULEB(nimp+1)...)...))
	}
	if !o.NoMemory {
		exps = append(exps, append(Name("memory"), 2, 0))
	}
	if o.ExtraExport != "" {
		exps = append(exps, append(Name(o.ExtraExport), append([]byte{0}, ULEB(nimp)...)...))
	}
	b = append(b, Section(7, Vec(exps...))...)
	body := func(c ...byte) []byte { return append(ULEB(uint32(len(c))), c...) }
	exit := body(0, 0x41, byte(o.ExitCode)&0x7f, 0x0b)
	if o.BadCode {
		exit = body(0, 0x41, 0, 0x41, 0, 0x0b)
	}
	return append(b, Section(10, Vec(body(0, 0x41, byte(o.InitCode)&0x7f, 0x0b), exit))...)
}
