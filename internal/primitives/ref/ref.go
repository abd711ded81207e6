// Package ref provides a module reference count in the manner of Linux's
// percpu_ref: per-slot counting while the module is live (no shared cache-line
// write on the fast path), and an exact shared counter once it is killed,
// so that "is it zero?" can be answered.
//
// # Modes
//
//	live  (slots)  TryGet/Get/Put add to one of the Ref's counter slots. The
//	               true count is the sum of all slots (less their bias) plus
//	               the shared counter (less its bias); no single slot means
//	               anything and a Put without a Get goes unnoticed.
//	dead  (exact)  TryGet fails; Get/Put use the shared atomic counter, which
//	               holds the exact count; Put refuses to go below zero.
//
// New(false) starts live, New(true) dead. Kill switches live -> dead and
// folds the slots into the shared counter; Revive switches back. Kill and
// Revive are serialised by mu.
//
// # Slots and the dead bit
//
// A slot is one uint64 word, chosen by percpu.Spread (a hash of the
// goroutine's stack address; goroutines running at the same time rarely share
// one). The slots are packed as Linux's per-CPU allocator packs per-CPU
// variables: slot i of 16 Refs share cache line i of a block (a row), so
// that a Ref costs 8 bytes per slot rather than a line per slot (4 slots
// per P: 64 bytes on 2 Ps, 8 KiB on 256, where padded slots took 1 KiB and
// 128 KiB). Goroutines running at the same time use different rows, and so
// different lines, whichever of the block's Refs they count on; two share a
// line only when their slots collide, as they would on one Ref. Every slot access is an atomic read-modify-write, so which slot an
// operation picks never matters for correctness, only for contention. A live
// slot holds slotBias + c, where c is its share of the count (any sign:
// get on one slot, put on another); bit 63 (deadBit) is clear. A dead slot
// holds deadBit + slotBias + junk. The fast path is a single atomic add:
//
//	v := slot.Add(d)      // d = +1 or -1
//	v & deadBit == 0  ->  done: counted in the slot (TryGet succeeds)
//	otherwise         ->  the Ref is dead for this slot: the add is junk, to
//	                      be thrown away; TryGet fails, Get/Put act on the
//	                      shared counter instead (no undo on the slot)
//
// # The switch (Kill) and Revive
//
// Kill, under mu: mode = dead; then for each slot old := Swap(slot,
// deadBit+slotBias) and sum += old - slotBias; then shared.Add(sum - bias).
// Revive, under mu: shared.Add(bias); Store(slot, slotBias) for each slot;
// mode = live. Each slot's atomic operations are totally ordered, so every
// fast-path add on slot s falls into exactly one of three intervals:
//
//   - before Kill's Swap on s: its result had deadBit clear, the operation
//     counted itself in the slot, and Kill's Swap moved it into the sum;
//   - between that Swap and Revive's Store on s: its result had deadBit set,
//     the operation did its work on the shared counter (or failed, TryGet),
//     and Revive's Store discards the junk add (there is no undo, so no
//     in-flight undo can land in a later live epoch and corrupt it);
//   - after the Store: deadBit clear, counted in the slot, live again.
//
// So every operation is counted exactly once, in a slot or in the shared
// counter. The shared counter carries a bias (1<<62) while live, so that
// slow-path Puts during the transfer can neither reach zero nor look like
// underflows; Kill's single shared.Add(sum - bias) is the instant the exact
// count is known ("the switch"), and Kill reports true iff it is zero.
// Junk only accumulates while dead, one unit per operation; a dead slot whose
// junk drifts far (2^61, not reachable in practice) is reset under mu.
// A live slot's c drifts with the imbalance between gets and puts made on it;
// it would have to reach 2^62 (centuries at one operation per nanosecond on
// one slot) to corrupt the dead bit; Revive resets it.
//
// # Exactly one winner
//
// A TryGet succeeds only if its add came before Kill's Swap of its slot, so
// its +1 is in the count Kill computes. So if Kill returns true, every TryGet
// that succeeded has already been matched by its Put, and since every slot is
// dead by the time Kill returns, every TryGet from then on fails until
// Revive. A TryGet racing a Kill may fail while the Kill is in progress even
// if the Kill then reports a nonzero count, and may succeed on a slot that
// Kill has not reached yet (it is then in the count).
//
// # Underflow
//
// In dead mode a Put at zero is refused (returns false, counted in
// Underflows). In live mode slots legitimately go below their bias (get on
// one slot, put on another), so an unmatched Put is only found when Kill
// computes a negative total; Kill then clamps the count to zero and adds the
// deficit to Underflows.
//
// # Words
//
// A Ref made by Words.New also counts the references held in that set's
// Words: one goroutine's word each, taken and dropped with plain stores,
// which Kill reads after a membarrier (see Words). Kill, Count and
// WaitZero include them; the slot argument above is unchanged.
package ref

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/raceless/raceless/internal/primitives/percpu"
)

