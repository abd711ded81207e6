// Package percpu holds the machine-level pieces shared by the fast paths in
// internal/grace and internal/ref:
//
//   - Pin/Unpin: pin the calling goroutine to its P (the runtime's procPin,
//     the same mechanism sync.Pool uses) and learn the P's index. While pinned
//     the goroutine cannot be preempted or rescheduled, so no other goroutine
//     runs on that P until Unpin: a per-P slot is then written by one thread
//     at a time.
//   - Heavy: the heavy side of an asymmetric barrier. On Linux/amd64 it is
//     membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which makes every CPU
//     currently running a thread of this process execute a full memory
//     barrier before it returns. That lets the light side (readers) use plain
//     stores with no fence: see "Light" below and docs/fastpaths.md.
//   - Light reports whether the light side may use plain accesses. It is true
//     only when all of these hold: the build is not -race (the race detector
//     and Go's memory model do not know about membarrier), GOARCH is amd64
//     (x86-TSO: stores become visible in program order and loads are not
//     reordered with older loads, so the only reordering the heavy side must
//     repair is store->load, which is exactly what membarrier repairs), Pin is
//     the real runtime procPin (exclusive per-P access), and membarrier
//     registration succeeded at init. Otherwise Store/Inc fall back to
//     sequentially consistent atomics and Heavy is a no-op; the algorithms in
//     grace and ref are written so that both settings are correct.
//
// Build tags: "race" selects atomics (const raceEnabled); "raceless_portable"
// avoids the go:linkname pull of runtime.procPin and hashes a per-goroutine
// stack address instead (non-exclusive, so it forces atomics too).
package percpu

import "sync/atomic"

// light is fixed at init: see the package comment. Every light-side access
// goes through Store64/Inc64 so that the choice is made in one place.
var light = initLight()

func initLight() bool {
	return !raceEnabled && pinExclusive && tsoArch && membarrierRegister()
}

// Light reports whether readers use plain (unfenced) stores, with Heavy
// paying for the barrier.
func Light() bool { return light }

// Store64 is the light side's store. With Light it is a plain store, which
// the heavy side orders with Heavy; otherwise a sequentially consistent
// atomic store (a full fence on amd64), which pairs with the heavy side's
// atomic loads directly. The heavy side always reads with atomic loads.
func Store64(p *uint64, v uint64) {
	if light {
		*p = v
		return
	}
	atomic.StoreUint64(p, v)
}

// Store32 is Store64 for uint32.
func Store32(p *uint32, v uint32) {
	if light {
		*p = v
		return
	}
	atomic.StoreUint32(p, v)
}

// Inc64 adds d to a per-P counter owned by the caller's pinned P. With Light
// (which implies exclusive pinning) it is a plain read-modify-write, safe
// because only the goroutine pinned to that P writes the slot; otherwise an
// atomic add.
func Inc64(p *uint64, d uint64) {
	if light {
		*p += d
		return
	}
	atomic.AddUint64(p, d)
}

// Enter marks the caller's P slot busy (*p is owned by the pinned P): a
// plain store of 1 under Light, an atomic store with exclusive pinning, an
// atomic increment otherwise (slots then are shared and busy is a count).
// Stores of constants, unlike increments, do not chain through store-to-load
// forwarding from one call to the next.
func Enter(p *uint64) {
	switch {
	case light:
		*p = 1
	case pinExclusive:
		atomic.StoreUint64(p, 1)
	default:
		atomic.AddUint64(p, 1)
	}
}

// Exit undoes Enter.
func Exit(p *uint64) {
	switch {
	case light:
		*p = 0
	case pinExclusive:
		atomic.StoreUint64(p, 0)
	default:
		atomic.AddUint64(p, ^uint64(0))
	}
}

// Heavy is the heavy side of the asymmetric barrier. When it returns, every
// thread of the process has executed a full memory barrier at some instant
// between Heavy's call and its return (or was not running, and a context
// switch is a full barrier). Cost: one system call, about 2 µs. Without
// Light it is a no-op: readers then fence themselves.
func Heavy() {
	if light {
		membarrier()
	}
}

// CacheLine is the padding unit: two 64-byte lines, because the adjacent-line
// prefetcher on x86 pulls lines in pairs.
const CacheLine = 128
