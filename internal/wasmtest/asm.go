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
