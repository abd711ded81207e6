// Package grace provides read-side critical sections and grace periods for
// Go, in the manner of Linux SRCU and userspace RCU (liburcu): a read section
// may block (Go code blocks), and Synchronize waits for every section that
// began before it, and for no section that began after it.
//
// # Two ways in
//
// A Reader, from Domain.Register, is a per-goroutine handle: its section is
// one word in the Reader's own cache line, written with a plain store. It is
// the fast path for request loops (a goroutine that serves many calls).
//
// Domain.Lock, the anonymous path, needs no handle: it counts the section in
// spread counters, SRCU style (a lock count and an unlock count per slot and
// per phase, atomic adds on the slot's own padded cache line; the slot is
// chosen by percpu.Spread, a hash of the goroutine's stack, so goroutines
// running at the same time rarely share one), and returns a Token naming the
// slot and phase whose unlock count Unlock adds to.
//
// # Grace periods
//
// Synchronize serialises with other grace periods of the domain and then:
//
//  1. takes a new sequence number S (seq.Add); registered readers record the
//     sequence number current when they enter, so the readers to wait for are
//     those with 0 < ctr < S: a reader that records S or more began after
//     step 1 and is never waited for, so new readers cannot starve it;
//  2. flips the anonymous phase (idx, 4 phases used round robin), so that
//     new anonymous sections count in the next phase;
//  3. waits until the old phase has drained: the sum of its unlock counts,
//     read first, equals the sum of its lock counts, read second. Every
//     counted unlock has its lock counted (the lock came first and is visible
//     by then), so equality means every counted lock has left.
//
// A "stale" anonymous reader loads idx, is delayed, and adds its lock count
// to the old phase after the scan (SRCU handles it by scanning the inactive
// phase before flipping). Here Lock reloads idx after its add and, if the
// phase moved, undoes the add (a balanced unlock) and enters the new phase;
// the ordering below guarantees that a reader invisible to the scan sees the
// flip on that reload. A phase is only flipped into once it is known to be
// drained; a cancelled Synchronize leaves its old phase marked undrained and
// the next one waits for it too (those sections began before it). Only
// after three cancelled grace periods in a row does a Synchronize have to
// drain its flip target first, and only then can a section that began after
// it delay it.
//
// # Memory ordering
//
// The read side must order its entering store (ctr, or the lock count) before
// the loads inside the section: a store->load order, which on every machine
// needs a full fence, the expensive part of a read section. As in liburcu's
// "memb" flavour, the fence moves to the grace-period side: percpu.Heavy is
// membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), after which every running
// thread of the process has executed a full barrier. The wait in step 3
// publishes its wake-up request (waitSeq / anonWait) and then calls Heavy,
// then scans. For any reader, its barrier point falls somewhere in its
// program:
//
//   - entering store before the barrier point: visible to the scan, so the
//     section is waited for (a stale anonymous reader then finds the flip on
//     its reload and undoes itself, which also wakes the waiter);
//   - entering store after it: the section's loads come after a full barrier
//     that follows the updater's unpublishing stores (made before
//     Synchronize), so the section cannot see the unpublished object and
//     need not be waited for;
//   - leaving: the reader stores ctr=0 (or adds its unlock count) and then
//     loads the wake-up request. Store before the barrier point: the scan sees
//     it. Load after the barrier point: it sees the request and wakes the
//     waiter through a channel (which also orders its store before the
//     rescan). This is the Dekker pair that gives "no lost wake-ups".
//
// The anonymous path uses atomic adds (full barriers on amd64, sequentially
// consistent in Go's memory model), so for it Heavy is redundant and the
// argument above holds with plain Dekker reasoning; since the adds are
// atomic, no slot needs an exclusive writer, and the slot is picked by
// hashing the stack address (percpu.Spread, no call) rather than by pinning
// to read the P index (two runtime calls, about 2.5 ns here). Measured, that
// beats both one Pin plus two atomic adds and two Pins with plain adds.
//
// The light side is plain stores only when percpu.Light() is true (amd64,
// not -race, membarrier available): on x86-TSO the leaving store cannot pass
// the section's loads, and the Go compiler keeps a load after the store whose
// memory state it consumes. Otherwise percpu.Store64 is a sequentially
// consistent atomic store, Heavy is a no-op, and the same Dekker argument holds
// with ordinary atomics. In -race builds every access involved is atomic, so
// the race detector sees the happens-before edge from a reader's leaving
// store to the updater's load that observes it.
//
// # Caveats
//
//   - Synchronize must not be called inside a read section of the same
//     domain (it would wait for itself until ctx ends).
//   - Sections on one Reader do not nest: Lock inside a section of the same
//     Reader panics. Anonymous sections nest freely, and a goroutine may hold
//     a Reader section and anonymous sections at once.
//   - A Reader is used by one goroutine at a time (it may be handed over with
//     a happens-before edge, outside a section); Close it when done, outside a
//     section, or the domain keeps scanning it.
package grace

