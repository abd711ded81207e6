package wasm

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCallLockExclusion hammers one lock from more goroutines than CPUs,
// so that callers take the slow path, and checks that holders never
// overlap and that every caller gets through (no lost wakeup: the test
// would hang, and fails at its deadline instead).
func TestCallLockExclusion(t *testing.T) {
	var (
		c       callLock
		tick    atomic.Int64
		inside  atomic.Int32
		counter int // guarded by c
	)
	const goroutines, iters = 8, 2000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range iters {
				c.lock(&tick, 10)
				if inside.Add(1) != 1 {
					t.Error("two holders at once")
				}
				counter++
				if (g+i)%7 == 0 {
					runtime.Gosched() // hold the lock across a reschedule: waiters queue
				}
				inside.Add(-1)
				c.unlock()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("callers stuck: %d waiting", c.waiters.Load())
	}
	c.lock(&tick, 10)
	defer c.unlock()
	if counter != goroutines*iters {
		t.Fatalf("counter %d, want %d", counter, goroutines*iters)
	}
}

// TestCallLockClaim walks the state machine of the word: the watchdog
// claims only a held lock whose deadline has passed, and only once.
func TestCallLockClaim(t *testing.T) {
	var c callLock
	var tick atomic.Int64
	tick.Store(5)
	if c.claim(100) {
		t.Fatal("claimed an unlocked lock")
	}
	c.lock(&tick, 3) // deadline tick 8
	if got := atomic.LoadUint64(&c.word); got != 8 {
		t.Fatalf("word %d, want deadline 8", got)
	}
	if c.claim(8) {
		t.Fatal("claimed at the deadline tick itself")
	}
	if !c.claim(9) {
		t.Fatal("did not claim past the deadline")
	}
	if c.claim(10) || atomic.LoadUint64(&c.word) != claimed {
		t.Fatal("claimed twice")
	}
	if c.tryLock(&tick, 3) {
		t.Fatal("took a claimed lock")
	}
	c.unlock()
	if c.claim(100) {
		t.Fatal("claimed after unlock")
	}
	c.lock(&tick, noDeadline)
	if c.claim(1 << 61) {
		t.Fatal("claimed a lock held without deadline")
	}
	c.unlock()
}

// TestCallLockDeadlineFromAcquisition: a caller that waited gets its
// deadline from the tick at which it took the lock.
func TestCallLockDeadlineFromAcquisition(t *testing.T) {
	var c callLock
	var tick atomic.Int64
	c.lock(&tick, 3)
	got := make(chan uint64)
	go func() {
		c.lock(&tick, 3)
		got <- atomic.LoadUint64(&c.word)
		c.unlock()
	}()
	deadline := time.Now().Add(time.Minute)
	for c.waiters.Load() == 0 { // the waiter is queued (no sleep: poll with a deadline)
		if time.Now().After(deadline) {
			t.Fatal("waiter never queued")
		}
		runtime.Gosched()
	}
	tick.Store(40)
	c.unlock()
	if w := <-got; w != 43 {
		t.Fatalf("waiter's deadline %d, want 43 (tick 40 + 3)", w)
	}
}
