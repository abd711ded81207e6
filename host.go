package raceless

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/raceless/raceless/internal/primitives/grace"
	"github.com/raceless/raceless/internal/primitives/ref"
)

// Host loads, links, calls into and unloads modules. It plays the kernel's
// part. All its methods are safe for concurrent use; none holds a lock while
// module code runs, so a module's Init may load other modules.
type Host struct {
	log      *slog.Logger
	resolver Resolver
	grace    *grace.Domain
	reg      *registry
	// words are the Callers' per-goroutine reference words; every
	// Instance's refs counts them (ref.Words).
	words ref.Words

	// Lock order (docs/design.md, "Lock order"): Host.mu, then
	// Instance.regMu, then registry.mu; Host.mu, then a ref.Ref's own
	// mutex (Kill, Revive). Every other lock here is a leaf. None is held
	// while module code or a subscriber runs. A RegisterCheck runs with
	// the registering Instance's regMu held (Kernel.stage), checkMu not.

	// mu guards byName, autoclean, seq and every Instance's deps, holders,
	// imported, swap, waitingFor, replaces, restored, events, delivering
	// and unloading fields, the hotSwap records, and state transitions. It is never held while module code
	// runs. Held, it may be followed by Instance.regMu, registry.mu and a
	// ref.Ref's mutex.
	mu     sync.Mutex
	byName map[string]*Instance // the current instance of each name, coming/live/going
	// autoclean holds the demand-loaded instances not yet gone: the
	// candidates of an autoclean sweep, which so never walks the others.
	autoclean map[*Instance]struct{}
	seq       uint64

	subMu sync.Mutex                     // serialises writers of subs; a leaf
	subs  atomic.Pointer[[]*func(Event)] // the notifier chain, copy-on-write

	taints taintLog // why the host is tainted; its lock is a leaf

	checkMu sync.Mutex                   // serialises writers of checks; a leaf
	checks  atomic.Pointer[[]*kindCheck] // CheckRegistrations', copy-on-write

	underflows atomic.Int64
	requests   requester

	// detached counts instances torn down in the background (failed
	// inits, the new instance of an undone hot swap: a grace period and
	// their references); Shutdown waits for them and, past its deadline,
	// cancels detachedCtx to force them.
	detached      teardowns
	detachedCtx   context.Context
	detachedForce context.CancelFunc

	// sectionCtx is context.Background() marked as this host's read
	// section: hook calls made with no context of their own use it rather
	// than allocate a marked one each call.
	sectionCtx context.Context

	hooks testHooks
}

// testHooks are pause points for tests that reproduce races at the exact
// window. All nil outside tests.
type testHooks struct {
	beforeReserve func(m *Instance, name string) // in Kernel.Register, before the reservation
	afterKill     func(m *Instance)              // unload: new references refused, still published
	afterGrace    func(m *Instance)              // unload: unpublished, grace period over, before the final count
	beforeExit    func(m *Instance)              // unload: about to call Stop/Exit
	initFailed    func(m *Instance)              // failed init: going, before the grace period
	revived       func(m *Instance)              // restore / undone swap: m accepts references again (Host.mu held)
	mergeWait     func(m *Instance)              // load: about to wait for a coming instance of the same source
	goingWait     func(m *Instance)              // load: about to wait for a going instance to be gone
	unloadFound   func(m *Instance)              // Unload: found m by name, before taking Host.mu
	swapWait      func(m *Instance)              // Import / Depends: about to wait for the hot swap m is a side of
}

// teardowns counts background teardowns (its mu is a leaf). Unlike a sync.WaitGroup it may
// gain one while someone waits for it to be idle (a load failing during
// Shutdown).
type teardowns struct {
	mu   sync.Mutex // guards n and idle
	n    int
	idle chan struct{} // closed when n drops to zero; nil while never busy
}

func (t *teardowns) Add(n int) {
	t.mu.Lock()
	if t.n == 0 {
		t.idle = make(chan struct{})
	}
	t.n += n
	t.mu.Unlock()
}

func (t *teardowns) Done() {
	t.mu.Lock()
	t.n--
	if t.n == 0 {
		close(t.idle)
	}
	t.mu.Unlock()
}

