package ref

import (
	"sync/atomic"
	"testing"
	"unsafe"
)

func TestWordLifecycle(t *testing.T) {
	ws := &Words{}
	r := ws.New(false)
	h := ws.Register()
	defer h.Close()
	if !h.TryGet(r) || !h.Holding() {
		t.Fatal("TryGet on a live Ref failed")
	}
	if got := r.Count(); got != 1 {
		t.Fatalf("Count = %d, want 1", got)
	}
	if r.Kill() {
		t.Fatal("Kill saw zero with a Word's reference held")
	}
	if got := r.Count(); got != 1 {
		t.Fatalf("Count after Kill = %d, want 1", got)
	}
	other := ws.Register()
	defer other.Close()
	if other.TryGet(r) || other.Holding() {
		t.Fatal("TryGet after Kill succeeded")
	}
	waited := make(chan error, 1)
	go func() { waited <- r.WaitZero(testCtx(t)) }()
	h.Put(r) // dead: wakes the waiter
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if h.Holding() || r.Count() != 0 || !r.Kill() {
		t.Fatalf("after Put: holding %v, Count %d", h.Holding(), r.Count())
	}
	r.Revive()
	if !h.TryGet(r) {
		t.Fatal("TryGet after Revive failed")
	}
	h.Put(r)
	if !r.Kill() || r.Underflows() != 0 {
		t.Fatalf("Kill after Put: count %d, underflows %d", r.Count(), r.Underflows())
	}
}

// A Kill with no Word registered skips the barrier and the scan; a Word
// registered after it still fails to take a reference, and one registered
// and closed since leaves no trace.
func TestWordRegisteredAfterKill(t *testing.T) {
	ws := &Words{}
	r := ws.New(false)
	closed := ws.Register()
	closed.Close()
	if ws.Len() != 0 || !r.Kill() {
		t.Fatalf("Len %d; Kill with no Word registered saw a reference", ws.Len())
	}
	h := ws.Register()
	defer h.Close()
	if ws.Len() != 1 || h.TryGet(r) || h.Holding() {
		t.Fatal("a Word registered after the Kill took a reference")
	}
	r.Revive()
	if !h.TryGet(r) || r.Kill() {
		t.Fatal("after Revive: TryGet failed, or Kill missed the reference")
	}
	h.Put(r)
}

// A Word is counted by the Refs of its own set only.
func TestWordOtherSet(t *testing.T) {
	a, b := &Words{}, &Words{}
	h := a.Register()
	defer h.Close()
	ra, rb := a.New(false), b.New(false)
	if !h.TryGet(ra) {
		t.Fatal("TryGet failed")
	}
	if !rb.Kill() {
		t.Fatal("a Ref of another set counted the Word")
	}
	if ra.Kill() {
		t.Fatal("the Word's own set's Ref did not count it")
	}
	h.Put(ra)
}

// A Word caught between announcing itself and reading the mode (entering)
// may have found the Ref live: Kill waits for it to settle, and counts it
// if it ends up holding.
func TestKillWaitsForEnteringWord(t *testing.T) {
	ws := &Words{}
	r := ws.New(false)
	h := ws.Register()
	defer h.Close()
	a := uint64(uintptr(unsafe.Pointer(r)))
	atomic.StoreUint64(&h.v, a|entering) // a TryGet that has loaded "live" and not yet stored

	waiting := make(chan struct{})
	var once atomic.Bool
	settleHook = func() {
		if once.CompareAndSwap(false, true) {
			close(waiting)
		}
	}
	defer func() { settleHook = nil }()
	killed := make(chan bool)
	go func() { killed <- r.Kill() }()
	select {
	case <-waiting: // Kill is waiting for the entering Word
	case zero := <-killed:
		t.Fatalf("Kill returned %v without waiting for an entering Word", zero)
	}
	atomic.StoreUint64(&h.v, a) // the TryGet succeeds
	if <-killed {
		t.Fatal("Kill saw zero although the entering Word got its reference")
	}
	h.Put(r)
	if r.Count() != 0 || !r.Kill() {
		t.Fatalf("Count after Put = %d", r.Count())
	}
}

func BenchmarkWordTryGetPut(b *testing.B) {
	ws := &Words{}
	r := ws.New(false)
	h := ws.Register()
	defer h.Close()
	for b.Loop() {
		if h.TryGet(r) {
			h.Put(r)
		}
	}
}
