package wasm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/raceless/raceless"
)

// HostModule is the name of the wasm import module of the host's kernel
// interface.
const HostModule = "raceless"

const i32 = api.ValueTypeI32

// hostFuncs is the "raceless" import module: name, parameter count (all
// i32), whether it returns an i32, and the implementation. Pointers and
// lengths refer to the calling instance's exported memory "memory".
var hostFuncs = []struct {
	name   string
	params int
	result bool
	fn     func(ctx context.Context, in *instance, m api.Module, s []uint64) int32
}{
	{"log", 3, false, hostLog},            // (level, ptr, len)
	{"set_error", 2, false, hostSetError}, // (ptr, len)
	{"param", 4, true, hostParam},         // (name, name_len, buf, cap) -> len | -errno
	{"export", 2, true, hostExport},       // (name, name_len) -> 0 | -errno
	{"import", 2, true, hostImport},       // (name, name_len) -> handle | -errno
	{"call", 5, true, hostCall},           // (handle, args, nargs, results, max) -> nresults | -errno
	{"request", 2, true, hostRequest},     // (name, name_len) -> 0 | -errno
	{"hook", 3, true, hostHook},           // (event, event_len, id) -> 0 | -errno

	// The filesystem ABI (fsabi.go): (name, name_len) -> 0 | -errno.
	{"fs_register", 2, true, hostFSRegister},
}

