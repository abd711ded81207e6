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
// samples and another goroutine got the old one: most must differ.
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

var sink uint64

func BenchmarkSpread(b *testing.B) {
	for i := 0; i < b.N; i++ {
		sink += Spread()
	}
}
