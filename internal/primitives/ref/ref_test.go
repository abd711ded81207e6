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
	for i := 0; i < 2; i++ {
		if !r.Put() {
			t.Fatalf("Put %d failed", i+1)
		}
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
		ws := &Words{}
		r := ws.New(round%2 == 1)
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
				tryGet, put, done := workerOps(ws, r, w)
				defer done()
				for i := 0; !stop.Load(); i++ {
					if w == 0 {
						// The module's own references: unconditional.
						r.Get()
						if !r.Put() {
							fail("Put after Get refused")
						}
						continue
					}
					if !tryGet() {
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
					if !put() {
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

// Adds that find a slot dead are junk that Revive throws away (there is no
// undo): a Kill/Revive storm against Get/Put workers that also hold some
// references for the whole test must leave the count exact.
func TestKillReviveJunk(t *testing.T) {
	// The adds a dead-slot operation leaves behind, made by hand.
	r := New(false)
	r.Get()
	r.Kill()
	for i := range r.rows {
		r.slotAt(i).Add(3) // as if three in-flight adds had seen deadBit
	}
	if r.TryGet() {
		t.Fatal("TryGet on a dead Ref succeeded")
	}
	r.Get()
	if !r.Put() {
		t.Fatal("dead Put refused")
	}
	if got := r.Count(); got != 1 {
		t.Fatalf("dead Count = %d, want 1", got)
	}
	r.Revive()
	if got := r.Count(); got != 1 {
		t.Fatalf("Count after Revive = %d, want 1 (junk not discarded)", got)
	}
	r.Put()
	if !r.Kill() || r.Underflows() != 0 {
		t.Fatalf("Kill: count %d underflows %d, want 0 0", r.Count(), r.Underflows())
	}

	// The storm.
	workers := max(3, runtime.GOMAXPROCS(0)+1)
	const held = 5 // per worker, for the whole storm
	iters := 5000
	if raceOn || testing.Short() {
		iters = 500
	}
	r = New(false)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var ready sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		ready.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < held; i++ {
				r.Get()
			}
			ready.Done()
			for i := 0; !stop.Load(); i++ {
				if w%2 == 0 {
					r.Get()
				} else if !r.TryGet() {
					continue
				}
				if i%16 == 0 {
					runtime.Gosched()
				}
				if !r.Put() {
					t.Error("Put of a held reference refused")
					return
				}
			}
		}(w)
	}
	ready.Wait()
	for i := 0; i < iters; i++ {
		if r.Kill() {
			t.Fatal("Kill saw zero with references held")
		}
		if got := r.Count(); got < int64(workers*held) {
			t.Fatalf("dead Count %d below the %d references held", got, workers*held)
		}
		runtime.Gosched()
		r.Revive()
		runtime.Gosched()
	}
	stop.Store(true)
	wg.Wait()
	r.Kill()
	if got := r.Count(); got != int64(workers*held) {
		t.Fatalf("Count after the storm = %d, want %d", got, workers*held)
	}
	for i := 0; i < workers*held; i++ {
		if !r.Put() {
			t.Fatalf("Put %d of the held references refused", i)
		}
	}
	if r.Count() != 0 || r.Underflows() != 0 {
		t.Fatalf("Count %d Underflows %d, want 0 0", r.Count(), r.Underflows())
	}
	if r.Put() || r.Underflows() != 1 {
		t.Fatal("Put at zero after the storm was not refused")
	}
}

// Exactly one winner, with workers that mostly hold nothing, so that many
// Kills see zero while TryGets race them: after a Kill that saw zero no TryGet
// succeeds until Revive, and no successful TryGet was outstanding.
func TestKillZeroRace(t *testing.T) {
	rounds := 2000
	if raceOn || testing.Short() {
		rounds = 200
	}
	workers := max(2, runtime.GOMAXPROCS(0))
	var zeros, won int
	for round := 0; round < rounds; round++ {
		ws := &Words{}
		r := ws.New(false)
		var (
			killedZero  atomic.Bool
			stop        atomic.Bool
			outstanding atomic.Int64
			ops, wins   atomic.Int64
			bad         atomic.Value
			wg          sync.WaitGroup
		)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				tryGet, put, done := workerOps(ws, r, w)
				defer done()
				for !stop.Load() {
					if tryGet() {
						outstanding.Add(1)
						wins.Add(1)
						if killedZero.Load() {
							bad.CompareAndSwap(nil, "TryGet succeeded after a Kill that saw zero")
						}
						for k := 0; k < 8; k++ {
							wins.Add(0) // hold it a little
						}
						outstanding.Add(-1)
						put()
					}
					if ops.Add(1)%16 == 0 {
						runtime.Gosched() // let the killer in (2 Ps)
					}
				}
			}(w)
		}
		// Kill while the workers are at it (after a varying number of
		// attempts), then let them try again for a while.
		for ops.Load() < int64(16+round%64) {
			runtime.Gosched()
		}
		if r.Kill() {
			zeros++
			if outstanding.Load() != 0 {
				bad.CompareAndSwap(nil, "Kill saw zero with a TryGet outstanding")
			}
			killedZero.Store(true)
		}
		for after := ops.Load() + int64(4*workers); ops.Load() < after; {
			runtime.Gosched()
		}
		stop.Store(true)
		wg.Wait()
		won += int(wins.Load())
		if msg := bad.Load(); msg != nil {
			t.Fatalf("round %d: %s", round, msg)
		}
		if r.Count() != 0 || r.Underflows() != 0 {
			t.Fatalf("round %d: Count %d Underflows %d", round, r.Count(), r.Underflows())
		}
	}
	t.Logf("%d of %d Kills saw zero; %d successful TryGets", zeros, rounds, won)
}