func instantiateHost(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(HostModule)
	for _, f := range hostFuncs {
		params := make([]api.ValueType, f.params)
		for i := range params {
			params[i] = i32
		}
		var results []api.ValueType
		if f.result {
			results = []api.ValueType{i32}
		}
		fn, hasResult := f.fn, f.result
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, m api.Module, s []uint64) {
			fr, _ := ctx.Value(frameKey{}).(*frame)
			var rc int32 = codeInval
			if fr != nil {
				fr.in.checkKilled()
				rc = fn(ctx, fr.in, m, s)
				// An import may block (a call into another module):
				// the instance may have been killed meanwhile, and
				// then no more of its guest code runs.
				fr.in.checkKilled()
			}
			if hasResult {
				s[0] = api.EncodeI32(rc)
			}
		}), params, results).Export(f.name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

// errKilled is the panic of a host function whose instance was killed
// (torn down, or past its call's deadline) while the guest was calling
// it: the guest traps instead of going on, and the call fails with
// ErrGone or ErrLimit (fault).
var errKilled = errors.New("instance killed during a host call")

// checkKilled traps the guest (a panic, which wazero turns into the
// call's error) if in was killed: gone, or aborted, which while a call
// holds the lock only the watchdog does.
func (in *instance) checkKilled() {
	if in.gone.Load() || in.aborted.Load() != nil {
		panic(errKilled)
	}
}

// checkLinks checks a compiled module's imports against what the host
// provides, and the signatures of the ABI's exports.
func checkLinks(cm wazero.CompiledModule) error {
	for _, imp := range cm.ImportedFunctions() {
		mod, name, _ := imp.Import()
		switch mod {
		case "wasi_snapshot_preview1":
			continue // wazero checks names and signatures at instantiation
		case HostModule:
			if !knownHostFunc(name, imp) {
				return fmt.Errorf("%s.%s (or its signature): %w", mod, name, ErrUnknownImport)
			}
		default:
			return fmt.Errorf("%s.%s: %w", mod, name, ErrUnknownImport)
		}
	}
	for _, imp := range cm.ImportedMemories() {
		mod, name, _ := imp.Import()
		return fmt.Errorf("memory %s.%s: %w", mod, name, ErrUnknownImport)
	}
	exp := cm.ExportedFunctions()
	for _, e := range []struct {
		name    string
		params  int
		results int
		need    bool
	}{
		{"raceless_init", 0, 1, true}, {"raceless_exit", 0, 1, true},
		{"raceless_start", 0, 0, false}, {"raceless_stop", 0, 0, false},
		{"raceless_hook", 1, 1, false},
	} {
		d, ok := exp[e.name]
		if !ok {
			if e.need {
				return fmt.Errorf("export %q: %w", e.name, ErrMissingExport)
			}
			continue
		}
		if len(d.ParamTypes()) != e.params || len(d.ResultTypes()) != e.results ||
			(e.results == 1 && d.ResultTypes()[0] != i32) {
			return fmt.Errorf("export %q has signature %v -> %v: %w", e.name, d.ParamTypes(), d.ResultTypes(), ErrMissingExport)
		}
	}
	return nil
}

func knownHostFunc(name string, d api.FunctionDefinition) bool {
	for _, f := range hostFuncs {
		if f.name == name {
			want := 0
			if f.result {
				want = 1
			}
			if len(d.ParamTypes()) != f.params || len(d.ResultTypes()) != want {
				return false
			}
			for _, t := range append(d.ParamTypes(), d.ResultTypes()...) {
				if t != i32 {
					return false
				}
			}
			return true
		}
	}
	return false
}

// readString copies a string out of guest memory.
func readString(m api.Module, ptr, n uint64, limit uint32) (string, bool) {
	if uint32(n) > limit {
		return "", false
	}
	b, ok := m.Memory().Read(uint32(ptr), uint32(n))
	if !ok {
		return "", false
	}
	return string(b), true
}

const maxName = 1024

func hostLog(_ context.Context, in *instance, m api.Module, s []uint64) int32 {
	msg, ok := readString(m, s[1], s[2], 64<<10)
	if !ok {
		msg = "(bad log message pointer)"
	}
	in.logger().Log(context.Background(), slog.Level(api.DecodeI32(s[0])), msg)
	return 0
}

func hostSetError(_ context.Context, in *instance, m api.Module, s []uint64) int32 {
	msg, ok := readString(m, s[0], s[1], maxErrMsgLen)
	if !ok {
		b, _ := m.Memory().Read(uint32(s[0]), min(uint32(s[1]), maxErrMsgLen))
		msg = string(b) + "..."
	}
	in.errMsg = msg // the call lock is held: this runs inside a guest call
	return 0
}

func hostParam(_ context.Context, in *instance, m api.Module, s []uint64) int32 {
	name, ok := readString(m, s[0], s[1], maxName)
	if !ok || in.k == nil {
		return codeInval
	}
	v, ok := in.k.Params()[name]
	if !ok {
		return codeNoEnt
	}
	if len(v) <= int(uint32(s[3])) && !m.Memory().Write(uint32(s[2]), []byte(v)) {
		return codeInval
	}
	return int32(min(len(v), 1<<31-1))
}

// reservedExports are the ABI's own exports, never symbols.
func reservedExport(name string) bool {
	return strings.HasPrefix(name, "raceless_") || name == "_initialize" || name == "_start" || name == "memory"
}

func hostExport(_ context.Context, in *instance, m api.Module, s []uint64) int32 {
	name, ok := readString(m, s[0], s[1], maxName)
	if !ok || !in.initing || reservedExport(name) {
		return codeInval
	}
	fn := m.ExportedFunction(name)
	if fn == nil {
		return codeNoEnt
	}
	def := fn.Definition()
	for _, t := range append(def.ParamTypes(), def.ResultTypes()...) {
		switch t {
		case api.ValueTypeI32, api.ValueTypeI64, api.ValueTypeF32, api.ValueTypeF64:
		default: // v128 (two stack slots), references: not a raceless.Func
			in.logger().Debug("export failed: not a function of numbers", "symbol", name, "type", api.ValueTypeName(t))
			return codeInval
		}
	}
	if err := in.k.Export(name, in.symbol(name, fn)); err != nil {
		in.logger().Debug("export failed", "symbol", name, "err", err)
		return codeOf(err)
	}
	if in.sigs == nil {
		in.sigs = map[string]raceless.Signature{}
	}
	in.sigs[name] = raceless.Signature{Params: valueTypes(def.ParamTypes()), Results: valueTypes(def.ResultTypes())}
	return 0
}

func hostImport(ctx context.Context, in *instance, m api.Module, s []uint64) int32 {
	name, ok := readString(m, s[0], s[1], maxName)
	if !ok || !in.initing {
		return codeInval
	}
	// A module that declares its imports (modinfo's "imports", which
	// depmod follows) may import only those, so that the declaration
	// cannot go stale; one that declares none may import anything.
	if imports := in.src.info.Imports; len(imports) > 0 {
		declared := false
		for _, d := range imports {
			declared = declared || d == name
		}
		if !declared {
			in.logger().Debug("import failed: symbol not declared in modinfo imports", "symbol", name)
			return codeInval
		}
	}
	v, err := in.k.Import(ctx, name)
	if err != nil {
		in.logger().Debug("import failed", "symbol", name, "err", err)
		return codeOf(err)
	}
	f, ok := v.(raceless.Func)
	if !ok { // the dependency stays recorded, as for a native importer that does not call
		in.logger().Debug("import failed: not a function symbol", "symbol", name, "type", fmt.Sprintf("%T", v))
		return codeInval
	}
	in.imports = append(in.imports, f)
	return int32(len(in.imports) - 1)
}

const maxCallValues = 64

func hostCall(ctx context.Context, in *instance, m api.Module, s []uint64) int32 {
	h, nargs, maxRes := api.DecodeI32(s[0]), uint32(s[2]), uint32(s[4])
	if h < 0 || int(h) >= len(in.imports) || nargs > maxCallValues {
		return codeInval
	}
	raw, ok := m.Memory().Read(uint32(s[1]), nargs*8)
	if !ok {
		return codeInval
	}
	// The arguments go into the instance's call stack, which the callee
	// computes in: no allocation. Only this instance's guest, holding its
	// call lock, uses it, and it cannot be re-entered meanwhile (a call
	// chain that comes back to it fails: see chain).
	// Room for as many results as the guest takes (maxRes), at most
	// maxCallValues: a callee with more allocates them.
	if n := max(nargs, min(maxRes, maxCallValues)); uint32(cap(in.callStack)) < n {
		in.callStack = make([]uint64, n)
	}
	args := in.callStack[:nargs]
	for i := range args {
		args[i] = binary.LittleEndian.Uint64(raw[i*8:])
	}
	res, err := in.imports[h](ctx, args)
	if err != nil {
		in.logger().Debug("imported call failed", "err", err)
		return codeOf(err)
	}
	if uint32(len(res)) > maxRes {
		return codeRange
	}
	out, ok := m.Memory().Read(uint32(s[3]), uint32(8*len(res))) // a view: written in place
	if !ok {
		return codeInval
	}
	for i, v := range res {
		binary.LittleEndian.PutUint64(out[i*8:], v)
	}
	return int32(len(res))
}

func hostRequest(ctx context.Context, in *instance, m api.Module, s []uint64) int32 {
	name, ok := readString(m, s[0], s[1], maxName)
	if !ok || in.k == nil {
		return codeInval
	}
	if _, err := in.k.Request(ctx, name); err != nil {
		in.logger().Debug("request failed", "module", name, "err", err)
		return codeOf(err)
	}
	return 0
}

func hostHook(_ context.Context, in *instance, m api.Module, s []uint64) int32 {
	event, ok := readString(m, s[0], s[1], maxName)
	if !ok || !in.initing || in.fnHook == nil {
		return codeInval
	}
	id := uint64(uint32(s[2]))
	what := "hook " + event
	err := in.k.Hook(event, func(ctx context.Context, _ any) error {
		return in.callRC(ctx, what, &in.fnHook, in.l.callTicks, id)
	})
	if err != nil {
		return codeOf(err)
	}
	return 0
}

// valueTypes converts wazero's value types to raceless's (the same bytes:
// both use the binary format's encoding).
func valueTypes(ts []api.ValueType) []raceless.ValueType {
	out := make([]raceless.ValueType, len(ts))
	for i, t := range ts {
		out[i] = raceless.ValueType(t)
	}
	return out
}
