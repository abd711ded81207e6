package raceless

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raceless/raceless/internal/primitives/ref"
)

// Instance is one loaded instance of a module: the host's record of it, the
// kernel's struct module. The pointer stays valid forever; once the
// instance is gone it is a tombstone on which every operation fails with
// ErrGone (a lookup finds nothing) and no module code runs.
//
// All methods are safe for concurrent use, and may be called from module
// code and inside hook calls.
type Instance struct {
	host   *Host
	name   string
	key    string
	info   Info
	seq    uint64 // load order, for /proc/modules' newest-first listing
	loaded time.Time

	refs  *ref.Ref
	state atomic.Int32 // State; written under Host.mu, read anywhere

	// used is the autoclean "visited" flag: set by every successful
	// outside reference (by a call through a Handle or a Caller, on its
	// registration instead), cleared by a sweep that finds it set.
	used      atomic.Bool
	autoclean atomic.Bool
	// underflowsSeen is how many of refs.Underflows() the host has
	// reported: counting in the Ref's slots detects a Put without a Get
	// only when it switches to exact counting (Kill), not at the Put.
	underflowsSeen atomic.Int64

	// initDone is closed when the coming phase has ended: live, or failed
	// (going, its teardown under way); initErr is written before the close
	// and read only after it.
	initDone chan struct{}
	initErr  error
	// gone is closed when the instance reaches StateGone.
	gone chan struct{}

	// Written once before Init (params) or during Init from the init
	// goroutine, read after initDone or by the owner's own code.
	params map[string]string
	mod    Module
	kernel *Kernel

	// Guarded by Host.mu.
	deps       map[*Instance]bool   // modules this one uses; each holds one reference
	holders    map[*Instance]bool   // modules that use this one
	imported   map[string]*Instance // symbols this one imported (Kernel.Import), and from which of deps
	swap       *hotSwap             // the Replace in progress this instance is either side of
	waitingFor *Instance            // an instance whose init this one's init waits for (cycle detection)
	unloading  bool                 // an Unload (or Replace) call owns the going state
	replaces   *Instance            // set on a coming replacement (Replace); it is not in byName until it goes live
	restored   chan struct{}        // closed when going goes back to live
	events     []State              // transitions made, not yet delivered to subscribers (Host.deliver)
	delivering bool                 // a goroutine is delivering events

	// regMu guards regs (appended during Init only) and the end of the
	// registration window (Kernel.initing). Lock order: it may be taken
	// under Host.mu, and registry.mu may be taken under it (Kernel.stage
	// reserves the name holding it); never the other way round.
	regMu sync.Mutex
	regs  []*registration

	taints taintLog // why the module is tainted; its lock is a leaf

	// eventsPending is set (under Host.mu) when a transition is queued in
	// events and cleared, under Host.mu, when events is found empty:
	// Host.deliver's lock-free test for "nothing to deliver".
	eventsPending atomic.Bool
}

// Name returns the module's name.
func (m *Instance) Name() string { return m.name }

// Info returns the module's metadata.
func (m *Instance) Info() Info { return m.info }

// Key returns the key of the Source the instance was loaded from.
func (m *Instance) Key() string { return m.key }

// State returns the current state.
func (m *Instance) State() State { return State(m.state.Load()) }

// LoadedAt returns when the load began.
func (m *Instance) LoadedAt() time.Time { return m.loaded }

// Gone returns a channel closed when the instance is gone.
func (m *Instance) Gone() <-chan struct{} { return m.gone }

// Autoclean reports whether the module was demand-loaded and may be removed
// by an autoclean sweep.
func (m *Instance) Autoclean() bool { return m.autoclean.Load() }

// Params returns a copy of the resolved parameters (validated, defaults
// filled in). They are fixed before the instance becomes visible.
func (m *Instance) Params() map[string]string {
	out := make(map[string]string, len(m.params))
	for k, v := range m.params {
		out[k] = v
	}
	return out
}

// tryGet takes a reference on the module (try_module_get): it fails unless
// the module is live; while coming, going or gone it returns false. A
// reference taken must be dropped with exactly one put. The public ways to
// hold one are a Binding (Host.Acquire), a call (Handle.Call, Caller.Call)
// and, for a module's own code, Kernel.Get.
func (m *Instance) tryGet() bool {
	if !m.refs.TryGet() {
		return false
	}
	m.noteUse()
	return true
}

// noteUse marks the module used (for autoclean) after a reference was
// taken. It reads first, to keep the common path free of shared writes.
func (m *Instance) noteUse() {
	if !m.used.Load() {
		m.used.Store(true)
	}
}

// noteUse is Instance.noteUse for a call through a Handle or a Caller:
// the mark is the registration's (takeUsed collects them).
func (reg *registration) noteUse() {
	if !reg.used.Load() {
		reg.used.Store(true)
	}
}

// takeUsed reports whether the module was used since the last call, and
// clears the marks: its own and its registrations'.
func (m *Instance) takeUsed() bool {
	used := m.used.Swap(false)
	m.regMu.Lock()
	regs := m.regs
	m.regMu.Unlock()
	for _, reg := range regs {
		if reg.used.Swap(false) {
			used = true
		}
	}
	return used
}

// put drops a reference taken by tryGet (or Kernel.Get). A put without a
// get is reported (logged and counted in Host.Underflows) and never drives
// the count below zero.
func (m *Instance) put() {
	if !m.refs.Put() {
		m.host.collectUnderflows(m)
	}
}

// Refs returns the number of references held (exact while unloading; a
// consistent-enough sum otherwise).
func (m *Instance) Refs() int64 { return m.refs.Count() }

