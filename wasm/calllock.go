package wasm

import (
	"sync"
	"sync/atomic"

	"github.com/raceless/raceless/internal/primitives/percpu"
)

// callLock is an instance's call lock. It serializes the calls into the
// instance and publishes the running call's deadline in the same word, so
// that a call costs one atomic read-modify-write and one store (lock,
// unlock) instead of four read-modify-writes (a mutex, then publishing and
// retracting a deadline), and the watchdog can claim an overdue call
// without ever claiming a later one.
//
// The states of word:
//
//	unlocked ──lock(d)──▶ d ──unlock──▶ unlocked      d: the holder's deadline tick
//	d ──claim(now), now > d (the watchdog)──▶ claimed ──unlock──▶ unlocked
//
// A tick only grows, so a word still equal to an expired d when the
// watchdog claims it belongs to a call that is past its deadline, even if
// it is not the call the watchdog first saw.
//
// Callers that find the lock held, or others waiting, queue on cond
// (barging is allowed only when no one waits); unlock wakes one waiter
// when there are any. The lock has no owner: any goroutine may unlock.
//
// unlock is a store followed by a load of waiters, and a waiter is an
// increment of waiters followed by a CAS of word: Dekker's pattern, which
// needs a full fence on each side. Where percpu.Light holds (amd64), the
// store is a plain one (a release on a TSO machine) and the fence moves to
// the slow side: the waiter calls percpu.Heavy (membarrier) between its
// increment and its first CAS, as the grace-period readers do. Either
// unlock's store is before the fence that Heavy forces on the unlocking
// CPU, and the CAS sees it, or its load is after, and it sees the waiter
// and signals. Elsewhere Store64 is an atomic store and Heavy a no-op.
type callLock struct {
	word    uint64       // atomic (percpu.Store64 for unlock); the states above
	waiters atomic.Int32 // goroutines in lockSlow
	mu      sync.Mutex   // cond's lock; guards nothing else
	cond    sync.Cond
}

const (
	unlocked = 0
	claimed  = 1 << 63
	// noDeadline is the ticks of a holder without a deadline (teardown,
	// or deadlines off): tick + noDeadline is never reached.
	noDeadline = 1 << 62
)

// lock takes the lock with the deadline ticks (>= 1) from the tick at
// which it is taken, not from when the caller began to wait. Ticks start
// at 0, so a held word is never unlocked, and stay below 1<<62, so it is
// never claimed.
func (c *callLock) lock(tick *atomic.Int64, ticks int64) {
	if !c.tryFast(uint64(tick.Load() + ticks)) {
		c.lockSlow(tick, ticks)
	}
}

// tryFast is lock's fast path: take the free lock with deadline d, unless
// others wait for it. (lock and unlock do not inline, having slow paths;
// the symbol call path inlines these two halves instead.)
func (c *callLock) tryFast(d uint64) bool {
	return c.waiters.Load() == 0 && atomic.CompareAndSwapUint64(&c.word, unlocked, d)
}

func (c *callLock) lockSlow(tick *atomic.Int64, ticks int64) {
	c.mu.Lock()
	if c.cond.L == nil {
		c.cond.L = &c.mu
	}
	// Counted before the CAS (and fenced, see above): an unlock after a
	// failed CAS sees the count and signals, under mu, which this
	// goroutine holds until Wait has queued it. No wakeup is lost. Later
	// holders took the lock after the increment, so they see it too.
	c.waiters.Add(1)
	percpu.Heavy()
	for !atomic.CompareAndSwapUint64(&c.word, unlocked, uint64(tick.Load()+ticks)) {
		c.cond.Wait()
	}
	c.waiters.Add(-1)
	c.mu.Unlock()
}

// tryLock takes the lock if it is free.
func (c *callLock) tryLock(tick *atomic.Int64, ticks int64) bool {
	return atomic.CompareAndSwapUint64(&c.word, unlocked, uint64(tick.Load()+ticks))
}

// unlock releases the lock, held or claimed.
func (c *callLock) unlock() {
	if c.release() {
		c.wake()
	}
}

// release is unlock's fast path: it frees the lock and reports whether a
// waiter must be woken (wake).
func (c *callLock) release() bool {
	percpu.Store64(&c.word, unlocked)
	return c.waiters.Load() > 0
}

func (c *callLock) wake() {
	c.mu.Lock()
	c.cond.Signal()
	c.mu.Unlock()
}

// claim is the watchdog's: it marks the lock claimed and reports true if
// it is held by a call whose deadline is before now.
func (c *callLock) claim(now int64) bool {
	w := atomic.LoadUint64(&c.word)
	return w != unlocked && w != claimed && uint64(now) > w && atomic.CompareAndSwapUint64(&c.word, w, claimed)
}
