// Package ref provides a module reference count in the manner of Linux's
// percpu_ref: per-P counting while the module is live (no shared cache-line
// write on the fast path), and an exact shared counter once it is killed,
// so that "is it zero?" can be answered.
//
// # Modes
//
//	live  (per-P)  TryGet/Get/Put add to the caller's P slot. The true count
//	               is the sum of all slots plus shared-bias; no single slot
//	               means anything and a Put without a Get goes unnoticed.
//	dead  (exact)  TryGet fails; Get/Put use the shared atomic counter, which
//	               holds the exact count; Put refuses to go below zero.
//
// New(false) starts live, New(true) dead. Kill switches live -> dead and
// folds the slots into the shared counter; Revive switches back. Kill and
// Revive are serialised by mu.
//
// # The switch (Kill)
//
// A fast-path operation runs pinned to its P (percpu.Pin: no preemption, no
// other goroutine on that P) and does
//
//	busy = 1 ; if mode == live { n += d } ; busy = 0
//
// on its P's slot. Kill stores mode = dead, calls percpu.Heavy, then for each
// slot waits for busy == 0 and moves n into the shared counter. Ordering:
//
//   - busy = 1 (store) then load of mode, against Kill's store of mode then
//     load of busy, is a Dekker pair: with Light, Heavy (membarrier) sits
//     between Kill's store and its loads and forces a full barrier on the
//     fast path's CPU, so either Kill sees busy != 0 and waits, or the fast
//     path's load of mode comes after the barrier and sees dead. Without
//     Light all four accesses are sequentially consistent atomics.
//   - n += d then busy = 0 are stores in program order; on x86-TSO (the only
//     Light architecture) Kill seeing busy == 0 implies it sees n.
//
// So after the loop every fast-path operation is either counted in a slot
// that Kill read, or saw dead and took the slow path. The shared counter
// carries a bias (1<<62) while live, so that slow-path Puts during the
// transfer can neither reach zero nor look like underflows; Kill adds
// (sum of slots - bias) in one atomic add, which is the instant the exact
// count is known ("the switch"). Kill reports true iff that count is zero.
//
// # Exactly one winner
//
// A TryGet succeeds only on the fast path in live mode before Kill drained
// its slot, or on the slow path under mu in live mode (a P beyond the slots).
// Either way its +1 is in the count Kill computes. So if Kill returns true,
// every TryGet that succeeded has already been matched by its Put, and every
// TryGet from then on fails until Revive. TryGet racing a Kill may fail while
// the Kill is in progress even if the Kill then reports a nonzero count.
//
// # Underflow
//
// In dead mode a Put at zero is refused (returns false, counted in
// Underflows). In live mode slots legitimately go negative (get on one P,
// put on another), so an unmatched Put is only found when Kill computes a
// negative total; Kill then clamps the count to zero and adds the deficit to
// Underflows.
package ref

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/raceless/raceless/internal/percpu"
)

const (
	modeLive uint32 = iota
	modeDead
)

// bias keeps the shared counter far from zero while live.
const bias = int64(1) << 62

// Ref is a reference count with a live/dead switch. All methods are safe
// for concurrent use, may be called from module code and from inside grace
// read sections; only WaitZero blocks.
type Ref struct {
	mode  atomic.Uint32 // modeLive or modeDead; written under mu by Kill/Revive (pairs with busy in fast)
	slots []slot        // per-P, indexed by percpu.Pin
	_     [percpu.CacheLine - 4 - 4 - 24]byte

	shared atomic.Int64 // dead: the exact count; live: bias + slow-path operations
	under  atomic.Int64 // detected unmatched Puts

	mu   sync.Mutex    // guards mode transitions, live-mode slow-path TryGet, zero; leaf lock
	zero chan struct{} // closed when the dead count reaches zero or on Kill; nil when nobody waits
}

// slot is one P's counter. Only the goroutine pinned to that P writes it
// (plain stores under Light); Kill reads it after busy drops to zero.
type slot struct {
	busy uint64 // nonzero while the owner is between its mode check and its update
	n    uint64 // this P's share of the count (two's complement: may be "negative")
	_    [percpu.CacheLine - 16]byte
}

// New returns a Ref with count zero. If dead, TryGet fails until Revive
// (a module starts dead while "coming"; its own Gets still count, exactly).
func New(dead bool) *Ref {
	r := &Ref{slots: make([]slot, max(runtime.GOMAXPROCS(0), runtime.NumCPU()))}
	if dead {
		r.mode.Store(modeDead)
	} else {
		r.shared.Store(bias)
	}
	return r
}

// fast adds d to the caller's P slot if the Ref is live. It reports false,
// having changed nothing, if the Ref is dead or the P has no slot.
func (r *Ref) fast(d uint64) bool {
	pid := percpu.Pin()
	if pid >= len(r.slots) {
		percpu.Unpin()
		return false
	}
	s := &r.slots[pid]
	percpu.Enter(&s.busy) // pairs with Kill's mode store + Heavy + busy load
	ok := r.mode.Load() == modeLive
	if ok {
		percpu.Inc64(&s.n, d)
	}
	percpu.Exit(&s.busy) // after n: Kill reads n once it sees busy == 0
	percpu.Unpin()
	return ok
}

