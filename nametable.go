package raceless

import (
	"hash/maphash"
	"math/bits"
	"sync/atomic"
)

// nameTable maps the names of one kind to their nameSlots: an open-addressing
// hash table (linear probing) whose readers take no lock and whose single
// writer (the registry, under registry.mu) adds and removes names in O(1),
// amortized over the table's rebuilds.
//
// A reader loads the cell array once and probes it; each cell's slot
// changes only from empty to a slot, from a slot to deleted and from
// deleted to a slot, one atomic store each, so a probe never skips a name
// that was in the table for its whole length.
//
// Each cell also holds its slot's hash, so that a probe passing a cell of
// another name does not load that name's slot: in a table of a million
// names every such load is a cache miss. The two words are stored one
// after the other, not together: a reader that pairs a slot with another
// slot's hash (the cell reused while it probed) either skips a name
// inserted or removed during its probe, which linearizes the lookup
// before the insertion or after the removal, or compares a name it then
// rejects. A name in the table for the whole probe keeps its cell, slot
// and hash unchanged, and is found.
type nameTable struct {
	cells atomic.Pointer[cellArray]
	// Writer-side counts, guarded by registry.mu: live slots, and cells in
	// use (live or deleted), which bounds the probe length.
	live, used int
}

type cellArray struct {
	mask  uint64
	cells []cell
}

// cell is one entry of a cellArray: 16 bytes, four to a cache line.
type cell struct {
	hash atomic.Uint64 // slot's hash (set stores it first)
	slot atomic.Pointer[nameSlot]
}

// set stores s (and its hash) in c. Writer only.
func (c *cell) set(s *nameSlot) {
	c.hash.Store(s.hash)
	c.slot.Store(s)
}

// nameSlot is where a name's registration is published (see registry).
// A slot is never reused for another name: a reader that holds it after
// the name was removed finds nothing visible in it.
type nameSlot struct {
	hash uint64
	name string
	// primary is the registration installed last and secondary, during
	// a hot swap, the one it was installed over (see registry.install);
	// visible or not. ver counts their changes (registry.lookup). For the
	// hook table, unused.
	ver                atomic.Uint64
	primary, secondary atomic.Pointer[registration]
	// reserved is the registration that holds the name (registry.reserve):
	// writer only, guarded by registry.mu.
	reserved *registration
	// hooks are the event's subscribers, in load order, visible or not;
	// for the named kinds, nil. Replaced whole (copy on write).
	hooks atomic.Pointer[[]*registration]
}

// deleted marks a cell whose name was removed: probes go on past it.
var deleted = &nameSlot{}

// nameSeed is the hash seed of every nameTable.
var nameSeed = maphash.MakeSeed()

const minCells = 16

func newNameTable() *nameTable {
	t := &nameTable{}
	t.cells.Store(&cellArray{mask: minCells - 1, cells: make([]cell, minCells)})
	return t
}

// find returns name's slot, or nil. Safe for concurrent use with the writer.
func (t *nameTable) find(name string) *nameSlot {
	h := maphash.String(nameSeed, name)
	a := t.cells.Load()
	for i := h & a.mask; ; i = (i + 1) & a.mask {
		c := &a.cells[i]
		s := c.slot.Load()
		if s == nil {
			return nil
		}
		if s != deleted && c.hash.Load() == h && s.name == name {
			return s
		}
	}
}

// slot returns name's slot, adding an empty one if there is none. Writer
// only.
func (t *nameTable) slot(name string) *nameSlot {
	if s := t.find(name); s != nil {
		return s
	}
	if (t.used+1)*2 > len(t.cells.Load().cells) {
		t.rebuild(t.live + 1)
	}
	s := &nameSlot{hash: maphash.String(nameSeed, name), name: name}
	a := t.cells.Load()
	for i := s.hash & a.mask; ; i = (i + 1) & a.mask {
		switch a.cells[i].slot.Load() {
		case nil:
			t.used++
		case deleted:
		default:
			continue
		}
		a.cells[i].set(s)
		t.live++
		return s
	}
}

// remove takes s out of the table. Writer only.
func (t *nameTable) remove(s *nameSlot) {
	a := t.cells.Load()
	for i := s.hash & a.mask; ; i = (i + 1) & a.mask {
		switch c := a.cells[i].slot.Load(); c {
		case nil:
			return // not in the table
		case s:
			a.cells[i].slot.Store(deleted)
			t.live--
			// Mostly deleted cells lengthen every probe: rebuild
			// smaller once live slots fill less than an eighth.
			if n := len(a.cells); n > minCells && t.live*8 < n {
				t.rebuild(t.live)
			}
			return
		}
	}
}

// rebuild publishes a new array sized for n live slots (at most a quarter
// full), holding every live slot and no deleted cell. Writer only; O(n),
// once per doubling or shrinking of the table.
func (t *nameTable) rebuild(n int) {
	size := max(minCells, 1<<bits.Len(uint(max(n, 1)*4-1)))
	old := t.cells.Load()
	a := &cellArray{mask: uint64(size - 1), cells: make([]cell, size)}
	for i := range old.cells {
		s := old.cells[i].slot.Load()
		if s == nil || s == deleted {
			continue
		}
		j := s.hash & a.mask
		for a.cells[j].slot.Load() != nil {
			j = (j + 1) & a.mask
		}
		a.cells[j].set(s)
	}
	t.used = t.live
	t.cells.Store(a)
}

// all calls f for every live slot (in no order). Safe for concurrent use
// with the writer: it sees each slot that was in the table throughout.
func (t *nameTable) all(f func(*nameSlot)) {
	a := t.cells.Load()
	for i := range a.cells {
		if s := a.cells[i].slot.Load(); s != nil && s != deleted {
			f(s)
		}
	}
}
