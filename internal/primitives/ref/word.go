package ref

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/raceless/raceless/internal/primitives/percpu"
)

// Words is a set of registered Words, each one goroutine's reference
// word, and the Refs made by its New count the references those Words
// hold, as grace's registered Readers are counted by Synchronize. (The
// raceless package calls the modules that depend on a module its holders,
// as kmod does; a Word is not one of those.)
//
// # Why
//
// A slot reference is an atomic add to take and another to drop. Taken
// around a call into a wasm module, the drop is the costly one: an atomic
// read-modify-write waits for the store buffer to drain, and a call just
// made leaves it full (~5 ns of a ~50 ns call). A Word belongs to one
// goroutine at a time and holds at most one reference; taking and dropping
// it are plain stores to the Word itself, and Kill, which is rare,
// pays instead: it scans the Words after percpu.Heavy.
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
// every Word. Each owner's store of addr|1 is either before its
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
// A Kill that finds no Word registered skips Heavy and the scan (a host
// without Callers pays nothing): a Word registered after that load of
// the list was stored after it, hence after Kill's store of modeDead, and
// its owner's TryGet loads the mode after the registration: it fails.
//
// An address is compared, never dereferenced, so a word naming a Ref that
// is gone is harmless; it cannot name a Ref that reuses the address, since
// a Word holding r keeps r reachable through its owner.
type Words struct {
	mu   sync.Mutex              // serialises Register and Close (the writers of list)
	list atomic.Pointer[[]*Word] // the registered Words, copy-on-write
}

// A Word is one goroutine's reference word in a Words set: it holds at
// most one reference at a time. It must not be used by two goroutines at
// once (hand it over with a happens-before edge, a mutex or a channel).
type Word struct {
	v   uint64 // the state above; stored by the owner (percpu.Store64), loaded atomically by others
	set *Words
	_   [percpu.CacheLine - 16]byte // the word is written on every call: keep it off others' lines
}

const entering = 1

// settleHook, if set (tests), is called while Kill waits for an entering
// Word.
var settleHook func()

// New returns a Ref with count zero (see the package New) that counts the
// references of ws's Words.
func (ws *Words) New(dead bool) *Ref {
	r := New(dead)
	r.words = ws
	return r
}

// Register returns a new Word of ws. Close it when done: until then every
// Kill of a Ref of ws scans it.
func (ws *Words) Register() *Word {
	w := &Word{set: ws}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	var list []*Word
	if p := ws.list.Load(); p != nil {
		list = *p
	}
	list = append(list[:len(list):len(list)], w)
	ws.list.Store(&list)
	return w
}

// Len returns the number of registered Words.
func (ws *Words) Len() int {
	if p := ws.list.Load(); p != nil {
		return len(*p)
	}
	return 0
}

// Close unregisters w. It must not hold a reference. It may run on another
// goroutine than w's last owner (a cleanup), hence the atomic load.
func (w *Word) Close() {
	if atomic.LoadUint64(&w.v) != 0 {
		panic("ref: Close of a Word that holds a reference")
	}
	ws := w.set
	ws.mu.Lock()
	defer ws.mu.Unlock()
	old := *ws.list.Load()
	list := make([]*Word, 0, len(old))
	for _, x := range old {
		if x != w {
			list = append(list, x)
		}
	}
	ws.list.Store(&list)
}

// Holding reports whether w holds a reference.
func (w *Word) Holding() bool { return w.v != 0 }

// TryGet takes a reference on r in w, unless r is dead. w must not hold
// one already, and r must be one of w's set's Refs (Words.New): another
// Ref's Kill would not see the reference.
func (w *Word) TryGet(r *Ref) bool {
	a := uint64(uintptr(unsafe.Pointer(r)))
	percpu.Store64(&w.v, a|entering)
	if r.mode.Load() == modeDead {
		return w.backOut()
	}
	percpu.Store64(&w.v, a)
	return true
}

// backOut is TryGet's failure (out of line, so that TryGet inlines).
func (w *Word) backOut() bool {
	percpu.Store64(&w.v, 0)
	return false
}

// Put drops the reference w holds on r.
func (w *Word) Put(r *Ref) {
	percpu.Store64(&w.v, 0)
	if r.mode.Load() == modeDead {
		r.signalZero()
	}
}

// held returns how many of ws's Words hold a reference on r. With settle
// (Kill, after Heavy), it first waits for each Word entering on r to
// finish (see the type comment); without, an entering Word is not
// counted (after a Kill, it is bound to fail).
func (ws *Words) held(r *Ref, settle bool) int64 {
	if ws == nil {
		return 0
	}
	p := ws.list.Load()
	if p == nil {
		return 0
	}
	a := uint64(uintptr(unsafe.Pointer(r)))
	var n int64
	for _, w := range *p {
		v := atomic.LoadUint64(&w.v)
		for settle && v == a|entering {
			if settleHook != nil {
				settleHook()
			}
			runtime.Gosched()
			v = atomic.LoadUint64(&w.v)
		}
		if v == a {
			n++
		}
	}
	return n
}
