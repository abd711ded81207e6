package percpu

import "unsafe"

// Spread returns a hash of the calling goroutine's stack address, for
// choosing one of a power-of-two number of counter slots: take the top bits,
// h >> (64 - log2(slots)) (see Shift). It costs a few instructions and no
// call (it inlines), unlike Pin/Unpin (two runtime calls and a dependent
// read-modify-write of the M's lock count, about 2.5 ns a pair here).
//
// Goroutine stacks are disjoint and at least 2 KiB (the runtime's stackMin),
// so goroutines running at the same time lie in different 2 KiB stack blocks
// and, with the multiplicative (Fibonacci) hash, usually get different slots;
// one goroutine gets the same slot from call to call at the same depth (a
// deeper, grown or moved stack just picks another slot). Unlike a P index it promises nothing: two running goroutines may
// share a slot. So slots chosen with Spread must be updated with atomic
// read-modify-writes and only ever summed: a collision costs contention on
// one cache line, never correctness.
//
//go:nosplit
func Spread() uint64 {
	var x byte
	return uint64(uintptr(unsafe.Pointer(&x))>>11) * 0x9E3779B97F4A7C15
}

// Slots returns the number of counter slots to allocate for n Ps (a power of
// two, at least 4n, so that Spread collisions between the goroutines running
// on n Ps are rare) and the shift that maps Spread's hash onto them.
func Slots(n int) (count int, shift uint) {
	count, shift = 1, 64
	for count < 4*max(n, 1) {
		count <<= 1
		shift--
	}
	return count, shift
}
