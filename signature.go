package raceless

import (
	"slices"
	"strings"
)

// ValueType is the WebAssembly type of one value on a Func's stack, encoded
// as in the WebAssembly binary format (and as wazero's api.ValueType).
type ValueType byte

// The value types a Func's stack carries: an i32 or f32 in the low 32 bits
// of its uint64, an i64 or f64 in all 64.
const (
	ValueTypeI32 ValueType = 0x7f
	ValueTypeI64 ValueType = 0x7e
	ValueTypeF32 ValueType = 0x7d
	ValueTypeF64 ValueType = 0x7c
)

// String returns the type's name in the WebAssembly text format ("i32").
func (t ValueType) String() string {
	switch t {
	case ValueTypeI32:
		return "i32"
	case ValueTypeI64:
		return "i64"
	case ValueTypeF32:
		return "f32"
	case ValueTypeF64:
		return "f64"
	}
	return "unknown"
}

// Signature is the types of a Func's parameters and results. It is to a
// symbol what the kernel's symbol version (CONFIG_MODVERSIONS) is: Replace
// moves a module's importers to its replacement only when each symbol they
// hold has the same signature in both, or is declared by neither.
type Signature struct {
	Params  []ValueType
	Results []ValueType
}

// Equal reports whether s and o have the same types.
func (s Signature) Equal(o Signature) bool {
	return slices.Equal(s.Params, o.Params) && slices.Equal(s.Results, o.Results)
}

// String formats s as "(i32,i32)->(i64)".
func (s Signature) String() string {
	list := func(ts []ValueType) string {
		names := make([]string, len(ts))
		for i, t := range ts {
			names[i] = t.String()
		}
		return "(" + strings.Join(names, ",") + ")"
	}
	return list(s.Params) + "->" + list(s.Results)
}

// Signer is implemented by modules that declare the signatures of the Funcs
// they export. A wasm module always does (its exports are typed); a native
// module may. ok is false for a symbol whose types the module does not
// declare. The answer must not change once Init has returned.
type Signer interface {
	Signature(symbol string) (sig Signature, ok bool)
}

// signature asks m's module for the signature of symbol, through catch (a
// panic taints m and counts as undeclared).
func (m *Instance) signature(symbol string) (sig Signature, ok bool) {
	s, is := m.mod.(Signer)
	if !is {
		return Signature{}, false
	}
	defer m.catch("signature", symbol, nil, nil)
	return s.Signature(symbol)
}

// Signature reports the signature the owner declares for the symbol the
// Binding holds (see Signer). ok is false when it declares none, for a
// Binding of another kind, and after Release.
func (b *Binding) Signature() (Signature, bool) {
	if b.owner == nil || b.reg.key.kind != KindSymbol || b.reg.fn == nil {
		return Signature{}, false
	}
	return b.owner.signature(b.reg.key.name)
}