// Holders returns the names of the modules that depend on this one, sorted
// (kmod's "Used by").
func (m *Instance) Holders() []string {
	m.host.mu.Lock()
	defer m.host.mu.Unlock()
	return names(m.holders)
}

// Deps returns the names of the modules this one depends on, sorted.
func (m *Instance) Deps() []string {
	m.host.mu.Lock()
	defer m.host.mu.Unlock()
	return names(m.deps)
}

func names(set map[*Instance]bool) []string {
	out := make([]string, 0, len(set))
	for i := range set {
		out = append(out, i.name)
	}
	sort.Strings(out)
	return out
}

// Size returns the module's size in bytes if it implements Sizer and is
// live, else 0 (also when Size panics: the module is then tainted).
func (m *Instance) Size() (n int64) {
	select {
	case <-m.initDone:
	default:
		return 0
	}
	s, ok := m.mod.(Sizer)
	if !ok || !m.refs.TryGet() {
		return 0
	}
	defer m.put()
	defer m.catch("size", "", nil, nil)
	return s.Size()
}

// catch is the one recovering path of module code. Every call the host
// makes into a module (a native Source's constructor, Init, Start, Stop,
// Exit, ExitContext, Size, hooks, symbols called through a Handle or a
// Caller) runs with it deferred:
//
//	defer m.catch("start", "", ErrInit, &err)
//
// A panic is recovered, m is tainted ("panic in what detail: value") and,
// when err is not nil, *err is set to a *ModuleError naming m, with Op
// what (and detail), wrapping sentinel (if not nil) and the panic's value.
func (m *Instance) catch(what, detail string, sentinel error, err *error) {
	if p := recover(); p != nil {
		m.caught(what, detail, sentinel, err, p)
	}
}

// caught is catch's work once it has recovered p. (recover works only in
// the deferred function itself: Handle.done and Caller.done, deferred on
// the call path instead of catch, recover and call this.)
func (m *Instance) caught(what, detail string, sentinel error, err *error, p any) {
	if detail != "" {
		what += " " + detail
	}
	m.Taint(TaintDied, fmt.Sprintf("panic in %s: %v", what, p))
	if err == nil {
		return
	}
	perr := fmt.Errorf("panic: %v", p)
	if sentinel != nil {
		perr = fmt.Errorf("%w: panic: %v", sentinel, p)
	}
	*err = &ModuleError{Op: what, Module: m.name, Err: perr}
}

// Taint marks the module as tainted with flag (TaintDied for a panic or a
// trap, TaintForcedUnload for a forced unload, TaintUnsignedModule for a
// module whose signature was not checked against a trusted key, TaintWarn
// otherwise; an unknown flag counts as TaintWarn), saying why. An unsigned
// module taints the host too, as the kernel's add_taint_module does for
// TAINT_UNSIGNED_MODULE ("module verification failed: ... tainting
// kernel"): what runs in the host is then not all vouched for.
func (m *Instance) Taint(flag TaintFlag, reason string) {
	m.taints.add(flag, reason)
	m.host.log.Warn("module tainted", "module", m.name, "flag", string(flag), "reason", reason)
	if flag == TaintUnsignedModule {
		m.host.taint(flag, m.name+": "+reason)
	}
}

// Taints returns the reasons the module was tainted, oldest first. As for
// Host.Taints, the first 32 are kept and a last line counts the rest.
func (m *Instance) Taints() []string { return m.taints.list() }

// TaintFlags returns the letters of the module's TaintFlags, in the
// kernel's order, as /proc/modules shows them in parentheses and
// /sys/module/NAME/taint holds them ("" when untainted).
func (m *Instance) TaintFlags() string { return m.taints.flags() }

// stateErr is the error for a failed tryGet on m.
func stateErr(m *Instance) error {
	if m.State() == StateGone {
		return ErrGone
	}
	return fmt.Errorf("%s is %s: %w", m.name, m.State(), ErrNotLive)
}

// Binding is a registration's value together with a reference on its owner
// (the counting interface): while the Binding is held, the owner cannot
// finish unloading. Release drops the reference, outside module code.
//
// A Binding must not be copied once it holds a reference (go vet's
// copylocks check reports a copy): keep it in the variable it was returned
// to, and pass or store a *Binding. It is not safe for concurrent use.
type Binding struct {
	noCopy noCopy
	reg    *registration // nil for the zero Binding
	owner  *Instance
}

// Value returns the registered value. It stays valid to read after
// Release, but a call into it is then no longer protected.
func (b *Binding) Value() any {
	if b.reg == nil {
		return nil
	}
	return b.reg.value
}

// Owner returns the instance whose reference the Binding holds: nil for
// the zero Binding and after Release.
func (b *Binding) Owner() *Instance { return b.owner }

// Release drops the reference taken by Acquire and clears the owner. It is
// a no-op on the zero Binding and the second time: a Binding drops its
// reference at most once, so "defer b.Release()" is safe next to an
// earlier explicit Release.
func (b *Binding) Release() {
	if o := b.owner; o != nil {
		b.owner = nil
		if !b.reg.refs.Put() { // o.put, without loading o's Instance
			o.host.collectUnderflows(o)
		}
	}
}

// noCopy marks a struct that must not be copied after first use: go vet's
// copylocks check reports a copy of a struct holding one (sync.noCopy).
type noCopy struct{}

// Lock is a no-op used by go vet's copylocks check.
func (*noCopy) Lock() {}

// Unlock is a no-op used by go vet's copylocks check.
func (*noCopy) Unlock() {}

// hasReserved reports whether m already staged a registration of key.
// The caller holds m.regMu (Kernel.stage does).
func (m *Instance) hasReserved(key regKey) bool {
	for _, reg := range m.regs {
		if reg.key == key {
			return true
		}
	}
	return false
}