// Idle returns a channel closed once no teardown is running.
func (t *teardowns) Idle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	return t.idle
}

// Resolver maps a module name or alias (or "fs-TYPE", "symbol:NAME") to a
// Source, for demand loading. It returns an error matching ErrNotFound when
// it knows no such module.
type Resolver interface {
	Resolve(ctx context.Context, nameOrAlias string) (Source, error)
}

// Option configures a Host.
type Option func(*Host)

// WithLogger sets the host's logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(h *Host) { h.log = l } }

// WithResolver enables demand loading through r.
func WithResolver(r Resolver) Option { return func(h *Host) { h.resolver = r } }

// RegisterCheck validates a registration as it is staged: inst is the
// registering instance (coming: for Host.Replace, the replacement, which
// bears the module's name while the old instance is still live), name
// and value the registration's. A non-nil error refuses it.
type RegisterCheck func(inst *Instance, name string, value any) error

type kindCheck struct {
	kind Kind
	fn   RegisterCheck
}

// CheckRegistrations adds fn to the checks every registration of kind
// passes as it is staged (Kernel.Register, during Init, before its name
// is reserved): when fn refuses one, Register fails with fn's error,
// naming the module, and nothing is reserved; a module's Init that
// returns that error fails its load or replacement, before anything of
// it was visible. Checks run in the order they were added; the returned
// function removes fn. A check that does not know a registration yet (a
// name reserved after it passed) is not re-run: fn itself must remember
// what it accepted from instances still coming (package web does, for
// route patterns), and forget it on their lifecycle events.
//
// fn runs on the registering module's goroutine with its registration
// lock held: it must not register, load or unload, and must be quick.
func (h *Host) CheckRegistrations(kind Kind, fn RegisterCheck) (remove func()) {
	kc := &kindCheck{kind: kind, fn: fn}
	h.checkMu.Lock()
	defer h.checkMu.Unlock()
	var next []*kindCheck
	if p := h.checks.Load(); p != nil {
		next = append(next, *p...)
	}
	next = append(next, kc)
	h.checks.Store(&next)
	return func() {
		h.checkMu.Lock()
		defer h.checkMu.Unlock()
		var next []*kindCheck
		for _, c := range *h.checks.Load() {
			if c != kc {
				next = append(next, c)
			}
		}
		h.checks.Store(&next)
	}
}

// check runs the RegisterChecks of reg's kind.
func (h *Host) check(m *Instance, reg *registration) error {
	p := h.checks.Load()
	if p == nil {
		return nil
	}
	for _, c := range *p {
		if c.kind == reg.key.kind {
			if err := c.fn(m, reg.key.name, reg.value); err != nil {
				return err
			}
		}
	}
	return nil
}

// New returns a host with no module loaded.
func New(opts ...Option) *Host {
	h := &Host{
		log:       slog.Default(),
		grace:     grace.New(),
		reg:       newRegistry(),
		byName:    make(map[string]*Instance),
		autoclean: make(map[*Instance]struct{}),
	}
	for _, o := range opts {
		o(h)
	}
	h.requests.init()
	h.detachedCtx, h.detachedForce = context.WithCancel(context.Background())
	h.sectionCtx = context.WithValue(context.Background(), sectionKey{h}, true)
	return h
}

// Module returns the current instance of name (coming, live or going).
func (h *Host) Module(name string) (*Instance, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.byName[name]
	return m, ok
}

// Modules returns every current instance, newest first (as /proc/modules).
func (h *Host) Modules() []*Instance {
	h.mu.Lock()
	out := make([]*Instance, 0, len(h.byName))
	for _, m := range h.byName {
		out = append(out, m)
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].seq > out[j].seq })
	return out
}

// Acquire looks up a published registration and takes a reference on its
// owner: the counting interface. The reference is taken here, outside
// module code, and dropped by Binding.Release, outside module code too.
// It fails with ErrNotFound when nothing of that name is published and with
// ErrNotLive when its owner has begun unloading.
//
// A lookup that finds an owner which has just stopped accepting references
// looks again: if a hot swap (Replace) published a new owner meanwhile, it
// gets that one, so no call fails during a swap.
func (h *Host) Acquire(kind Kind, name string) (Binding, error) {
	reg, err := h.acquire(kind, name)
	if err != nil {
		return Binding{}, err
	}
	return Binding{reg: reg, owner: reg.owner}, nil
}

