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

// SLEB is v in signed LEB128 (the immediates of i32.const and i64.const).
func SLEB(v int64) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// Value types, in the binary format's encoding.
const (
	I32 = 0x7f
	I64 = 0x7e
	F32 = 0x7d
	F64 = 0x7c
)

// I32Const is the instruction i32.const v.
func I32Const(v int32) []byte { return append([]byte{0x41}, SLEB(int64(v))...) }

// I64Const is the instruction i64.const v.
func I64Const(v int64) []byte { return append([]byte{0x42}, SLEB(v)...) }

// Call is the instruction call idx.
func Call(idx uint32) []byte { return append([]byte{0x10}, ULEB(idx)...) }

// FuncType is the function type (params) -> (results).
func FuncType(params, results []byte) []byte {
	return append(append([]byte{0x60}, Vec(bytesOf(params)...)...), Vec(bytesOf(results)...)...)
}

func bytesOf(b []byte) [][]byte {
	out := make([][]byte, len(b))
	for i, c := range b {
		out[i] = []byte{c}
	}
	return out
}

// Func is a function Module defines: its type and its code (instructions,
// without the final end; no locals but the parameters).
type Func struct {
	Export         string // exported under this name ("" for none)
	Symbol         bool   // and published as a symbol by raceless_init
	Params, Result []byte
	Code           []byte
}

// Module assembles a module importing raceless.export, import and call
// (function indices 0, 1, 2), with one page of exported memory holding the
// names at 0, one mutable i32 global per import (initially -1), an init
// that imports the symbols of imports (their handles in globals 0, 1...;
// it fails if one cannot be imported) and exports every symbol function,
// an exit returning 0, and funcs: modules whose symbols have exactly the
// types a test needs (Go's wasmexport has no i32 results a test could
// force garbage into, nor f32), with no Go runtime.
func Module(imports []string, funcs ...Func) []byte {
	const nimp = 3
	// Types: 0 = (i32 i32) -> i32, 1 = (i32 x5) -> i32, 2 = () -> i32,
	// then one per defined function.
	types := [][]byte{
		FuncType([]byte{I32, I32}, []byte{I32}),
		FuncType([]byte{I32, I32, I32, I32, I32}, []byte{I32}),
		FuncType(nil, []byte{I32}),
	}
	var data []byte
	name := func(s string) (int32, int32) {
		off := int32(len(data))
		data = append(data, s...)
		return off, int32(len(s))
	}
	// init: handles of the imports into globals, then export the symbols;
	// it returns the OR of the codes (0 when every one succeeded).
	var initCode []byte
	initCode = append(initCode, I32Const(0)...)
	for g, imp := range imports {
		off, n := name(imp)
		initCode = append(initCode, I32Const(off)...)
		initCode = append(initCode, I32Const(n)...)
		initCode = append(initCode, Call(1)...)
		initCode = append(initCode, 0x24) // global.set
		initCode = append(initCode, ULEB(uint32(g))...)
		initCode = append(initCode, 0x23) // global.get
		initCode = append(initCode, ULEB(uint32(g))...)
		initCode = append(initCode, I32Const(31)...)
		initCode = append(initCode, 0x75, 0x72) // i32.shr_s, i32.or: -1 if the handle is negative
	}
	for _, f := range funcs {
		if f.Symbol {
			off, n := name(f.Export)
			initCode = append(initCode, I32Const(off)...)
			initCode = append(initCode, I32Const(n)...)
			initCode = append(initCode, Call(0)...)
			initCode = append(initCode, 0x72) // i32.or
		}
	}
	all := append([]Func{
		{Export: "raceless_init", Result: []byte{I32}, Code: initCode},
		{Export: "raceless_exit", Result: []byte{I32}, Code: I32Const(0)},
	}, funcs...)
	var fsec, exps, codes [][]byte
	for i, f := range all {
		types = append(types, FuncType(f.Params, f.Result))
		fsec = append(fsec, ULEB(uint32(len(types)-1)))
		if f.Export != "" {
			exps = append(exps, append(Name(f.Export), append([]byte{0}, ULEB(uint32(nimp+i))...)...))
		}
		body := append(append([]byte{0}, f.Code...), 0x0b) // no locals

		codes = append(codes, append(ULEB(uint32(len(body))), body...))
	}
	exps = append(exps, append(Name("memory"), 2, 0))
	imp := func(name string, typ uint32) []byte {
		return append(append(Name("raceless"), Name(name)...), append([]byte{0}, ULEB(typ)...)...)
	}
	var globals [][]byte
	for range max(len(imports), 1) {
		globals = append(globals, append([]byte{I32, 1}, append(I32Const(-1), 0x0b)...))
	}
	b := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	b = append(b, Section(1, Vec(types...))...)
	b = append(b, Section(2, Vec(imp("export", 0), imp("import", 0), imp("call", 1)))...)
	b = append(b, Section(3, Vec(fsec...))...)
	b = append(b, Section(5, Vec([]byte{0, 1}))...)
	b = append(b, Section(6, Vec(globals...))...)
	b = append(b, Section(7, Vec(exps...))...)
	b = append(b, Section(10, Vec(codes...))...)
	seg := append([]byte{0}, append(I32Const(0), 0x0b)...)
	seg = append(seg, Name(string(data))...)
	b = append(b, Section(11, Vec(seg))...)
	return b
}
