package wasm_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm/modinfo"
)

// A slightly larger assembler than tiny's: modules whose raceless_init
// publishes their symbols through the host's "export" import, so that a
// test can pin down the exact types of a symbol (Go's wasmexport has no
// i32 results a test could force garbage into, nor f32).

// Value types and opcodes used below.
const (
	tI32 = 0x7f
	tI64 = 0x7e
	tF32 = 0x7d
	tF64 = 0x7c
)

func sleb(v int64) []byte {
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

func i32const(v int32) []byte  { return append([]byte{0x41}, sleb(int64(v))...) }
func callFn(idx uint32) []byte { return append([]byte{0x10}, leb(idx)...) }

func functype(params, results []byte) []byte {
	return append(append([]byte{0x60}, vec(bytesOf(params)...)...), vec(bytesOf(results)...)...)
}

func bytesOf(b []byte) [][]byte {
	out := make([][]byte, len(b))
	for i, c := range b {
		out[i] = []byte{c}
	}
	return out
}

// asmFunc is a defined function: its type and its code (instructions,
// without the final end; no locals but the parameters).
type asmFunc struct {
	export         string // exported under this name ("" for none)
	symbol         bool   // and published as a symbol by raceless_init
	params, result []byte
	code           []byte
}

// asmModule assembles a module importing raceless.export, import and call
// (function indices 0, 1, 2), with one page of exported memory holding the
// names at 0, one mutable i32 global per import (initially -1), an init
// that imports the symbols of imports (their handles in globals 0, 1...;
// it fails if one cannot be imported) and exports every symbol function,
// an exit returning 0, and funcs.
func asmModule(imports []string, funcs ...asmFunc) []byte {
	const nimp = 3
	// Types: 0 = (i32 i32) -> i32, 1 = (i32 x5) -> i32, 2 = () -> i32,
	// then one per defined function.
	types := [][]byte{
		functype([]byte{tI32, tI32}, []byte{tI32}),
		functype([]byte{tI32, tI32, tI32, tI32, tI32}, []byte{tI32}),
		functype(nil, []byte{tI32}),
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
	initCode = append(initCode, i32const(0)...)
	for g, imp := range imports {
		off, n := name(imp)
		initCode = append(initCode, i32const(off)...)
		initCode = append(initCode, i32const(n)...)
		initCode = append(initCode, callFn(1)...)
		initCode = append(initCode, 0x24) // global.set
		initCode = append(initCode, leb(uint32(g))...)
		initCode = append(initCode, 0x23) // global.get
		initCode = append(initCode, leb(uint32(g))...)
		initCode = append(initCode, i32const(31)...)
		initCode = append(initCode, 0x75, 0x72) // i32.shr_s, i32.or: -1 if the handle is negative
	}
	for _, f := range funcs {
		if f.symbol {
			off, n := name(f.export)
			initCode = append(initCode, i32const(off)...)
			initCode = append(initCode, i32const(n)...)
			initCode = append(initCode, callFn(0)...)
			initCode = append(initCode, 0x72) // i32.or
		}
	}
	all := append([]asmFunc{
		{export: "raceless_init", result: []byte{tI32}, code: initCode},
		{export: "raceless_exit", result: []byte{tI32}, code: i32const(0)},
	}, funcs...)
	var fsec, exps, codes [][]byte
	for i, f := range all {
		types = append(types, functype(f.params, f.result))
		fsec = append(fsec, leb(uint32(len(types)-1)))
		if f.export != "" {
			exps = append(exps, append(str(f.export), append([]byte{0}, leb(uint32(nimp+i))...)...))
		}
		body := append(append([]byte{0}, f.code...), 0x0b) // no locals

		codes = append(codes, append(leb(uint32(len(body))), body...))
	}
	exps = append(exps, append(str("memory"), 2, 0))
	imp := func(name string, typ uint32) []byte {
		return append(append(str("raceless"), str(name)...), append([]byte{0}, leb(typ)...)...)
	}
	var globals [][]byte
	for range max(len(imports), 1) {
		globals = append(globals, append([]byte{tI32, 1}, append(i32const(-1), 0x0b)...))
	}
	b := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	b = append(b, section(1, vec(types...))...)
	b = append(b, section(2, vec(imp("export", 0), imp("import", 0), imp("call", 1)))...)
	b = append(b, section(3, vec(fsec...))...)
	b = append(b, section(5, vec([]byte{0, 1}))...)
	b = append(b, section(6, vec(globals...))...)
	b = append(b, section(7, vec(exps...))...)
	b = append(b, section(10, vec(codes...))...)
	seg := append([]byte{0}, append(i32const(0), 0x0b)...)
	seg = append(seg, str(string(data))...)
	b = append(b, section(11, vec(seg))...)
	return b
}

func appendInfo(bin []byte, name string) []byte {
	b, err := modinfo.Append(bin, tinyInfo(name))
	if err != nil {
		panic(err)
	}
	return b
}

func (e *env) loadBytes(name string, bin []byte) *raceless.Instance {
	e.t.Helper()
	src, err := e.l.OpenBytes("/virtual/"+name+".wasm", appendInfo(bin, name))
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := e.h.Load(context.Background(), src, nil)
	if err != nil {
		e.t.Fatalf("load %s: %v", name, err)
	}
	return m
}

// valuesModule exports symbols of every value type.
func valuesModule() []byte {
	sym := func(name string, params, result []byte, code ...byte) asmFunc {
		return asmFunc{export: name, symbol: true, params: params, result: result, code: code}
	}
	return asmModule(nil,
		// one32(i64) -> i32: 1. Its result takes the argument's slot.
		sym("one32", []byte{tI64}, []byte{tI32}, 0x41, 1),
		// neg32() -> i32: -5.
		sym("neg32", nil, []byte{tI32}, i32const(-5)...),
		// id32(i32) -> i32, and hi32(i32) -> i64: the argument zero-extended
		// as the guest sees it (i64.extend_i32_u).
		sym("id32", []byte{tI32}, []byte{tI32}, 0x20, 0),
		sym("ext32", []byte{tI32}, []byte{tI64}, 0x20, 0, 0xad),
		sym("id64", []byte{tI64}, []byte{tI64}, 0x20, 0),
		sym("idf32", []byte{tF32}, []byte{tF32}, 0x20, 0),
		sym("idf64", []byte{tF64}, []byte{tF64}, 0x20, 0),
		// pair(i64) -> (i32, i32): the argument wrapped, and -1.
		sym("pair", []byte{tI64}, []byte{tI32, tI32}, 0x20, 0, 0xa7, 0x41, 0x7f),
		// mixed(i64, i32, f32) -> i64: the i32 argument sign-extended.
		sym("mixed", []byte{tI64, tI32, tF32}, []byte{tI64}, 0x20, 1, 0xac),
	)
}

// TestValueResults checks that results are exactly what the guest
// returned: i32 (and f32) results zero-extended, never carrying what was in
// the stack slot before (the argument's high bits).
func TestValueResults(t *testing.T) {
	e := newEnv(t, wasmConfig())
	e.loadBytes("vals", valuesModule())
	for _, tc := range []struct {
		sym  string
		args []uint64
		want []uint64
	}{
		{"one32", []uint64{1 << 32}, []uint64{1}},
		{"one32", []uint64{math.MaxUint64}, []uint64{1}},
		{"neg32", nil, []uint64{0xFFFF_FFFB}},
		{"id32", []uint64{0xFFFF_FFFF}, []uint64{0xFFFF_FFFF}},
		{"pair", []uint64{0xDEAD_BEEF_0000_0007}, []uint64{7, 0xFFFF_FFFF}},
		{"idf32", []uint64{uint64(math.Float32bits(-1.5))}, []uint64{uint64(math.Float32bits(-1.5))}},
		{"idf64", []uint64{math.Float64bits(-2.25)}, []uint64{math.Float64bits(-2.25)}},
	} {
		got, err := e.call(tc.sym, tc.args...)
		if err != nil || !equal(got, tc.want) {
			t.Errorf("%s(%#x) = %#x, %v; want %#x", tc.sym, tc.args, got, err, tc.want)
		}
		// The same through a Handle, whose copy of the arguments is the
		// stack the guest computes in.
		got, err = e.h.Handle(raceless.KindSymbol, tc.sym).Call(context.Background(), tc.args...)
		if err != nil || !equal(got, tc.want) {
			t.Errorf("handle %s(%#x) = %#x, %v; want %#x", tc.sym, tc.args, got, err, tc.want)
		}
	}
}

// TestValueArguments checks the range of 32-bit arguments: an i32 takes a
// value representable as uint32 or int32 (a negative int32 sign-extended
// to 64 bits), which the guest sees as its low 32 bits; an f32 takes the
// float's bits (at most 0xFFFFFFFF); anything else is ErrInvalid naming
// the function and the argument.
func TestValueArguments(t *testing.T) {
	e := newEnv(t, wasmConfig())
	e.loadBytes("vals", valuesModule())
	neg := func(v int64) uint64 { return uint64(v) }
	for _, tc := range []struct {
		sym  string
		args []uint64
		want []uint64
	}{
		{"ext32", []uint64{0xFFFF_FFFF}, []uint64{0xFFFF_FFFF}},
		{"ext32", []uint64{neg(-5)}, []uint64{0xFFFF_FFFB}},
		{"ext32", []uint64{neg(math.MinInt32)}, []uint64{0x8000_0000}},
		{"id32", []uint64{neg(-1)}, []uint64{0xFFFF_FFFF}},
		{"mixed", []uint64{neg(-1), neg(-7), 0}, []uint64{neg(-7)}},
		{"id64", []uint64{math.MaxUint64}, []uint64{math.MaxUint64}},
	} {
		got, err := e.call(tc.sym, tc.args...)
		if err != nil || !equal(got, tc.want) {
			t.Errorf("%s(%#x) = %#x, %v; want %#x", tc.sym, tc.args, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		sym  string
		args []uint64
		idx  string
	}{
		{"id32", []uint64{1 << 32}, "argument 0"},
		{"id32", []uint64{neg(math.MinInt32 - 1)}, "argument 0"},
		{"id32", []uint64{0x7FFF_FFFF_FFFF_FFFF}, "argument 0"},
		{"idf32", []uint64{neg(-1)}, "argument 0"},
		{"mixed", []uint64{0, 1 << 40, 0}, "argument 1"},
		{"mixed", []uint64{0, 0, 1 << 32}, "argument 2"},
	} {
		_, err := e.call(tc.sym, tc.args...)
		if !errors.Is(err, raceless.ErrInvalid) || !strings.Contains(err.Error(), "symbol "+tc.sym) ||
			!strings.Contains(err.Error(), tc.idx) || !strings.Contains(err.Error(), "vals") {
			t.Errorf("%s(%#x): %v; want ErrInvalid naming vals, symbol %s and %s", tc.sym, tc.args, err, tc.sym, tc.idx)
		}
	}
	// A rejected call neither ran nor aborted the instance.
	if got, err := e.call("id32", 3); err != nil || !equal(got, []uint64{3}) {
		t.Fatalf("after the rejections: %v, %v", got, err)
	}
}

// TestSignature checks that the loader reports a symbol's types (the CLI
// formats values with them) and nothing for what it did not export.
func TestSignature(t *testing.T) {
	e := newEnv(t, wasmConfig())
	m := e.loadBytes("vals", valuesModule())
	p, r, ok := e.l.Signature(m, "mixed")
	if !ok || typeNames(p) != "i64 i32 f32" || typeNames(r) != "i64" {
		t.Fatalf("mixed: %v %v %v", p, r, ok)
	}
	if p, r, ok := e.l.Signature(m, "pair"); !ok || typeNames(p) != "i64" || typeNames(r) != "i32 i32" {
		t.Fatalf("pair: %v %v %v", p, r, ok)
	}
	if _, _, ok := e.l.Signature(m, "raceless_init"); ok {
		t.Fatal("raceless_init has a signature")
	}
	if err := e.h.Unload(context.Background(), "vals", raceless.UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := e.l.Signature(m, "mixed"); ok {
		t.Fatal("a gone module has a signature")
	}
}

func typeNames(ts []api.ValueType) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = api.ValueTypeName(t)
	}
	return strings.Join(s, " ")
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// parker is a native module whose symbol "park" blocks until the test
// releases it, ignoring its context (the worst callee a wasm import can
// have) unless honour is set.
type parker struct {
	honour  bool
	entered chan struct{}
	release chan struct{}
}

func (p *parker) Init(k *raceless.Kernel) error {
	return k.Export("park", raceless.Func(func(ctx context.Context, _ ...uint64) ([]uint64, error) {
		p.entered <- struct{}{}
		if p.honour {
			select {
			case <-p.release:
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		} else {
			<-p.release
		}
		return []uint64{42}, nil
	}))
}

func (p *parker) Exit() (int, error) { return 0, nil }

// TestForcedUnloadInImport force-unloads a wasm module whose call is
// blocked in a host import (its "call" of another module's symbol, which
// parks): the unload returns at once, while the callee is still parked,
// and the call fails with ErrGone when the import returns, not with the
// guest's own value.
//
// With a callee that honours its context, the forced unload cancels it
// (the import's context is the caller instance's) and the call fails with
// ErrGone without the test releasing anything.
func TestForcedUnloadInImport(t *testing.T) {
	t.Run("parked", func(t *testing.T) { testForcedUnloadInImport(t, false) })
	t.Run("cancelled", func(t *testing.T) { testForcedUnloadInImport(t, true) })
}

func testForcedUnloadInImport(t *testing.T, honour bool) {
	cfg := wasmConfig()
	cfg.CallTimeout = time.Hour // only the unload may end the call
	e := newEnv(t, cfg)
	p := &parker{honour: honour, entered: make(chan struct{}), release: make(chan struct{})}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(p.release) }) }
	defer release()
	if _, err := e.h.Load(context.Background(), raceless.Native(tinyInfo("parker"), func() raceless.Module { return p }), nil); err != nil {
		t.Fatal(err)
	}
	// callpark() -> i64: call(handle, args 64, 0 args, results 128, max 1),
	// the code it returns sign-extended.
	var code []byte
	code = append(code, 0x23, 0) // global.get 0: the handle
	for _, v := range []int32{64, 0, 128, 1} {
		code = append(code, i32const(v)...)
	}
	code = append(code, callFn(2)...)
	code = append(code, 0xac) // i64.extend_i32_s
	e.loadBytes("caller", asmModule([]string{"park"}, asmFunc{
		export: "callpark", symbol: true, result: []byte{tI64}, code: code,
	}))
	b, err := e.h.Acquire(raceless.KindSymbol, "callpark")
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		defer b.Release()
		r, err := b.Value().(raceless.Func)(context.Background())
		if err == nil {
			err = fmt.Errorf("the guest returned %v", r)
		}
		res <- err
	}()
	const deadline = 20 * time.Second // loud, and far beyond a prompt return on a loaded machine
	select {
	case <-p.entered:
	case <-time.After(deadline):
		t.Fatal("the call never reached the callee")
	}
	unloaded := make(chan error, 1)
	go func() {
		unloaded <- e.h.Unload(context.Background(), "caller", raceless.UnloadOptions{Force: true})
	}()
	select {
	case err := <-unloaded:
		if err != nil {
			t.Fatalf("forced unload: %v", err)
		}
	case <-time.After(deadline):
		release()
		t.Fatalf("forced unload still blocked after %v with the callee parked", deadline)
	}
	if _, ok := e.h.Module("caller"); ok {
		t.Fatal("caller still loaded after its forced unload")
	}
	if !honour {
		select {
		case err := <-res:
			t.Fatalf("the call returned while its callee is still parked: %v", err)
		default:
		}
		release()
	}
	select {
	case err := <-res:
		if !errors.Is(err, raceless.ErrGone) {
			t.Fatalf("in-flight call: %v, want ErrGone", err)
		}
	case <-time.After(deadline):
		t.Fatal("the in-flight call did not return after its callee did")
	}
}