// acquire is Acquire, returning the registration it found (nil if none)
// for Handle's cache and Kernel.Import. On success a reference was taken on
// its owner; on an error, none was.
func (h *Host) acquire(kind Kind, name string) (*registration, error) {
	reg := h.reg.lookup(kind, name)
	for {
		if reg == nil {
			return nil, modErr("acquire", name, fmt.Errorf("%s: %w", kind, ErrNotFound))
		}
		// The registration's copy of the owner's Ref and its own use
		// mark: no load of the owner's Instance on this path.
		if reg.refs.TryGet() {
			reg.noteUse()
			return reg, nil
		}
		// The owner's Kill is ordered after the swap's step (the store
		// of the cell's state; both under Host.mu in that order), so a
		// TryGet that failed because of a swap is followed by a lookup
		// that sees the new registration.
		next := h.reg.lookup(kind, name)
		if next == reg {
			// Still published after its owner's TryGet failed: the owner
			// was going then (killed, being unloaded). It may be gone by
			// now, but a lookup by name reports what held at the lookup;
			// ErrGone is for a stale *Instance.
			return reg, modErr("acquire", name, fmt.Errorf("%s is %s: %w", reg.owner.name, StateGoing, ErrNotLive))
		}
		reg = next
	}
}

// Lookup lists the published registrations of a kind, sorted by name.
func (h *Host) Lookup(kind Kind) []Registration { return h.reg.list(kind) }

// CallHooks calls every hook subscribed to event, in load order, inside one
// read section of the host's grace-period domain and without taking
// references (the non-counting interface). A hook that returns an error or
// panics does not stop the others; the errors are joined, each naming its
// module, and a panicking module is tainted.
//
// Each hook gets ctx marked as this host's read section: a lifecycle call
// made with it (or a context derived from it) that would have to wait for
// a grace period fails at once with ErrInReadSection (see "Lifecycle calls
// from hooks" in the package documentation).
func (h *Host) CallHooks(ctx context.Context, event string, arg any) error {
	tok := h.grace.Lock()
	defer h.grace.Unlock(tok)
	var buf [8]*registration
	return h.callHooks(ctx, h.reg.hookList(event, buf[:0]), event, arg)
}

// sectionKey is the context key marking a read section of the host h
// (CallHooks gives each hook a context carrying it).
type sectionKey struct{ h *Host }

// inReadSection reports whether ctx is (derived from) the context of a hook
// call of h, that is, whether whoever holds it may be inside a read section of
// h's grace-period domain, which no grace period of h can outlast.
func (h *Host) inReadSection(ctx context.Context) bool {
	return ctx != nil && ctx.Value(sectionKey{h}) != nil
}

// sectionErr is the error of a lifecycle call op on name refused because
// ctx is a hook call's.
func sectionErr(op, name string) error {
	return modErr(op, name, fmt.Errorf("it would wait for a grace period, which waits for the calling hook: %w", ErrInReadSection))
}

