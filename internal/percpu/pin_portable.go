//go:build raceless_portable

package percpu

const pinExclusive = false

// Pin returns slot 0 with no exclusivity guarantee, so Light is false and
// every per-P access is atomic (correct, but the slot is shared).
func Pin() int { return 0 }

// Unpin is a no-op in the portable build.
func Unpin() {}