import (
	"context"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/raceless/raceless/internal/primitives/percpu"
)

// Domain is a set of read sections that Synchronize waits for. Its methods
// are safe for concurrent use. The zero Domain is not usable; call New.
type Domain struct {
	// Read-mostly line: read by every Lock/Unlock, written only by
	// Synchronize.
	seq      atomic.Uint64 // grace-period sequence; Reader.Lock records it (pairs with the scan in readersDone)
	waitSeq  atomic.Uint64 // nonzero while a grace period waits for readers with ctr < waitSeq; loaded by Reader.Unlock after its leaving store (pairs with Heavy in wait)
	idx      atomic.Uint32 // anonymous phase counter (phase = idx % phases); loaded twice by Lock (pairs with Heavy in wait)
	anonWait atomic.Uint32 // bit i: a grace period waits for phase i; loaded by Unlock after its unlock count (pairs with Heavy in wait)
	slots    []anonSlot    // counters, indexed by percpu.Spread() >> shift
	shift    uint          // see percpu.Slots
	_        [percpu.CacheLine - 8 - 8 - 4 - 4 - 24 - 8]byte

	wake chan struct{} // capacity 1; a leaving reader that saw a wake-up request sends without blocking
	gp   chan struct{} // capacity 1; a semaphore serialising grace periods (a channel so that waiting honours ctx)

	undrained uint32 // guarded by gp: bit i set when phase i may hold sections (a grace period was cancelled after its flip)

	regMu   sync.Mutex // guards readers; leaf lock (nothing is taken while holding it)
	readers []*Reader
}

// anonSlot holds anonymous-section counters. A section picks its slot by
// stack address (percpu.Spread); there are several slots for each P
// (percpu.Slots) so that goroutines running at the same time rarely share
// a line. Updated with atomic adds, read by Synchronize.
type anonSlot struct {
	n [2 * phases]uint64 // lock counts of phases 0..3, then unlock counts
	_ [percpu.CacheLine - 16*phases]byte
}

const (
	// phases is the number of anonymous phases. Two suffice while every grace
	// period completes; more let a cancelled grace period leave its old
	// phase undrained without making the next one wait for new sections
	// (see Synchronize).
	phases     = 4
	unlockBase = phases // n[unlockBase+i] is the unlock count of phase i
)

// New returns an empty domain sized for the current GOMAXPROCS (a larger
// GOMAXPROCS later still works; slots are then shared more often).
func New() *Domain {
	n, shift := percpu.Slots(runtimeProcs())
	d := &Domain{
		slots: make([]anonSlot, n),
		shift: shift,
		wake:  make(chan struct{}, 1),
		gp:    make(chan struct{}, 1),
	}
	d.seq.Store(1) // a Reader's ctr is never 0 inside a section
	return d
}

// Token identifies an anonymous read section; pass it to Unlock. The zero
// Token is invalid.
type Token struct {
	slot  uint32 // the counter slot chosen by Lock
	phase uint8  // phase+1
}

