package raceless

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/raceless/raceless/internal/callconv"
	"github.com/raceless/raceless/internal/primitives/ref"
)

// Kind names a namespace of registrations. Names are unique within a kind
// (hooks excepted: many modules subscribe to one event).
type Kind string

// Registration kinds used by the host and its subsystems.
const (
	KindSymbol     Kind = "symbol"     // exported functions and values (Kernel.Export)
	KindFilesystem Kind = "filesystem" // filesystem types (package vfs)
	KindRoute      Kind = "route"      // HTTP routes served by the daemon
)

// HookFunc is a subscriber on a named event chain. Hooks are a non-counting
// interface: they run inside a read section of the host's grace-period
// domain, without a reference on their module.
type HookFunc func(ctx context.Context, arg any) error

// Func is the one calling convention of symbols, wazero's
// (api.Function.CallWithStack): stack holds the arguments on entry, and
// the function may overwrite it and return its results in it (resliced),
// or in a new slice when they do not fit in its capacity. A caller that
// gives a stack with room for the results, and reuses it, calls without
// allocating; one that needs its arguments afterwards passes a copy.
//
// Wasm modules export and import symbols of this type, and a native module
// exports one (Kernel.Export) to be callable from wasm, through a Handle
// or a Caller.
type Func func(ctx context.Context, stack []uint64) ([]uint64, error)

// asFunc returns v as a Func if it is one (a Func, a plain func of the
// same signature, or a callconv.Recovering), else nil, and whether it is a
// callconv.Recovering, which never panics.
func asFunc(v any) (f Func, recovering bool) {
	switch f := v.(type) {
	case Func:
		return f, false
	case func(context.Context, []uint64) ([]uint64, error):
		return f, false
	case callconv.Recovering:
		return Func(f), true
	}
	return nil, false
}

// Registration describes one published registration.
type Registration struct {
	Kind  Kind
	Name  string
	Owner string
	Value any
}

type regKey struct {
	kind Kind
	name string
}

type registration struct {
	key   regKey
	value any
	// For Handle.Call and Caller.Call: the value as a Func, if it is
	// one; whether it never panics (a callconv.Recovering: called
	// without a deferred recover); owner.refs, one load nearer.
	fn         Func
	recovering bool
	refs       *ref.Ref
	// used is the autoclean mark of calls through a Handle or a Caller
	// (see Instance.used), kept here, beside what a call reads anyway,
	// rather than on the owner's line.
	used  atomic.Bool
	hook  HookFunc // set for hooks; key.name is the event
	owner *Instance

	// Publication (see registry), written under registry.mu before the
	// registration is installed in its slot, never after: it is visible
	// while pub's state is want.
	pub  *pubCell
	want uint32
	// slot is the name's slot (set when the name is reserved, or for a
	// hook when installed) and installed whether the registration is in
	// it; both guarded by registry.mu.
	slot      *nameSlot
	installed bool
}

// pubCell decides, with one atomic word, which registrations of a module
// are visible: those whose want is its state (0: none). The instances of
// one module that a hot swap links (the old one and its replacement) share
// a cell, so the swap's step is one store.
type pubCell struct {
	state atomic.Uint32
	next  uint32 // the last want handed out; guarded by registry.mu
}

// alloc returns a want no registration of the cell had before: a state
// stored for it can never make an older generation visible again.
func (c *pubCell) alloc() uint32 {
	c.next++
	return c.next
}

// registry holds every registration: reserved ones (staged during Init, or
// unpublished during an unload attempt) and published ones. A name's slot
// holds its reservation as well as its registrations, so that reserving,
// publishing and dropping a name touch one place.
//
// Readers take no lock. A name's registration is found in two steps, each
// O(1) whatever the number of names: the kind's nameTable gives the name's
// slot, and the slot's pair and the pair's cell give the registration that
// is visible. Publication is what makes it so in one step for all of a
// module's registrations, as the kernel's symbol lookup skips modules
// whose state is not live:
//
//   - going live: the module's registrations are installed in their slots
//     (invisible: their cell's state is 0), then one store of the cell's
//     state makes them all visible;
//   - an unload: one store of 0 hides them all (they stay installed, for a
//     refused unload to show them again); they leave their slots when the
//     module is gone (drop);
//   - a hot swap: the replacement's registrations share the old instance's
//     cell with a new want; each is installed over the old one of its name
//     (the pair keeps both), and one store of the cell's state switches
//     every name at once, including the names only one of them has.
//
// Installing and uninstalling never change which registration of a name
// is visible (only the cell's state does), and the slot's version counts
// them: a reader loads the version, the slot's two registrations and their
// cell's state, then the version again, and retries if it changed. The
// answer is then what was visible when it loaded the state (linearizable,
// as internal/check/linearize checks). CallHooks does the same for a whole
// event's list with the registry's sequence count (seq), so that the hooks
// it calls were all visible at one moment.
//
// A writer (under mu) changes O(1) slots per registration: publishing,
// unpublishing, swapping and dropping a module cost O(its registrations)
// (and a hook's, O(the subscribers of its event)), however many modules
// are loaded. The tables grow and shrink by rebuilding, O(n) once per
// doubling, O(1) amortized.
type registry struct {
	// mu guards the tables' writer side (each slot's reservation
	// included), every registration's pub, want, slot and installed, and
	// serialises the writers. It is a leaf: it may be taken under Host.mu
	// and under Instance.regMu, and nothing is taken while it is held.
	mu sync.Mutex
	// kinds lists a table per kind that ever had a registration (copy on
	// write; a handful).
	kinds atomic.Pointer[[]kindTable]
	hooks *nameTable // by event; their slots hold lists
	// seq is odd while a writer changes what is visible: a reader of many
	// names (CallHooks) reads it before and after and retries on a change.
	seq atomic.Uint64
	// betweenStores, if set (tests), runs between the stores of an
	// install or an uninstall, with mu held: a lookup from it sees the
	// slot half changed.
	betweenStores func()
}

