//go:build amd64

package percpu

// x86-TSO: see the package comment for why only store->load reordering has
// to be repaired by Heavy.
const tsoArch = true
