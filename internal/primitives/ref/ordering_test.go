package ref

import (
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/raceless/raceless/internal/primitives/percpu"
)

// A TryGet that loaded the mode before Kill stored modeDead, and adds to a
// slot after Kill swapped it: the dead bit in the add's result is all that
// stops it (the mode load is past). Made deterministic by putting the mode
// back to live by hand after the Kill.
func TestTryGetDeadSlot(t *testing.T) {
	r := New(false)
	if !r.Kill() {
		t.Fatal("Kill of an unused Ref saw a reference")
	}
	r.mode.Store(modeLive) // what the racing TryGet read
	got := r.TryGet()
	r.mode.Store(modeDead)
	if got {
		t.Fatal("TryGet succeeded on a killed slot: it is in no count, and the Kill that saw zero stands")
	}
	if r.Count() != 0 || !r.Kill() {
		t.Fatalf("Count %d after a failed TryGet on a dead slot", r.Count())
	}
	r.Revive() // discards the junk add
	if !r.TryGet() || r.Kill() || !r.Put() {
		t.Fatal("Ref unusable after Revive")
	}
}

// Kill takes effect at one instant for every slot: once it has stored
// modeDead, a TryGet fails even on a slot the sweep has not reached yet
// (made deterministic: the mode is set by hand, no slot swapped).
func TestKillTakesEffectAtOnce(t *testing.T) {
	ws := &Words{}
	r := ws.New(false)
	h := ws.Register()
	defer h.Close()
	r.mode.Store(modeDead) // Kill's first step, before its sweep
	if r.TryGet() {
		t.Error("TryGet succeeded on a live slot after Kill stored modeDead")
		r.Put()
	}
	if h.TryGet(r) {
		t.Error("Word.TryGet succeeded after Kill stored modeDead")
		h.Put(r)
	}
	r.mode.Store(modeLive)
	if !r.Kill() {
		t.Fatalf("Count %d after failed TryGets", r.Count())
	}
}

// Kill's barrier against the Words' plain stores, modelled
// deterministically (grace's TestHeavyOrdersReaders does the same for
// readers; percpu's TestStoreBufferLitmus shows the buffering is real).
func TestKillBarrier(t *testing.T) {
	withHeavy := func(t *testing.T, after func()) {
		heavy = func() {
			percpu.Heavy()
			if after != nil {
				after()
				after = nil
			}
		}
		t.Cleanup(func() { heavy = percpu.Heavy })
	}
	// A Word announced itself (addr|1, still in its store buffer) and
	// read the mode: live. Kill's barrier drains the store; the scan must
	// find it and wait for it to settle; the Word then holds, and Kill
	// must not report zero. Without the barrier before the scan, the scan
	// reads 0 and Kill reports zero while the Word goes on to hold.
	t.Run("entering", func(t *testing.T) {
		ws := &Words{}
		r := ws.New(false)
		h := ws.Register()
		defer h.Close()
		a := uint64(uintptr(unsafe.Pointer(r)))
		if r.mode.Load() != modeLive { // the Word's load of the mode
			t.Fatal("test bug")
		}
		withHeavy(t, func() { atomic.StoreUint64(&h.v, a|entering) })
		settleHook = func() { atomic.StoreUint64(&h.v, a) } // its TryGet completes
		defer func() { settleHook = nil }()
		zero := r.Kill()
		atomic.StoreUint64(&h.v, a) // (if Kill never waited, the TryGet completes now)
		if zero {
			t.Fatal("Kill reported zero while a Word that found the Ref live holds a reference")
		}
		h.Put(r)
		if r.Count() != 0 || !r.Kill() {
			t.Fatalf("Count %d after Put", r.Count())
		}
	})
	// A TryGet that starts after Kill's barrier (its store is after the
	// barrier point) must fail: Kill stored modeDead before the barrier.
	t.Run("after", func(t *testing.T) {
		ws := &Words{}
		r := ws.New(false)
		h := ws.Register()
		defer h.Close()
		late := ws.Register()
		defer late.Close()
		var got, ran bool
		withHeavy(t, func() { ran, got = true, late.TryGet(r) })
		zero := r.Kill()
		if !ran {
			t.Fatal("Kill with a Word registered called no barrier")
		}
		if got {
			late.Put(r)
			t.Fatalf("a Word's TryGet after Kill's barrier succeeded (Kill reported zero: %v)", zero)
		}
		if !zero {
			t.Fatalf("Kill saw count %d", r.Count())
		}
	})
}