func (h *Host) callHooks(ctx context.Context, list []*registration, event string, arg any) error {
	if len(list) == 0 {
		return nil
	}
	switch {
	case ctx == nil || ctx == context.Background():
		ctx = h.sectionCtx
	case !h.inReadSection(ctx):
		ctx = context.WithValue(ctx, sectionKey{h}, true)
	}
	var errs []error
	for _, reg := range list {
		if err := callHook(ctx, reg, event, arg); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// callHook calls one hook; its error (or panic) names the hook's module.
func callHook(ctx context.Context, reg *registration, event string, arg any) (err error) {
	defer reg.owner.catch("hook", event, nil, &err)
	if herr := reg.hook(ctx, arg); herr != nil {
		return modErr("hook "+event, reg.owner.name, herr)
	}
	return nil
}

// Synchronize waits for a grace period of the host's read-side domain:
// every hook call that began before it has returned. Called with the
// context of a hook call (or one derived from it) it fails at once with
// ErrInReadSection: the grace period would wait for that hook itself.
func (h *Host) Synchronize(ctx context.Context) error {
	if h.inReadSection(ctx) {
		return sectionErr("synchronize", "host")
	}
	return h.grace.Synchronize(ctx)
}

// Event is a lifecycle notification.
type Event struct {
	Module   string
	State    State
	Instance *Instance
}

// Subscribe adds fn to the host's notifier chain: it is called, with no
// lock held, for every transition of every instance made after it was
// added: coming (when a load begins), then each transition of the state
// machine in the order it was made (live, going, live again after a
// refused unload, ..., gone). The events of one instance are delivered one
// at a time and in order: by the goroutine making the transition, right
// after it, or, when an earlier event of the same instance is still being
// delivered (a subscriber is slow, or makes a transition itself), by the
// goroutine delivering that one, right after it. Events of different
// instances may be delivered concurrently. The returned function
// unsubscribes.
func (h *Host) Subscribe(fn func(Event)) (cancel func()) {
	p := &fn
	h.subMu.Lock()
	var next []*func(Event)
	if old := h.subs.Load(); old != nil {
		next = append(next, *old...)
	}
	next = append(next, p)
	h.subs.Store(&next)
	h.subMu.Unlock()
	return func() {
		h.subMu.Lock()
		defer h.subMu.Unlock()
		old := h.subs.Load()
		var next []*func(Event)
		for _, q := range *old {
			if q != p {
				next = append(next, q)
			}
		}
		h.subs.Store(&next)
	}
}

// deliver hands m's queued transitions (see setState) to the subscribers,
// in order, unless another goroutine is delivering them already (it then
// delivers these too). Called without h.mu, after each transition.
func (h *Host) deliver(m *Instance) {
	if !m.eventsPending.Load() {
		// Nothing queued (no subscriber when the transitions were made),
		// or delivered already by the goroutine that was delivering.
		// This goroutine's own transitions set the flag before it got
		// here, so it never misses them.
		return
	}
	h.mu.Lock()
	if m.delivering {
		h.mu.Unlock()
		return
	}
	m.delivering = true
	done := false
	defer func() {
		if !done { // a subscriber panicked: later deliveries must still run
			h.mu.Lock()
			m.delivering = false
			h.mu.Unlock()
		}
	}()
	for len(m.events) > 0 {
		s := m.events[0]
		m.events = m.events[1:]
		h.mu.Unlock()
		h.emit(m, s)
		h.mu.Lock()
	}
	m.events = nil
	m.eventsPending.Store(false)
	m.delivering = false
	done = true
	h.mu.Unlock()
}

func (h *Host) emit(m *Instance, s State) {
	subs := h.subs.Load()
	if subs == nil {
		return
	}
	for _, fn := range *subs {
		(*fn)(Event{Module: m.name, State: s, Instance: m})
	}
}

// Taints returns why the host is tainted (forced unloads, ...), oldest
// first; empty when it is not. The first 32 reasons are kept; past them
// the last line says how many more there were (TaintsMoreFormat).
func (h *Host) Taints() []string { return h.taints.list() }

// TaintMask returns the host's taint as /proc/sys/kernel/tainted shows the
// kernel's: the bits of the TaintFlags recorded (0 when untainted).
func (h *Host) TaintMask() uint64 { return h.taints.taintMask() }

// TaintFlags returns the letters of the host's TaintFlags, in the kernel's
// order ("" when untainted).
func (h *Host) TaintFlags() string { return h.taints.flags() }

func (h *Host) taint(flag TaintFlag, reason string) {
	h.taints.add(flag, reason)
	h.log.Warn("host tainted", "flag", string(flag), "reason", reason)
}

// Underflows returns how many Puts without a matching Get were detected.
func (h *Host) Underflows() int64 { return h.underflows.Load() }

// collectUnderflows reports the Puts without a Get that m's reference has
// detected since the last report. Called when a Put detects one at once,
// and after every Kill, when the Ref's slot counts are folded and late
// detections surface.
func (h *Host) collectUnderflows(m *Instance) {
	for {
		seen := m.underflowsSeen.Load()
		n := m.refs.Underflows() - seen
		if n <= 0 {
			return
		}
		if m.underflowsSeen.CompareAndSwap(seen, seen+n) {
			h.underflows.Add(n)
			h.log.Error("module reference put without get", "module", m.name, "count", n)
			return
		}
	}
}

// setState performs a transition of the state machine in state.go and
// queues its event. The caller holds h.mu, and calls h.deliver(m) after
// releasing it.
func (h *Host) setState(m *Instance, to State) {
	from := m.State()
	if !validTransition(from, to) {
		panic(fmt.Sprintf("raceless: invalid state transition %s -> %s for %s", from, to, m.name))
	}
	m.state.Store(int32(to))
	h.queueEvent(m, to)
}

// queueEvent queues the event of m's transition to s for h.deliver, if
// there are subscribers: an event is for subscribers added before the
// transition (Subscribe), and with none, deliver costs one atomic load.
// The caller holds h.mu.
func (h *Host) queueEvent(m *Instance, s State) {
	if subs := h.subs.Load(); subs != nil && len(*subs) > 0 {
		m.events = append(m.events, s)
		m.eventsPending.Store(true)
	}
}

// addDep records that user depends on owner, and, if symbol is not empty,
// that it imported symbol from it; it takes one reference on owner for the
// edge. A second import of the same owner adds no edge.
//
// While owner is either side of a hot swap (Replace), an edge to the old
// instance is added only until the replacement's exports have been checked
// against what the old one's importers hold (the edges then move to the
// replacement in the swap's step); after that, and on the replacement,
// addDep returns a *swapInProgress to wait for before looking the name up
// again, so that the check never misses an importer and an undone swap
// never strands one.
func (h *Host) addDep(user, owner *Instance, symbol string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := user.State(); s != StateComing && s != StateLive {
		return fmt.Errorf("%s is %s: %w", user.name, s, ErrNotLive)
	}
	if sw := owner.swap; sw != nil {
		switch {
		case user == sw.new:
			return fmt.Errorf("%s would depend on the instance it replaces: %w", user.name, ErrCycle)
		case owner != sw.old || sw.checked:
			return &swapInProgress{owner: owner, done: sw.done}
		}
	} else if owner.unloading {
		return fmt.Errorf("%s is being unloaded: %w", owner.name, ErrNotLive)
	}
	if s := owner.State(); s != StateLive {
		return fmt.Errorf("%s is %s: %w", owner.name, s, ErrNotLive)
	}
	if !user.deps[owner] {
		if !owner.tryGet() {
			return stateErr(owner)
		}
		if user.deps == nil {
			user.deps = make(map[*Instance]bool)
		}
		if owner.holders == nil {
			owner.holders = make(map[*Instance]bool)
		}
		user.deps[owner] = true
		owner.holders[user] = true
	}
	if symbol != "" {
		if user.imported == nil {
			user.imported = make(map[string]*Instance)
		}
		user.imported[symbol] = owner
	}
	return nil
}

// swapInProgress is addDep's answer for a module in the middle of a hot
// swap: wait for done (the end of Replace), then look the name up again.
type swapInProgress struct {
	owner *Instance
	done  <-chan struct{}
}

func (e *swapInProgress) Error() string { return e.owner.name + " is being replaced" }

// awaitSwap waits for the hot swap err reports, if it is a
// *swapInProgress, and reports whether the caller should look again; any
// other error, or ctx ending, is returned.
func (h *Host) awaitSwap(ctx context.Context, err error) (again bool, _ error) {
	sw, ok := err.(*swapInProgress)
	if !ok {
		return false, err
	}
	if h.inReadSection(ctx) { // the Replace waits for a grace period, which waits for us
		return false, fmt.Errorf("%s is being replaced: %w", sw.owner.name, ErrInReadSection)
	}
	if h.hooks.swapWait != nil {
		h.hooks.swapWait(sw.owner)
	}
	select {
	case <-sw.done:
		return true, nil
	case <-ctx.Done():
		return false, fmt.Errorf("waiting for the replacement of %s: %w", sw.owner.name, ctx.Err())
	}
}

// releaseDeps drops every dependency of m, with its reference.
func (h *Host) releaseDeps(m *Instance) {
	h.mu.Lock()
	deps := m.deps
	m.deps = nil
	m.imported = nil
	for d := range deps {
		delete(d.holders, m)
	}
	h.mu.Unlock()
	for d := range deps {
		d.put()
	}
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