const (
	modeLive uint32 = iota
	modeDead
)

const (
	// bias keeps the shared counter far from zero while live.
	bias = int64(1) << 62
	// deadBit marks a dead slot; slotBias centres a slot's count between 0
	// and deadBit so that it may drift either way without touching deadBit.
	deadBit  = uint64(1) << 63
	slotBias = uint64(1) << 62
	// junkMax bounds the junk a dead slot may gather before it is reset.
	junkMax = uint64(1) << 61
)

// Ref is a reference count with a live/dead switch. All methods are safe
// for concurrent use, may be called from module code and from inside grace
// read sections; only WaitZero blocks.
type Ref struct {
	// Read-mostly line: the fast path reads rows, col and shift.
	rows  []slotRow // the block's rows: slot i is rows[i].n[col]
	col   uintptr   // this Ref's column in every row (< refsPerRow)
	shift uint      // percpu.Spread() >> shift indexes rows
	// words is the set whose Words this Ref counts (Words.New);
	// nil for none.
	words *Words
	mode  atomic.Uint32 // modeLive or modeDead; written under mu by Kill/Revive; read first by TryGet
	_     [percpu.CacheLine - 24 - 8 - 8 - 8 - 4]byte

	shared atomic.Int64 // dead: the exact count; live: bias + slow-path operations
	under  atomic.Int64 // detected unmatched Puts

	mu   sync.Mutex    // guards mode transitions, dead-slot resets, zero; leaf lock
	zero chan struct{} // closed when the dead count reaches zero or on Kill; nil when nobody waits
}

// refsPerRow is how many Refs share a block (one word each per row).
const refsPerRow = int(percpu.CacheLine / 8)

// slotRow is one cache line of a block: slot i of each of its Refs. A word
// holds, live, slotBias + the Ref's share of the count in that slot; dead,
// deadBit + slotBias + junk.
type slotRow struct {
	n [refsPerRow]atomic.Uint64
}

// blocks hands out columns of slot blocks to new Refs. A column is never
// reused: a block is freed by the collector once none of its Refs is
// reachable (a stale Handle may still TryGet on a gone module's Ref).
var blocks struct {
	mu   sync.Mutex // guards the fields below; a leaf
	cur  []slotRow  // the block being handed out
	next int        // its next free column
}

// newSlots returns a column of a block of n rows (a power of two: rows of
// 128 bytes and a power-of-two count keep every row on its own line, the
// allocator aligning such objects to their size class).
func newSlots(n int) ([]slotRow, uintptr) {
	blocks.mu.Lock()
	defer blocks.mu.Unlock()
	if len(blocks.cur) != n || blocks.next == refsPerRow {
		blocks.cur, blocks.next = make([]slotRow, n), 0
	}
	col := blocks.next
	blocks.next++
	return blocks.cur, uintptr(col)
}

// New returns a Ref with count zero. If dead, TryGet fails until Revive
// (a module starts dead while "coming"; its own Gets still count, exactly).
// It has 4 slots per P (GOMAXPROCS now: no more goroutines than that run
// at once; a later increase only makes their slots collide more often).
func New(dead bool) *Ref {
	n, shift := percpu.Slots(runtime.GOMAXPROCS(0))
	rows, col := newSlots(n)
	r := &Ref{rows: rows, col: col, shift: shift}
	init := slotBias
	if dead {
		r.mode.Store(modeDead)
		init |= deadBit
	} else {
		r.shared.Store(bias)
	}
	for i := range r.rows {
		r.slotAt(i).Store(init)
	}
	return r
}

// slotAt returns slot i of the Ref.
func (r *Ref) slotAt(i int) *atomic.Uint64 {
	return &r.rows[i].n[r.col%uintptr(refsPerRow)]
}

// slot returns the calling goroutine's counter slot.
func (r *Ref) slot() *atomic.Uint64 {
	return &r.rows[percpu.Spread()>>(r.shift&63)].n[r.col%uintptr(refsPerRow)]
}

// TryGet takes a reference unless the Ref has been killed (or was created
// dead and not revived).
func (r *Ref) TryGet() bool {
	// Kill stores modeDead before it swaps the first slot: reading it
	// here makes Kill take effect at one instant for every slot (without
	// it, a TryGet could fail on a swapped slot and a later one succeed
	// on a slot not swapped yet: safe, as Kill counts it, but not
	// linearizable). A load of a read-mostly line, no shared write.
	if r.mode.Load() == modeDead {
		return false
	}
	s := r.slot()
	v := s.Add(1)
	if v&deadBit == 0 {
		return true // counted in the slot; Kill's Swap will see it
	}
	return r.tryGetDead(s, v)
}

