package ref

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestLifecycle(t *testing.T) {
	r := New(true)
	if r.TryGet() {
		t.Fatal("TryGet on a new dead Ref succeeded")
	}
	r.Get() // the module's own reference during init
	if got := r.Count(); got != 1 {
		t.Fatalf("Count = %d, want 1", got)
	}
	r.Revive()
	if !r.TryGet() {
		t.Fatal("TryGet after Revive failed")
	}
	if !r.Put() || !r.Put() {
		t.Fatal("Put failed")
	}
	if !r.TryGet() {
		t.Fatal("TryGet failed")
	}
	if r.Kill() {
		t.Fatal("Kill saw zero with a reference held")
	}
	if r.TryGet() {
		t.Fatal("TryGet after Kill succeeded")
	}
	if got := r.Count(); got != 1 {
		t.Fatalf("Count after Kill = %d, want 1", got)
	}
	// Refused unload: revive, then the holder leaves, then unload succeeds.
	r.Revive()
	r.Put()
	if !r.Kill() {
		t.Fatalf("Kill with no reference returned false (count %d)", r.Count())
	}
	if err := r.WaitZero(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if r.Underflows() != 0 {
		t.Fatalf("Underflows = %d", r.Underflows())
	}
}

func TestUnderflow(t *testing.T) {
	r := New(true)
	if r.Put() {
		t.Fatal("Put at zero on a dead Ref succeeded")
	}
	if r.Count() != 0 || r.Underflows() != 1 {
		t.Fatalf("Count %d Underflows %d, want 0 1", r.Count(), r.Underflows())
	}
	// Live: detection is deferred to the switch.
	r = New(false)
	r.Put()
	if !r.Kill() {
		t.Fatal("Kill after an unmatched Put did not clamp to zero")
	}
	if r.Count() != 0 || r.Underflows() != 1 {
		t.Fatalf("Count %d Underflows %d, want 0 1", r.Count(), r.Underflows())
	}
	if r.shared.Load() != 0 {
		t.Fatalf("shared = %d after clamp", r.shared.Load())
	}
}

// WaitZero on a live Ref waits for a Kill, then for the last Put; a Put that
// races WaitZero's setup is never lost.
func TestWaitZero(t *testing.T) {
	r := New(false)
	r.Get()
	short, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := r.WaitZero(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitZero on a live Ref: %v, want DeadlineExceeded", err)
	}
	done := make(chan error, 1)
	go func() { done <- r.WaitZero(testCtx(t)) }()
	if r.Kill() {
		t.Fatal("Kill saw zero with a reference held")
	}
	r.Put()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Many rounds of the race between the last Put and WaitZero.
	rounds := 2000
	if raceOn {
		rounds = 200
	}
	for i := 0; i < rounds; i++ {
		r := New(false)
		r.Get()
		r.Kill()
		go r.Put()
		if err := r.WaitZero(testCtx(t)); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
}

// TestTorture runs TryGet/Put and Get/Put workers against a killer that
// kills, revives and waits, and checks: the count never goes negative, a Kill
// that saw zero never coexists with a successful TryGet, WaitZero is woken.
func TestTorture(t *testing.T) {
	rounds, kills := 40, 25
	if testing.Short() || raceOn {
		rounds, kills = 10, 10
	}
	workers := max(3, runtime.GOMAXPROCS(0)+1)
	var totalKills, zeroKills, gets int64
	for round := 0; round < rounds; round++ {
		r := New(round%2 == 1)
		r.Revive()
		var (
			killedZero  atomic.Bool  // set while a Kill that saw zero is in force
			outstanding atomic.Int64 // successful TryGets not yet Put (a lower bound of the count)
			stop        atomic.Bool
			bad         atomic.Value
			wg          sync.WaitGroup
			nget        atomic.Int64
		)
		fail := func(msg string) { bad.CompareAndSwap(nil, msg) }
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; !stop.Load(); i++ {
					if w == 0 {
						// The module's own references: unconditional.
						r.Get()
						if !r.Put() {
							fail("Put after Get refused")
						}
						continue
					}
					if !r.TryGet() {
						runtime.Gosched()
						continue
					}
					nget.Add(1)
					outstanding.Add(1)
					if killedZero.Load() {
						fail("TryGet succeeded while a zero Kill is in force")
					}
					if i%64 == 0 {
						runtime.Gosched() // hold it across a reschedule (other P)
					}
					outstanding.Add(-1)
					if !r.Put() {
						fail("Put after TryGet refused")
					}
				}
			}(w)
		}
		ctx := testCtx(t)
		for k := 0; k < kills && bad.Load() == nil; k++ {
			for i := 0; i < 50; i++ {
				runtime.Gosched() // let the workers run a little
			}
			zero := r.Kill()
			totalKills++
			if v := r.shared.Load(); v < 0 {
				fail("negative count after Kill")
			}
			if zero {
				zeroKills++
				killedZero.Store(true)
				if n := outstanding.Load(); n != 0 {
					fail("Kill saw zero with TryGet references outstanding")
				}
				if err := r.WaitZero(ctx); err != nil {
					t.Fatal(err)
				}
				killedZero.Store(false)
			} else if k%4 == 3 {
				// Wait (rmmod --wait): TryGet holders drain; the Get worker
				// makes the count touch zero often.
				if err := r.WaitZero(ctx); err != nil {
					t.Fatalf("WaitZero after Kill: %v (count %d)", err, r.Count())
				}
			}
			r.Revive()
		}
		stop.Store(true)
		wg.Wait()
		gets += nget.Load()
		if msg := bad.Load(); msg != nil {
			t.Fatalf("round %d: %s", round, msg)
		}
		if !r.Kill() {
			t.Fatalf("round %d: final Kill saw count %d", round, r.Count())
		}
		if r.Underflows() != 0 {
			t.Fatalf("round %d: %d underflows", round, r.Underflows())
		}
	}
	t.Logf("%d kills (%d saw zero), %d successful TryGets", totalKills, zeroKills, gets)
}

func BenchmarkTryGetPut(b *testing.B) {
	r := New(false)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r.TryGet() {
				r.Put()
			}
		}
	})
}

func BenchmarkKillRevive(b *testing.B) {
	r := New(false)
	for b.Loop() {
		r.Kill()
		r.Revive()
	}
}

func BenchmarkTryGetPutSerial(b *testing.B) {
	r := New(false)
	for i := 0; i < b.N; i++ {
		if r.TryGet() {
			r.Put()
		}
	}
}
