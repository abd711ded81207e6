package raceless

import (
	"context"
	"fmt"
	"maps"
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
}

// snapshot is an immutable view of what is published. Readers load it with
// one atomic pointer load and never lock; writers copy it.
//
// named is keyed by kind, then name: two string-keyed lookups (the runtime's
// fast path for string keys) cost less than one of a two-string struct key,
// and Host.Acquire is on the protected call path.
type snapshot struct {
	named map[Kind]map[string]*registration
	hooks map[string][]*registration
}

// lookup returns the published registration of key, or nil.
func (s *snapshot) lookup(kind Kind, name string) *registration {
	return s.named[kind][name]
}

// registry holds every registration: reserved ones (staged during Init, or
// unpublished during an unload attempt) and published ones.
type registry struct {
	// mu guards reserved and serialises writers of snap. It is a leaf:
	// it may be taken under Host.mu and under Instance.regMu, and nothing
	// is taken while it is held.
	mu       sync.Mutex
	reserved map[regKey]*registration
	snap     atomic.Pointer[snapshot]
}

func newRegistry() *registry {
	r := &registry{reserved: make(map[regKey]*registration)}
	r.snap.Store(&snapshot{named: map[Kind]map[string]*registration{}, hooks: map[string][]*registration{}})
	return r
}

// reserve stages a registration for owner. A name already reserved or
// published by any module (including owner itself) is ErrExists.
func (r *registry) reserve(reg *registration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if reg.hook == nil {
		if other, ok := r.reserved[reg.key]; ok {
			// A replacement may take over the names of the instance it
			// replaces; the reservation moves to it when it goes live.
			if rep := reg.owner.replaces; rep == nil || other.owner != rep || reg.owner.hasReserved(reg.key) {
				return fmt.Errorf("%s %q already registered by %s: %w", reg.key.kind, reg.key.name, other.owner.name, ErrExists)
			}
			return nil
		}
		r.reserved[reg.key] = reg
	}
	return nil
}

// swap unpublishes from and publishes to in one step (a hot swap or its
// undoing), moving the reservations of the names both hold to to.
func (r *registry) swap(from, to []*registration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, reg := range to {
		if reg.hook == nil {
			r.reserved[reg.key] = reg
		}
	}
	r.snap.Store(r.snap.Load().without(from).with(to))
}

// drop forgets registrations that are not published (a failed Init, or a
// module that is gone).
func (r *registry) drop(regs []*registration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, reg := range regs {
		if reg.hook == nil && r.reserved[reg.key] == reg {
			delete(r.reserved, reg.key)
		}
	}
}

// publish makes regs visible in one step: a reader sees all or none. It
// cannot fail: every name was reserved.
func (r *registry) publish(regs []*registration) {
	if len(regs) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snap.Store(r.snap.Load().with(regs))
}

// unpublish hides regs in one step; they stay reserved so that a refused
// unload can republish them without failing.
func (r *registry) unpublish(regs []*registration) {
	if len(regs) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snap.Store(r.snap.Load().without(regs))
}

// with returns a copy of s with regs added.
func (s *snapshot) with(regs []*registration) *snapshot {
	next := s.clone()
	for _, reg := range regs {
		if reg.hook != nil {
			next.hooks[reg.key.name] = append(next.hooks[reg.key.name], reg)
		} else {
			byName := next.named[reg.key.kind]
			if byName == nil {
				byName = make(map[string]*registration)
				next.named[reg.key.kind] = byName
			}
			byName[reg.key.name] = reg
		}
	}
	return next
}

// without returns a copy of s with regs removed.
func (s *snapshot) without(regs []*registration) *snapshot {
	if len(regs) == 0 {
		return s
	}
	gone := make(map[*registration]bool, len(regs))
	for _, reg := range regs {
		gone[reg] = true
	}
	next := &snapshot{named: make(map[Kind]map[string]*registration, len(s.named)), hooks: make(map[string][]*registration, len(s.hooks))}
	for kind, byName := range s.named {
		keep := make(map[string]*registration, len(byName))
		for name, reg := range byName {
			if !gone[reg] {
				keep[name] = reg
			}
		}
		if len(keep) > 0 {
			next.named[kind] = keep
		}
	}
	for ev, list := range s.hooks {
		var keep []*registration
		for _, reg := range list {
			if !gone[reg] {
				keep = append(keep, reg)
			}
		}
		if len(keep) > 0 {
			next.hooks[ev] = keep
		}
	}
	return next
}

func (s *snapshot) clone() *snapshot {
	next := &snapshot{named: make(map[Kind]map[string]*registration, len(s.named)+1), hooks: make(map[string][]*registration, len(s.hooks)+1)}
	for kind, byName := range s.named {
		next.named[kind] = maps.Clone(byName)
	}
	for k, v := range s.hooks {
		next.hooks[k] = append([]*registration(nil), v...)
	}
	return next
}

// list returns the published registrations of a kind, sorted by name.
func (r *registry) list(kind Kind) []Registration {
	s := r.snap.Load()
	var out []Registration
	for name, reg := range s.named[kind] {
		out = append(out, Registration{Kind: kind, Name: name, Owner: reg.owner.name, Value: reg.value})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