// A dead slot whose junk drifted past junkMax is reset, and the Ref keeps
// working; a live slot may drift far either way without effect.
func TestSlotDrift(t *testing.T) {
	r := New(false)
	r.slotAt(0).Add(1 << 40)
	r.slotAt(1).Add(^uint64(1<<40 - 1)) // -(1<<40)
	r.Get()
	if r.Kill() {
		t.Fatal("Kill saw zero with a reference held")
	}
	if got := r.Count(); got != 1 {
		t.Fatalf("Count = %d, want 1", got)
	}
	for i := range r.rows {
		r.slotAt(i).Add(junkMax + 1)
	}
	if r.TryGet() {
		t.Fatal("TryGet on a dead Ref succeeded")
	}
	// TryGet on a dead Ref stops at the mode; Get still goes through its
	// slot (the owner's own references), finds the junk past junkMax and
	// resets that slot.
	r.Get()
	reset := 0
	for i := range r.rows {
		if r.slotAt(i).Load() == deadBit|slotBias {
			reset++
		}
	}
	if reset != 1 {
		t.Fatalf("%d slots reset, want 1 (the one Get used)", reset)
	}
	if !r.Put() { // the Get's reference
		t.Fatal("Put refused")
	}
	for i := range r.rows {
		r.slotAt(i).Store(deadBit | slotBias - junkMax - 1) // drifted down (Puts)
	}
	r.Get()
	for i := 0; i < 2; i++ {
		if !r.Put() {
			t.Fatalf("Put %d refused", i+1)
		}
	}
	reset = 0
	for i := range r.rows {
		if v := r.slotAt(i).Load(); v-(deadBit|slotBias-2) <= 4 {
			reset++
		}
	}
	if reset == 0 {
		t.Fatal("no slot reset after drifting down")
	}
	if r.Count() != 0 || r.Underflows() != 0 {
		t.Fatalf("Count %d Underflows %d, want 0 0", r.Count(), r.Underflows())
	}
	r.Revive()
	if !r.TryGet() || !r.Put() || !r.Kill() {
		t.Fatal("Ref unusable after junk resets")
	}
}

// workerOps returns worker w's TryGet and Put on r: odd workers take their
// references in a Word of ws (closed by done), even ones in r's slots.
func workerOps(ws *Words, r *Ref, w int) (tryGet, put func() bool, done func()) {
	if w%2 == 0 {
		return r.TryGet, r.Put, func() {}
	}
	h := ws.Register()
	return func() bool { return h.TryGet(r) }, func() bool { h.Put(r); return true }, h.Close
}
