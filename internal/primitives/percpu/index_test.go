package percpu

import (
	"sync"
	"testing"
)

func TestSlots(t *testing.T) {
	for n := -1; n <= 300; n++ {
		count, shift := Slots(n)
		if count < 4*max(n, 1) || count&(count-1) != 0 || count >= 8*max(n, 1) {
			t.Fatalf("Slots(%d) = %d", n, count)
		}
		if 1<<(64-shift) != count {
			t.Fatalf("Slots(%d): shift %d for %d slots", n, shift, count)
		}
		if h := ^uint64(0) >> shift; h >= uint64(count) {
			t.Fatalf("Slots(%d): index %d out of %d", n, h, count)
		}
	}
}

// Goroutines alive at the same time have disjoint stacks, hence different
// 2 KiB stack blocks, hence different hashes before the shift (multiplying by
// an odd constant is a bijection), unless a stack moved (grew) between the
// samples and another goroutine got the old one: most must differ. Each
// goroutine grows its stack before it samples, so that the calls after the
// sample (which need more stack under -race) do not move it and hand its
// old block to a goroutine that starts later.
func TestSpread(t *testing.T) {
	const n = 64
	var wg, ready sync.WaitGroup
	hashes := make([]uint64, n)
	hold := make(chan struct{})
	for g := range n {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			growStack(32)
			hashes[g] = Spread()
			ready.Done()
			<-hold
		}()
	}
	ready.Wait()
	seen := map[uint64]bool{}
	for _, h := range hashes {
		seen[h] = true
	}
	close(hold)
	wg.Wait()
	if len(seen) < n/2 {
		t.Fatalf("%d live goroutines got %d distinct hashes", n, len(seen))
	}
}

// growStack uses about depth KiB of stack.
//
//go:noinline
func growStack(depth int) byte {
	var buf [1024]byte
	if depth > 0 {
		buf[depth%len(buf)] = growStack(depth - 1)
	}
	return buf[0]
}

var sink uint64

func BenchmarkSpread(b *testing.B) {
	for i := 0; i < b.N; i++ {
		sink += Spread()
	}
}