// Lock enters an anonymous read section and returns the Token to pass to
// Unlock. The section may block and may end on another goroutine. Safe for
// concurrent use; may be nested.
func (d *Domain) Lock() Token {
	// The slot only spreads the counting over cache lines; the adds are
	// atomic, so no slot needs an exclusive writer (see percpu.Spread).
	k := uint32(percpu.Spread() >> (d.shift & 63))
	c := &d.slots[k]
	i := d.idx.Load() % phases
	if testHookLockLoaded != nil {
		testHookLockLoaded(d) // a stale reader: delayed between the load and the add
	}
	// Atomic add (a full barrier on amd64), paired with the lock-count scan
	// in drained; Heavy in wait covers the reload below as well.
	atomic.AddUint64(&c.n[i], 1)
	// The re-check: a grace period flipped the phase after our load, and its
	// scan may have missed our add (TestStaleAnonymousReader).
	if d.idx.Load()%phases != i {
		return d.relock(k, i)
	}
	return Token{slot: k, phase: uint8(i + 1)}
}

// relock is Lock's rare path: a grace period flipped the phase between our
// load of idx and our add to phase i, so we may be invisible to its scan and
// must not stay in the old phase. Undo (a balanced lock/unlock) and enter the
// new one.
func (d *Domain) relock(k, i uint32) Token {
	c := &d.slots[k]
	for {
		atomic.AddUint64(&c.n[unlockBase+i], 1)
		if d.anonWait.Load()&(1<<i) != 0 {
			d.wakeup()
		}
		i = d.idx.Load() % phases
		atomic.AddUint64(&c.n[i], 1)
		if d.idx.Load()%phases == i {
			return Token{slot: k, phase: uint8(i + 1)}
		}
	}
}

// Unlock leaves the anonymous section that the Lock returning t entered.
// Safe for concurrent use; may run on any goroutine.
func (d *Domain) Unlock(t Token) {
	if t.phase == 0 {
		panic("grace: Unlock with a zero Token")
	}
	i := uint32(t.phase - 1)
	// The unlock counts on the Lock's slot (lock and unlock counts are only
	// ever summed). Atomic add, paired with the unlock-count scan in drained.
	atomic.AddUint64(&d.slots[t.slot].n[unlockBase+i], 1)
	// Load after the unlock add: pairs with anonWait.Store+Heavy in wait.
	if d.anonWait.Load()&(1<<i) != 0 {
		d.wakeup()
	}
}

// Reader is a per-goroutine read-side handle. Its methods are not safe for
// concurrent use: one goroutine at a time.
type Reader struct {
	ctr uint64 // 0 outside a section, else seq at Lock; written by the owner (percpu.Store64), read by readersDone
	d   *Domain
	_   [percpu.CacheLine - 16]byte
}

// Register returns a new reader handle. Safe for concurrent use; may be called
// inside a read section.
func (d *Domain) Register() *Reader {
	r := &Reader{d: d}
	d.regMu.Lock()
	d.readers = append(d.readers, r)
	d.regMu.Unlock()
	return r
}

// Lock enters a read section on r. The section may block. Sections on one
// Reader do not nest: Lock inside a section of r panics.
func (r *Reader) Lock() {
	if r.ctr != 0 {
		panic("grace: Reader.Lock inside a section of the same Reader")
	}
	// A plain store under Light, ordered before the section's loads by Heavy
	// in wait (pairs with the atomic load in readersDone).
	percpu.Store64(&r.ctr, r.d.seq.Load())
}

// Unlock leaves the section entered by r.Lock.
func (r *Reader) Unlock() {
	c := r.ctr
	if c == 0 {
		panic("grace: Reader.Unlock outside a section")
	}
	percpu.Store64(&r.ctr, 0) // pairs with the atomic load in readersDone
	// Load after the leaving store: pairs with waitSeq.Store+Heavy in wait.
	if c < r.d.waitSeq.Load() {
		r.d.wakeup()
	}
}

// Close unregisters r. It must be called outside a section; r must not be
// used afterwards.
func (r *Reader) Close() {
	if r.ctr != 0 {
		panic("grace: Reader.Close inside a section")
	}
	d := r.d
	if d == nil {
		return
	}
	d.regMu.Lock()
	for i, x := range d.readers {
		if x == r {
			last := len(d.readers) - 1
			d.readers[i] = d.readers[last]
			d.readers[last] = nil
			d.readers = d.readers[:last]
			break
		}
	}
	d.regMu.Unlock()
	r.d = nil
}