// tryGetDead is TryGet on a dead slot: the add is junk, discarded by Revive.
// (Out of line, so that TryGet inlines.)
func (r *Ref) tryGetDead(s *atomic.Uint64, v uint64) bool {
	r.junk(s, v)
	return false
}

// Get takes a reference unconditionally, even when dead (the owner's own
// references, e.g. during init).
func (r *Ref) Get() {
	s := r.slot()
	if v := s.Add(1); v&deadBit != 0 {
		r.getDead(s, v)
	}
}

// getDead is Get on a dead slot: the slot add was junk; count exactly.
func (r *Ref) getDead(s *atomic.Uint64, v uint64) {
	r.junk(s, v)
	r.shared.Add(1)
}

// Put drops a reference. It reports false, leaving the count unchanged, for a
// Put without a matching get detected now; in live mode detection is
// deferred to the next Kill (see the package comment).
func (r *Ref) Put() bool {
	s := r.slot()
	v := s.Add(^uint64(0))
	if v&deadBit == 0 {
		return true
	}
	return r.putDead(s, v)
}

// putDead is Put on a dead slot: the slot add was junk; put exactly.
func (r *Ref) putDead(s *atomic.Uint64, v uint64) bool {
	r.junk(s, v)
	return r.slowPut()
}

// junk is called with the result v of an add that found s dead. If the junk
// on s has drifted too far from deadBit+slotBias (never in practice: it takes
// 2^61 operations on a dead Ref), reset it under mu, as Revive would.
func (r *Ref) junk(s *atomic.Uint64, v uint64) {
	if v-(deadBit+slotBias-junkMax) <= 2*junkMax {
		return
	}
	r.mu.Lock()
	if r.mode.Load() == modeDead { // not live, and no Kill/Revive in progress (mu): every slot is dead
		s.Store(deadBit | slotBias)
	}
	r.mu.Unlock()
}

// slowPut is Put on the shared counter (dead mode, or during Kill/Revive).
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
// block on references or on other goroutines' operations.
func (r *Ref) Kill() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode.Load() == modeDead {
		return r.shared.Load() == 0 && r.words.held(r, false) == 0
	}
	r.mode.Store(modeDead)
	var sum int64
	for i := range r.rows {
		// Live, so deadBit is clear in old: every add before this Swap is
		// counted in it, every add after it sees deadBit.
		old := r.slotAt(i).Swap(deadBit | slotBias)
		sum += int64(old - slotBias)
	}
	n := r.shared.Add(sum - bias) // the switch: the exact count, less the Words'
	var held int64
	if ws := r.words; ws != nil && ws.Len() > 0 {
		heavy() // percpu.Heavy; see Words: every Word is visible now
		held = ws.held(r, true)
	}
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
	return n == 0 && held == 0
}

// Revive undoes Kill (a refused unload): TryGet succeeds again and counting
// returns to the slots. References taken while dead stay counted. Reviving a
// live Ref does nothing.
func (r *Ref) Revive() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode.Load() == modeLive {
		return
	}
	r.shared.Add(bias) // before any slot goes live: slow-path Puts stay off zero
	for i := range r.rows {
		// Discards the junk of adds that saw deadBit (they acted on the
		// shared counter); adds after this store count in the slot.
		r.slotAt(i).Store(slotBias)
	}
	r.mode.Store(modeLive)
}

// Count returns the count: exact when dead (outside a Kill in progress), a
// best-effort sum, never negative, when live.
func (r *Ref) Count() int64 {
	v := r.shared.Load()
	if v >= bias/2 {
		v -= bias
		for i := range r.rows {
			if x := r.slotAt(i).Load(); x&deadBit == 0 { // a Kill may be in progress
				v += int64(x - slotBias)
			}
		}
	}
	return max(v, 0) + r.words.held(r, false)
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
		if r.mode.Load() == modeDead && r.shared.Load() == 0 && r.words.held(r, false) == 0 {
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

// heavy is percpu.Heavy; a test wraps it to model a Word whose store is
// still in its CPU's store buffer until the barrier (TestKillBarrier).
var heavy = percpu.Heavy

var _ [unsafe.Sizeof(slotRow{}) - percpu.CacheLine]byte // a row is one line
var _ [percpu.CacheLine - unsafe.Sizeof(slotRow{})]byte