type kindTable struct {
	kind  Kind
	names *nameTable
}

func newRegistry() *registry {
	r := &registry{hooks: newNameTable()}
	r.kinds.Store(&[]kindTable{})
	return r
}

// table returns kind's table, or nil.
func (r *registry) table(kind Kind) *nameTable {
	for _, kt := range *r.kinds.Load() {
		if kt.kind == kind {
			return kt.names
		}
	}
	return nil
}

// tableFor returns kind's table, adding it. Writer only.
func (r *registry) tableFor(kind Kind) *nameTable {
	if t := r.table(kind); t != nil {
		return t
	}
	next := append(append([]kindTable(nil), *r.kinds.Load()...), kindTable{kind, newNameTable()})
	r.kinds.Store(&next)
	return next[len(next)-1].names
}

// lookup returns the visible registration of kind and name, or nil.
func (r *registry) lookup(kind Kind, name string) *registration {
	t := r.table(kind)
	if t == nil {
		return nil
	}
	s := t.find(name)
	if s == nil {
		return nil
	}
	return s.visible()
}

// visible returns the registration of the slot visible now.
func (s *nameSlot) visible() *registration {
	for {
		v := s.ver.Load()
		reg := visible(s.primary.Load(), s.secondary.Load())
		if s.ver.Load() == v {
			return reg
		}
	}
}

// visible returns whichever of p and q is visible: one load of the cell
// they share (a secondary is only ever installed under a primary of its
// own cell).
func visible(p, q *registration) *registration {
	if p == nil {
		return nil
	}
	st := p.pub.state.Load()
	switch {
	case st == p.want:
		return p
	case q != nil && st == q.want:
		return q
	}
	return nil
}

// hookList returns the hooks of event visible at one moment, in load
// order, appended to buf.
func (r *registry) hookList(event string, buf []*registration) []*registration {
	s := r.hooks.find(event)
	if s == nil {
		return buf
	}
	for try := 0; ; try++ {
		if try == 3 {
			// Writers kept changing it: read it with them held off.
			r.mu.Lock()
			defer r.mu.Unlock()
		}
		v := r.seq.Load()
		out := buf
		if v&1 == 0 || try == 3 {
			if list := s.hooks.Load(); list != nil {
				for _, reg := range *list {
					if reg.pub.state.Load() == reg.want {
						out = append(out, reg)
					}
				}
			}
			if try == 3 || r.seq.Load() == v {
				return out
			}
		}
	}
}

// reserve stages a registration for owner. A name already reserved or
// published by any module (including owner itself) is ErrExists.
func (r *registry) reserve(reg *registration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if reg.hook != nil {
		return nil
	}
	s := r.tableFor(reg.key.kind).slot(reg.key.name)
	if other := s.reserved; other != nil {
		// A replacement may take over the names of the instance it
		// replaces; the reservation moves to it when it goes live.
		if rep := reg.owner.replaces; rep == nil || other.owner != rep || reg.owner.hasReserved(reg.key) {
			return fmt.Errorf("%s %q already registered by %s: %w", reg.key.kind, reg.key.name, other.owner.name, ErrExists)
		}
	} else {
		s.reserved = reg
	}
	reg.slot = s
	return nil
}

// publish makes regs (all of one module) visible in one step: a reader
// sees all or none. It cannot fail: every name was reserved. Called again
// after unpublish (a refused unload), it shows them again.
func (r *registry) publish(regs []*registration) {
	if len(regs) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c, want := regs[0].pub, regs[0].want
	if c == nil {
		c = &pubCell{}
		want = c.alloc()
	}
	for _, reg := range regs {
		r.install(reg, c, want)
	}
	r.show(c, want)
}

// unpublish hides regs (all of one module) in one step; they stay reserved
// and installed so that a refused unload can show them again.
func (r *registry) unpublish(regs []*registration) {
	if len(regs) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.show(regs[0].pub, 0)
}

