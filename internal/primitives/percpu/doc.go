// Package percpu holds the machine-level pieces shared by the fast paths in
// internal/primitives/grace and internal/primitives/ref:
//
//   - Spread/Slots: choose one of a set of padded counter slots (at least
//     four for each P, so that running goroutines rarely collide) from a
//     hash of the goroutine's stack address (no call, no pinning). Slots
//     chosen this way have no exclusive writer, so they are only ever updated
//     with atomic read-modify-writes and summed; see index.go.
//   - Heavy: the heavy side of an asymmetric barrier. On Linux/amd64 it is
//     membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which makes every CPU
//     currently running a thread of this process execute a full memory
//     barrier before it returns. That lets the light side (grace's registered
//     readers) use plain stores with no fence: see "Light" below and
//     docs/fastpaths.md.
//   - Light reports whether the light side may use plain stores. It is true
//     only when all of these hold: the build is not -race (the race detector
//     and Go's memory model do not know about membarrier), GOARCH is amd64
//     (x86-TSO: stores become visible in program order and loads are not
//     reordered with older loads, so the only reordering the heavy side must
//     repair is store->load, which is exactly what membarrier repairs), the
//     build is not raceless_portable, and membarrier registration succeeded
//     at init. Otherwise Store64 is a sequentially consistent atomic and
//     Heavy is a no-op; the algorithms in grace are written so that both
//     settings are correct.
//
// Build tags: "race" selects atomics (const raceEnabled); "raceless_portable"
// selects them too, whatever the platform: the fallback that relies on
// nothing but Go's memory model. (Earlier versions pinned to a P by
// linking to runtime.procPin; nothing here links to runtime internals any
// more.)
package percpu

import "sync/atomic"

// light is fixed at init: see the package comment. Every light-side access
// goes through Store64 so that the choice is made in one place.
var light = initLight()

func initLight() bool {
	return !raceEnabled && !portable && tsoArch && membarrierRegister()
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
