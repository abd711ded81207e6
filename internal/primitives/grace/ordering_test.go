package grace

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raceless/raceless/internal/primitives/percpu"
)

// mustWait asserts that a grace period started now cannot complete: a short
// deadline expires instead (a nil return means it did not wait for a
// section it had to).
func mustWait(t *testing.T, d *Domain, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := d.Synchronize(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%s: Synchronize returned %v, want DeadlineExceeded (it did not wait for the section)", what, err)
	}
}

// A stale anonymous reader, made deterministic: between Lock's load of the
// phase and its add (testHookLockLoaded), a whole grace period runs and
// flips the phase. Lock must notice on its re-check and move to the new
// phase; otherwise its section sits in a phase no later grace period waits
// for, and the next Synchronize returns while the reader still uses what it
// loaded.
func TestStaleAnonymousReader(t *testing.T) {
	d := New()
	var cur atomic.Pointer[obj]
	cur.Store(&obj{a: 1, b: 1})
	loaded := 0
	testHookLockLoaded = func(d *Domain) {
		loaded++
		if loaded == 1 {
			if err := d.Synchronize(testCtx(t)); err != nil { // nothing to wait for: the add is not done
				t.Error(err)
			}
		}
	}
	tok := d.Lock()
	testHookLockLoaded = nil
	if loaded == 0 {
		t.Fatal("testHookLockLoaded did not run")
	}
	if got, want := uint32(tok.phase-1), d.idx.Load()%phases; got != want {
		t.Errorf("stale Lock returned phase %d; the current phase is %d", got, want)
	}
	p := cur.Load() // the section's read
	old := cur.Swap(&obj{a: 2, b: 2})
	mustWait(t, d, "grace period after a stale Lock")
	if p != old {
		t.Fatal("test bug: the reader did not load the old object")
	}
	d.Unlock(tok)
	if err := d.Synchronize(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if !d.drained(1<<phases - 1) {
		t.Fatal("counts unbalanced after the stale reader left")
	}
}

// A cancelled grace period has flipped the phase already; the sections of
// the old phase began before every later grace period, which must wait for
// them too, however many are cancelled in a row (more than phases-1 makes
// the next one drain its flip target first).
func TestCancelledSynchronizeKeepsPhase(t *testing.T) {
	for _, anon := range []bool{true, false} {
		d := New()
		r := d.Register()
		var tok Token
		if anon {
			tok = d.Lock()
		} else {
			r.Lock()
		}
		for k := 0; k < 2*phases+1; k++ {
			mustWait(t, d, "after cancelled grace periods")
		}
		if anon {
			d.Unlock(tok)
		} else {
			r.Unlock()
		}
		if err := d.Synchronize(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		r.Close()
	}
}

// The asymmetric barrier, modelled deterministically. With percpu.Light a
// registered reader's entering and leaving stores are plain: each may still
// sit in its CPU's store buffer when the grace period scans, and the only
// thing that makes it visible in time is Heavy, between the grace period's
// publishing stores and its scan (percpu's TestStoreBufferLitmus shows the
// buffering is real, and that Heavy repairs it). Here the reader's store is
// held back by hand and performed by the wrapped barrier, as membarrier's
// IPI would drain it: if wait scans without calling Heavy first, the scan
// misses the store.
func TestHeavyOrdersReaders(t *testing.T) {
	withHeavy := func(t *testing.T, drain func()) {
		heavy = func() {
			percpu.Heavy()
			if drain != nil {
				drain()
				drain = nil
			}
		}
		t.Cleanup(func() { heavy = percpu.Heavy })
	}

	// Entering: the reader loaded seq and, its ctr store still buffered,
	// read the current object. The updater unpublishes it and waits: the
	// grace period must wait for this reader.
	t.Run("enter", func(t *testing.T) {
		d := New()
		r := d.Register()
		defer closeReader(r)
		var cur atomic.Pointer[obj]
		cur.Store(&obj{a: 1, b: 1})
		s := d.seq.Load()     // Reader.Lock's load
		p := cur.Load()       // the section's first load, before its store is visible
		withHeavy(t, func() { // the barrier drains the reader's store
			atomic.StoreUint64(&r.ctr, s)
		})
		old := cur.Swap(&obj{a: 2, b: 2})
		mustWait(t, d, "reader whose entering store was buffered")
		if p != old || r.ctr == 0 {
			t.Fatal("test bug: the model reader is not in its section")
		}
		r.Unlock()
		if err := d.Synchronize(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	})

	// Leaving: the reader stored ctr=0 (buffered) and loaded waitSeq before
	// the grace period published it, so it will not wake anyone. The grace
	// period must see the leave in its scan, or it waits for a wake-up
	// that never comes.
	t.Run("leave", func(t *testing.T) {
		d := New()
		r := d.Register()
		defer closeReader(r)
		r.Lock()
		_ = d.waitSeq.Load() // Reader.Unlock's load: 0, no grace period waits
		withHeavy(t, func() { atomic.StoreUint64(&r.ctr, 0) })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := d.Synchronize(ctx); err != nil {
			t.Fatalf("Synchronize after the reader left: %v (lost wake-up: the scan did not see the buffered leave)", err)
		}
	})
}
