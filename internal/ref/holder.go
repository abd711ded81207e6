package ref

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/raceless/raceless/internal/percpu"
)

// Holders is a set of registered Holders, and the Refs made by its New
// count the references those Holders hold, as grace's registered Readers
// are counted by Synchronize.
//
// # Why
//
// A slot reference is an atomic add to take and another to drop. Taken
// around a call into a wasm module, the drop is the costly one: an atomic
// read-modify-write waits for the store buffer to drain, and a call just
// made leaves it full (~5 ns of a ~50 ns call). A Holder belongs to one
// goroutine at a time and holds at most one reference; taking and dropping
// it are plain stores to the Holder's own word, and Kill, which is rare,
// pays instead: it scans the Holders after percpu.Heavy.
//
// # The word
//
//	0           idle
//	addr|1      entering: r's address with the low bit set; the owner has
//	            not yet read r's mode after announcing itself
//	addr        holding a reference on the Ref at addr
//
// TryGet(r): store addr|1; load r's mode: dead -> store 0, false; live ->
// store addr, true. Put(r): store 0; load r's
// mode: dead -> wake r's waiters (WaitZero re-checks).
//
// Kill(r), after it has stored modeDead, calls percpu.Heavy and then reads
// every Holder's word. Each owner's store of addr|1 is either before its
// CPU's barrier point (Kill sees it, or a later value) or after it (then so
// is its load of the mode, which sees dead: the TryGet fails). A word that
// still reads addr|1 belongs to an owner that may have loaded the mode
// before the barrier and found it live, so Kill waits for it to settle
// (one load and one store away; the owner can only be preempted there). A
// word that reads addr after that belongs to a TryGet that saw r live, so
// it is in the count at the switch: exactly one of a racing TryGet and a
// Kill that reports zero wins, as with the slots. After Kill, every TryGet
// on r fails until Revive, and Count and WaitZero count only words equal to
// addr. Put's store of 0 and its load of the mode are the same Dekker pair
// for WaitZero: a Put that read live was seen by Kill's scan; one that read
// dead takes r.mu to wake the waiters, after they installed their channel
// or before they checked.
//
// Without percpu.Light the stores are sequentially consistent atomics and
// Heavy is a no-op; the argument is then plain Dekker.
//
// A Kill that finds no Holder registered skips Heavy and the scan (a host
// without Callers pays nothing): a Holder registered after that load of
// the list was stored after it, hence after Kill's store of modeDead, and
// its owner's TryGet loads the mode after the registration: it fails.
//
// An address is compared, never dereferenced, so a word naming a Ref that
// is gone is harmless; it cannot name a Ref that reuses the address, since
// a Holder holding r keeps r reachable through its owner.
type Holders struct {
	mu   sync.Mutex                // serialises Register and Close (the writers of list)
	list atomic.Pointer[[]*Holder] // the registered Holders, copy-on-write
}

// A Holder is one goroutine's reference slot in a Holders set: it holds at
// most one reference at a time. It must not be used by two goroutines at
// once (hand it over with a happens-before edge, a mutex or a channel).
type Holder struct {
	word uint64 // the state above; stored by the owner (percpu.Store64), loaded atomically by others
	set  *Holders
	_    [percpu.CacheLine - 16]byte // the word is written on every call: keep it off others' lines
}

const entering = 1

// settleHook, if set (tests), is called while Kill waits for an entering
// Holder.
var settleHook func()

// New returns a Ref with count zero (see the package New) that counts the
// references of hs's Holders.
func (hs *Holders) New(dead bool) *Ref {
	r := New(dead)
	r.holders = hs
	return r
}

// Register returns a new Holder of hs. Close it when done: until then every
// Kill of a Ref of hs scans it.
func (hs *Holders) Register() *Holder {
	h := &Holder{set: hs}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	var list []*Holder
	if p := hs.list.Load(); p != nil {
		list = *p
	}
	list = append(list[:len(list):len(list)], h)
	hs.list.Store(&list)
	return h
}

// Len returns the number of registered Holders.
func (hs *Holders) Len() int {
	if p := hs.list.Load(); p != nil {
		return len(*p)
	}
	return 0
}

// Close unregisters h. It must not hold a reference. It may run on another
// goroutine than h's last owner (a cleanup), hence the atomic load.
func (h *Holder) Close() {
	if atomic.LoadUint64(&h.word) != 0 {
		panic("ref: Close of a Holder that holds a reference")
	}
	hs := h.set
	hs.mu.Lock()
	defer hs.mu.Unlock()
	old := *hs.list.Load()
	list := make([]*Holder, 0, len(old))
	for _, x := range old {
		if x != h {
			list = append(list, x)
		}
	}
	hs.list.Store(&list)
}

// Holding reports whether h holds a reference.
func (h *Holder) Holding() bool { return h.word != 0 }

// TryGet takes a reference on r in h, unless r is dead. h must not hold
// one already, and r must be one of h's set's Refs (Holders.New): another
// Ref's Kill would not see the reference.
func (h *Holder) TryGet(r *Ref) bool {
	a := uint64(uintptr(unsafe.Pointer(r)))
	percpu.Store64(&h.word, a|entering)
	if r.mode.Load() == modeDead {
		return h.backOut()
	}
	percpu.Store64(&h.word, a)
	return true
}

// backOut is TryGet's failure (out of line, so that TryGet inlines).
func (h *Holder) backOut() bool {
	percpu.Store64(&h.word, 0)
	return false
}

// Put drops the reference h holds on r.
func (h *Holder) Put(r *Ref) {
	percpu.Store64(&h.word, 0)
	if r.mode.Load() == modeDead {
		r.signalZero()
	}
}

// held returns how many of hs's Holders hold a reference on r. With settle
// (Kill, after Heavy), it first waits for each Holder entering on r to
// finish (see the type comment); without, an entering Holder is not
// counted (after a Kill, it is bound to fail).
func (hs *Holders) held(r *Ref, settle bool) int64 {
	if hs == nil {
		return 0
	}
	p := hs.list.Load()
	if p == nil {
		return 0
	}
	a := uint64(uintptr(unsafe.Pointer(r)))
	var n int64
	for _, h := range *p {
		w := atomic.LoadUint64(&h.word)
		for settle && w == a|entering {
			if settleHook != nil {
				settleHook()
			}
			runtime.Gosched()
			w = atomic.LoadUint64(&h.word)
		}
		if w == a {
			n++
		}
	}
	return n
}
