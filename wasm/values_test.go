package wasm_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm/modinfo"
)

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
	sym := func(name string, params, result []byte, code ...byte) wasmtest.Func {
		return wasmtest.Func{Export: name, Symbol: true, Params: params, Result: result, Code: code}
	}
	return wasmtest.Module(nil,
		// one32(i64) -> i32: 1. Its result takes the argument's slot.
		sym("one32", []byte{wasmtest.I64}, []byte{wasmtest.I32}, 0x41, 1),
		// neg32() -> i32: -5.
		sym("neg32", nil, []byte{wasmtest.I32}, wasmtest.I32Const(-5)...),
		// id32(i32) -> i32, and hi32(i32) -> i64: the argument zero-extended
		// as the guest sees it (i64.extend_i32_u).
		sym("id32", []byte{wasmtest.I32}, []byte{wasmtest.I32}, 0x20, 0),
		sym("ext32", []byte{wasmtest.I32}, []byte{wasmtest.I64}, 0x20, 0, 0xad),
		sym("id64", []byte{wasmtest.I64}, []byte{wasmtest.I64}, 0x20, 0),
		sym("idf32", []byte{wasmtest.F32}, []byte{wasmtest.F32}, 0x20, 0),
		sym("idf64", []byte{wasmtest.F64}, []byte{wasmtest.F64}, 0x20, 0),
		// pair(i64) -> (i32, i32): the argument wrapped, and -1.
		sym("pair", []byte{wasmtest.I64}, []byte{wasmtest.I32, wasmtest.I32}, 0x20, 0, 0xa7, 0x41, 0x7f),
		// mixed(i64, i32, f32) -> i64: the i32 argument sign-extended.
		sym("mixed", []byte{wasmtest.I64, wasmtest.I32, wasmtest.F32}, []byte{wasmtest.I64}, 0x20, 1, 0xac),
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
		// The same through a Handle, whose stack is the one the guest
		// computes in: one with no room beyond the arguments (the symbol
		// grows it where it has more results than parameters: neg32,
		// pair), and one with room for every result, where they come
		// back (in place, with the argument's high bits cleared).
		hd := e.h.Handle(tc.sym)
		got, err = hd.Call(context.Background(), slices.Clone(tc.args))
		if err != nil || !equal(got, tc.want) {
			t.Errorf("handle %s(%#x) = %#x, %v; want %#x", tc.sym, tc.args, got, err, tc.want)
		}
		stack := make([]uint64, len(tc.args), max(len(tc.args), len(tc.want)))
		copy(stack, tc.args)
		got, err = hd.Call(context.Background(), stack)
		if err != nil || !equal(got, tc.want) {
			t.Errorf("handle %s(%#x) with room for the results = %#x, %v; want %#x", tc.sym, tc.args, got, err, tc.want)
		} else if len(got) > 0 && &got[0] != &stack[:1][0] {
			t.Errorf("handle %s(%#x) with room for the results: results not in the caller's stack", tc.sym, tc.args)
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

// TestImportedCallResults calls, from a guest, symbols of another wasm
// module whose results outnumber their arguments (pair: 1 -> 2, neg32:
// 0 -> 1) through the host's "call" import: the callee computes in the
// caller instance's call stack, which has room for as many results as the
// guest takes (its maxResults), and grows it when it has not; more results
// than the guest takes fail with ERANGE, writing none. A caller reusing
// its stack, and a guest its call stack, call without allocating.
func TestImportedCallResults(t *testing.T) {
	e := newEnv(t, wasmConfig())
	vals := e.loadBytes("vals", valuesModule())
	// callsym(handle global g, nargs n)(args..., max i32) -> (code i32,
	// r0 i64, r1 i64): the arguments stored at 64, call(handle, 64, n,
	// 128, max), then the code and the two result slots at 128.
	callsym := func(name string, g uint32, nargs int) wasmtest.Func {
		var code, params []byte
		for i := range nargs {
			code = append(code, wasmtest.I32Const(int32(64+8*i))...)
			code = append(code, 0x20, byte(i)) // local.get i
			code = append(code, 0x37, 3, 0)    // i64.store align=8
			params = append(params, wasmtest.I64)
		}
		code = append(code, 0x23, byte(g)) // global.get g: the handle
		code = append(code, wasmtest.I32Const(64)...)
		code = append(code, wasmtest.I32Const(int32(nargs))...)
		code = append(code, wasmtest.I32Const(128)...)
		code = append(code, 0x20, byte(nargs)) // local.get: max
		code = append(code, wasmtest.Call(2)...)
		code = append(code, wasmtest.I32Const(128)...)
		code = append(code, 0x29, 3, 0) // i64.load align=8
		code = append(code, wasmtest.I32Const(136)...)
		code = append(code, 0x29, 3, 0)
		return wasmtest.Func{Export: name, Symbol: true, Params: append(params, wasmtest.I32),
			Result: []byte{wasmtest.I32, wasmtest.I64, wasmtest.I64}, Code: code}
	}
	e.loadBytes("caller", wasmtest.Module([]string{"pair", "neg32"},
		callsym("callpair", 0, 1), callsym("callneg", 1, 0)))
	if h := vals.Holders(); len(h) != 1 || h[0] != "caller" {
		t.Fatalf("vals holders %v, want [caller]", h)
	}
	code := func(c int32) uint64 { return uint64(uint32(c)) }
	const erange = -34
	for _, tc := range []struct {
		sym  string
		args []uint64
		want []uint64
	}{
		// Too few result slots: ERANGE, the results not written (the
		// callee grew the call stack, which had room for one value).
		{"callpair", []uint64{0xDEAD_BEEF_0000_0007, 1}, []uint64{code(erange), 0, 0}},
		{"callneg", []uint64{0}, []uint64{code(erange), 0, 0}},
		// Room for them: computed in the call stack, the i32 results
		// zero-extended.
		{"callpair", []uint64{0xDEAD_BEEF_0000_0007, 2}, []uint64{2, 7, 0xFFFF_FFFF}},
		{"callneg", []uint64{1}, []uint64{1, 0xFFFF_FFFB, 0xFFFF_FFFF}},
		{"callpair", []uint64{9, 64}, []uint64{2, 9, 0xFFFF_FFFF}},
	} {
		if got, err := e.call(tc.sym, tc.args...); err != nil || !equal(got, tc.want) {
			t.Errorf("%s(%#x) = %#x, %v; want %#x", tc.sym, tc.args, got, err, tc.want)
		}
	}
	// callpair has more results (3) than arguments (2): a Caller's stack
	// with room for them gets them back in place, and, reused, the call
	// and the guest's imported call allocate nothing.
	c := e.h.NewCaller()
	defer c.Close()
	hd := e.h.Handle("callpair")
	stack := make([]uint64, 2, 3)
	if allocs := testing.AllocsPerRun(100, func() {
		stack = stack[:2]
		stack[0], stack[1] = 5, 2
		got, err := c.Call(context.Background(), hd, stack)
		if err != nil || !equal(got, []uint64{2, 5, 0xFFFF_FFFF}) || &got[0] != &stack[0] {
			t.Fatalf("callpair(5, 2) through a caller = %#x, %v; want [2 5 0xffffffff] in the caller's stack", got, err)
		}
	}); allocs != 0 {
		t.Fatalf("callpair through a caller in a reused stack allocates %v times, want 0", allocs)
	}
}

// TestImportNotFunc: a guest's import of a symbol that is not a
// raceless.Func fails (the guest gets EINVAL, here failing its init); the
// failed module leaves the exporter with no holder.
func TestImportNotFunc(t *testing.T) {
	e := newEnv(t, wasmConfig())
	exp, err := e.h.Load(context.Background(), raceless.Native(tinyInfo("exporter"), func() raceless.Module {
		return nativeMod(func(k *raceless.Kernel) error { return k.Export("notfn", 42) })
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	src, err := e.l.OpenBytes("/virtual/importer.wasm", appendInfo(wasmtest.Module([]string{"notfn"}), "importer"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.h.Load(context.Background(), src, nil); !errors.Is(err, raceless.ErrInit) {
		t.Fatalf("load of a module importing a non-function: %v, want ErrInit", err)
	}
	if !strings.Contains(e.logs.String(), "not a function symbol") {
		t.Fatalf("the failed import is not logged:\n%s", e.logs)
	}
	if _, ok := e.h.Module("importer"); ok {
		t.Fatal("importer loaded")
	}
	if h := exp.Holders(); len(h) != 0 || exp.Refs() != 0 {
		t.Fatalf("exporter holders %v, refs %d after the importer failed", h, exp.Refs())
	}
	if err := e.h.Unload(context.Background(), "exporter", raceless.UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// nativeMod is a native module whose Init is the function.
type nativeMod func(k *raceless.Kernel) error

func (f nativeMod) Init(k *raceless.Kernel) error { return f(k) }
func (nativeMod) Exit() (int, error)              { return 0, nil }

// TestSignature checks that a wasm module declares its symbols' types
// (raceless.Signer, read through Binding.Signature: the CLI formats values
// with them, Replace compares them) and that a released Binding tells
// nothing.
func TestSignature(t *testing.T) {
	e := newEnv(t, wasmConfig())
	e.loadBytes("vals", valuesModule())
	for sym, want := range map[string]string{"mixed": "(i64,i32,f32)->(i64)", "pair": "(i64)->(i32,i32)"} {
		b, err := e.h.Acquire(raceless.KindSymbol, sym)
		if err != nil {
			t.Fatal(err)
		}
		sig, ok := b.Signature()
		if !ok || sig.String() != want {
			t.Fatalf("%s: %v %v, want %s", sym, sig, ok, want)
		}
		b.Release()
		if _, ok := b.Signature(); ok {
			t.Fatalf("%s: a released Binding has a signature", sym)
		}
	}
	if err := e.h.Unload(context.Background(), "vals", raceless.UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
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
	return k.Export("park", raceless.Func(func(ctx context.Context, _ []uint64) ([]uint64, error) {
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
		code = append(code, wasmtest.I32Const(v)...)
	}
	code = append(code, wasmtest.Call(2)...)
	code = append(code, 0xac) // i64.extend_i32_s
	e.loadBytes("caller", wasmtest.Module([]string{"park"}, wasmtest.Func{
		Export: "callpark", Symbol: true, Result: []byte{wasmtest.I64}, Code: code,
	}))
	b, err := e.h.Acquire(raceless.KindSymbol, "callpark")
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		defer b.Release()
		r, err := b.Value().(raceless.Func)(context.Background(), nil)
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
