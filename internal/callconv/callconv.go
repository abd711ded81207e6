// Package callconv holds what the host (package raceless) and the wasm
// loader share about symbol calls beyond the public API.
//
// Invariant: a Recovering function never panics. The host publishes it as
// a raceless.Func (Kernel.Export converts it, so lookups and imports see a
// raceless.Func) and calls it through a Handle or a Caller without a
// deferred recover of its own: that defer is a few ns of a call into
// wasm. The wasm loader's symbols qualify: wazero recovers any panic in a
// guest call (a host function's included) and returns it as an error,
// and the code around that call is written not to panic.
package callconv

import "context"

// Recovering is a function in raceless.Func's calling convention that
// never panics (see the package invariant).
type Recovering func(ctx context.Context, stack []uint64) ([]uint64, error)