// TryGet takes a reference unless the Ref has been killed (or was created
// dead and not revived).
func (r *Ref) TryGet() bool {
	if r.fast(1) {
		return true
	}
	return r.slowTryGet()
}

func (r *Ref) slowTryGet() bool {
	if r.mode.Load() != modeLive {
		return false
	}
	// Live but no slot for this P (GOMAXPROCS raised after New): count in
	// the shared counter under mu, so a concurrent Kill cannot miss it.
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode.Load() != modeLive {
		return false
	}
	r.shared.Add(1)
	return true
}

// Get takes a reference unconditionally, even when dead (the owner's own
// references, e.g. during init).
func (r *Ref) Get() {
	if r.fast(1) {
		return
	}
	// Dead, or live without a slot: the shared counter counts in both modes
	// (while live it is folded in by Kill).
	r.shared.Add(1)
}

// Put drops a reference. It reports false, leaving the count unchanged, for a
// Put without a matching get detected now; in live mode detection is
// deferred to the next Kill (see the package comment).
func (r *Ref) Put() bool {
	if r.fast(^uint64(0)) {
		return true
	}
	return r.slowPut()
}

// slowPut is Put in dead mode (or for a P without a slot).
func (r *Ref) slowPut() bool {
	for {
		v := r.shared.Load()
		if v <= 0 {
			r.under.Add(1)
			return false
		}
		if r.shared.CompareAndSwap(v, v-1) {
			if v == 1 {
				r.signalZero() // only dead mode can reach zero (bias)
			}
			return true
		}
	}
}

// Kill makes further TryGets fail and switches to exact counting. It
// returns true iff the count was zero at the switch; in that case no
// successful TryGet is outstanding and none will succeed until Revive.
// Killing a dead Ref reports whether its count is zero now. Kill does not
// block on references; it may wait a moment for fast-path operations in
// flight on other Ps (a few instructions each).
func (r *Ref) Kill() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode.Load() == modeDead {
		return r.shared.Load() == 0
	}
	r.mode.Store(modeDead) // pairs with busy = 1 then mode load in fast
	percpu.Heavy()
	var sum uint64
	for i := range r.slots {
		s := &r.slots[i]
		for spins := 0; atomic.LoadUint64(&s.busy) != 0; spins++ {
			// The owner is pinned and running (or its thread was descheduled
			// by the OS): it finishes in a few instructions.
			if spins > 100 {
				runtime.Gosched()
			}
		}
		sum += atomic.LoadUint64(&s.n) // visible: stored before busy = 0 (TSO or atomics)
		atomic.StoreUint64(&s.n, 0)    // no fast path touches the slot until Revive's mode store
	}
	n := r.shared.Add(int64(sum) - bias) // the switch: the exact count
	for n < 0 {
		// Unmatched Puts made in live mode: clamp to zero and record them.
		if r.shared.CompareAndSwap(n, 0) {
			r.under.Add(-n)
			n = 0
			break
		}
		n = r.shared.Load()
	}
	r.signalZeroLocked() // waiters re-check: they wait for dead and zero
	return n == 0
}

// Revive undoes Kill (a refused unload): TryGet succeeds again and counting
// returns to per-P. References taken while dead stay counted. Reviving a
// live Ref does nothing.
func (r *Ref) Revive() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode.Load() == modeLive {
		return
	}
	r.shared.Add(bias)     // before going live: slow-path Puts stay off zero
	r.mode.Store(modeLive) // pairs with the mode load in fast; slots are zero (Kill or New)
}

// Count returns the count: exact when dead (outside a Kill in progress), a
// best-effort sum, never negative, when live.
func (r *Ref) Count() int64 {
	v := r.shared.Load()
	if v >= bias/2 {
		v -= bias
		for i := range r.slots {
			v += int64(atomic.LoadUint64(&r.slots[i].n))
		}
	}
	return max(v, 0)
}

// Underflows returns how many Puts without a matching get were detected.
func (r *Ref) Underflows() int64 { return r.under.Load() }

// Dead reports whether the Ref is in dead (exact counting) mode.
func (r *Ref) Dead() bool { return r.mode.Load() == modeDead }

// WaitZero returns nil when the Ref is dead and its count is zero, or
// ctx.Err() if ctx ends first. A live Ref has no exact count, so WaitZero
// on a live Ref waits for a Kill first (a Revive makes it wait for the next
// Kill). Must not be called while holding a reference that only the caller
// would put.
func (r *Ref) WaitZero(ctx context.Context) error {
	for {
		r.mu.Lock()
		if r.mode.Load() == modeDead && r.shared.Load() == 0 {
			r.mu.Unlock()
			return nil
		}
		// The check and the channel install are under mu, and every waker
		// takes mu after making the count zero: no lost wake-up.
		if r.zero == nil {
			r.zero = make(chan struct{})
		}
		c := r.zero
		r.mu.Unlock()
		select {
		case <-c:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (r *Ref) signalZero() {
	r.mu.Lock()
	r.signalZeroLocked()
	r.mu.Unlock()
}

func (r *Ref) signalZeroLocked() {
	if r.zero != nil {
		close(r.zero)
		r.zero = nil
	}
}

var _ [percpu.CacheLine - unsafe.Sizeof(slot{})]byte