// swap hides from and shows to in one step (a hot swap, or its undoing):
// to shares from's cell, and every name of either switches at the same
// store. The reservations of the names both hold move to to.
func (r *registry) swap(from, to []*registration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var c *pubCell
	var want uint32
	switch {
	case len(to) > 0 && to[0].pub != nil: // the undoing: to's generation again
		c, want = to[0].pub, to[0].want
	case len(from) > 0:
		c = from[0].pub
		want = c.alloc()
	default:
		c = &pubCell{}
		want = c.alloc()
	}
	for _, reg := range to {
		if reg.hook == nil {
			reg.slot.reserved = reg
		}
		r.install(reg, c, want)
	}
	if len(from) > 0 && from[0].pub != c {
		// Only when from has no cell in common with to, which has no
		// registration then (the undoing of a swap to a module that had
		// none): hiding from is the whole step.
		r.show(from[0].pub, 0)
	}
	r.show(c, want)
}

// show stores state in c, the step that publishes (or hides) every
// registration of c's module at once, inside the sequence count's bracket.
// Called with mu held.
func (r *registry) show(c *pubCell, state uint32) {
	r.seq.Add(1)
	c.state.Store(state)
	r.seq.Add(1)
}

// install puts reg into its slot, invisible until c's state is want (its
// pub and want are set here, once). Called with mu held.
func (r *registry) install(reg *registration, c *pubCell, want uint32) {
	if reg.installed {
		return // installed already (a republish, or the undoing of a swap whose old half never left)
	}
	reg.installed = true
	if reg.pub == nil {
		reg.pub, reg.want = c, want
	}
	if reg.hook != nil {
		s := r.hooks.slot(reg.key.name)
		var list []*registration
		if old := s.hooks.Load(); old != nil {
			list = append(list, *old...)
		}
		list = append(list, reg)
		r.seq.Add(1) // a new list: a reader may be between two of its loads
		s.hooks.Store(&list)
		r.seq.Add(1)
		reg.slot = s
		return
	}
	s := reg.slot // the reservation's
	if p := s.primary.Load(); p != nil {
		// A hot swap: the registration visible now stays visible beside
		// the new one until the cell's state changes. (A slot of an
		// undone swap whose replacement is not dropped yet holds the
		// restored registration as its secondary: that one stays; the
		// undone one, never visible again, leaves the slot.) Each store
		// leaves the same registration visible: the secondary first.
		keep := visible(p, s.secondary.Load())
		if keep == nil {
			keep = p
		}
		s.secondary.Store(keep)
		if r.betweenStores != nil {
			r.betweenStores()
		}
	}
	s.primary.Store(reg)
	s.ver.Add(1)
}

// drop forgets registrations that are not visible (a failed Init, or a
// module that is gone or was replaced): their reservations, and their
// places in their slots.
func (r *registry) drop(regs []*registration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, reg := range regs {
		r.uninstall(reg)
		if s := reg.slot; s != nil && reg.hook == nil {
			if s.reserved == reg {
				s.reserved = nil
			}
			if s.reserved == nil && s.primary.Load() == nil {
				r.tableFor(reg.key.kind).remove(s)
			}
		}
		reg.slot = nil
	}
}

// uninstall takes reg out of its slot (drop takes the slot out of its
// table once it holds nothing). Called with mu held.
func (r *registry) uninstall(reg *registration) {
	s := reg.slot
	if !reg.installed {
		return
	}
	reg.installed = false
	if reg.hook != nil {
		old := *s.hooks.Load()
		list := make([]*registration, 0, len(old))
		for _, h := range old {
			if h != reg {
				list = append(list, h)
			}
		}
		if len(list) == 0 {
			r.hooks.remove(s)
			return
		}
		s.hooks.Store(&list)
		return
	}
	// reg is not visible: whatever a reader between two of these stores
	// sees, the visible registration (if any) is in the slot.
	switch p, q := s.primary.Load(), s.secondary.Load(); reg {
	case p:
		if q == nil || q == reg {
			s.primary.Store(nil)
			s.secondary.Store(nil)
		} else {
			// The secondary takes its place; it stays secondary too
			// until the next install, so that no reader that loaded
			// the old primary finds an empty secondary.
			s.primary.Store(q)
			if r.betweenStores != nil {
				r.betweenStores()
			}
		}
	case q:
		s.secondary.Store(nil)
	default:
		return // it left the slot already (see install)
	}
	s.ver.Add(1)
}

// list returns the visible registrations of a kind, sorted by name.
func (r *registry) list(kind Kind) []Registration {
	var out []Registration
	if t := r.table(kind); t != nil {
		t.all(func(s *nameSlot) {
			if reg := s.visible(); reg != nil {
				out = append(out, Registration{Kind: kind, Name: reg.key.name, Owner: reg.owner.name, Value: reg.value})
			}
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