// Synchronize returns when every read section of d that began before it was
// called has ended; sections that begin after it started do not delay it.
// It returns ctx.Err() if ctx ends first (the grace period is then
// incomplete, but the domain stays consistent). Safe for concurrent callers
// (grace periods are serialised). It must not be called inside a read
// section of d.
func (d *Domain) Synchronize(ctx context.Context) error {
	select {
	case d.gp <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-d.gp }()

	s := d.seq.Add(1) // registered readers entering from now record >= s
	cur := d.idx.Load()
	next := (cur + 1) % phases
	if d.undrained&(1<<next) != 0 {
		// Only after phases-1 cancelled grace periods in a row: the phase we
		// are about to flip into may still hold old sections, and flipping
		// into it would mix them with new ones. Drain it first (no new
		// section enters it meanwhile; new ones wait in cur, which we then
		// wait for below).
		if err := d.wait(ctx, 1<<next, 0); err != nil {
			return err
		}
		d.undrained &^= 1 << next
	}
	// Flip the anonymous phase; sections entering from now use the new one.
	// The flip is ordered before the scan by Heavy in wait, which pairs with
	// the add+reload in Lock. Then wait for the old phase and any phase an
	// earlier cancelled grace period left undrained: all hold only sections
	// that began before us.
	d.idx.Store(cur + 1)
	old := d.undrained | 1<<(cur%phases)
	if err := d.wait(ctx, old, s); err != nil {
		d.undrained = old
		return err
	}
	d.undrained = 0
	return nil
}

// wait returns when every anonymous phase in mask has drained and (if below
// != 0) no registered reader has 0 < ctr < below. Called with d.gp held.
func (d *Domain) wait(ctx context.Context, mask uint32, below uint64) error {
	// Publish the wake-up request, then Heavy: pairs with the leaving
	// store+load in Unlock and Reader.Unlock (see the package comment).
	d.anonWait.Store(mask)
	if below != 0 {
		d.waitSeq.Store(below)
	}
	defer func() {
		d.anonWait.Store(0)
		d.waitSeq.Store(0)
	}()
	heavy()
	if testHookWaiting != nil {
		testHookWaiting(d)
	}
	for {
		if d.drained(mask) && (below == 0 || d.readersDone(below)) {
			return nil
		}
		select {
		case <-d.wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// testHookWaiting, when set by a test, runs once per wait after the wake-up
// request is published (readers entering from then on are "after").
var testHookWaiting func(*Domain)

// testHookLockLoaded, when set by a test, runs in the anonymous Lock between
// its load of the phase and its add: the window of a stale reader.
var testHookLockLoaded func(*Domain)

// heavy is percpu.Heavy; a test wraps it to model a reader whose store is
// still in its CPU's store buffer until the barrier (TestHeavyOrdersReaders).
var heavy = percpu.Heavy

// drained reports whether every phase in mask has no anonymous section left.
func (d *Domain) drained(mask uint32) bool {
	for i := uint32(0); i < phases; i++ {
		if mask&(1<<i) == 0 {
			continue
		}
		var un, lk uint64
		// Unlock counts first, lock counts second (atomic loads keep the
		// order): every counted unlock then has its lock counted.
		for k := range d.slots {
			un += atomic.LoadUint64(&d.slots[k].n[unlockBase+i])
		}
		for k := range d.slots {
			lk += atomic.LoadUint64(&d.slots[k].n[i])
		}
		if lk != un {
			return false
		}
	}
	return true
}

// readersDone reports whether no registered reader is in a section that
// recorded a sequence number below s.
func (d *Domain) readersDone(s uint64) bool {
	d.regMu.Lock()
	defer d.regMu.Unlock()
	for _, r := range d.readers {
		if c := atomic.LoadUint64(&r.ctr); c != 0 && c < s {
			return false
		}
	}
	return true
}

// wakeup is the leaving reader's slow path: it runs only while a grace period
// waits for it (or for its phase).
func (d *Domain) wakeup() {
	select {
	case d.wake <- struct{}{}:
	default: // a wake-up is already pending; the waiter will rescan
	}
}

// Compile-time layout checks: the hot fields stay within their own lines.
var (
	_ [percpu.CacheLine - unsafe.Sizeof(Reader{})]byte
	_ [unsafe.Sizeof(Reader{}) - percpu.CacheLine]byte
	_ [percpu.CacheLine - unsafe.Sizeof(anonSlot{})]byte
)
