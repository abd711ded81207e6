package raceless

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// loadOpts carries what Load's public callers cannot set.
type loadOpts struct {
	waiter    *Instance // the instance whose Init is loading (cycle detection)
	autoclean bool      // demand-loaded
}

// Load loads a module from src with the given key=value parameters and
// returns its live instance.
//
//   - A name that is live: ErrExists.
//   - A name that is coming from the same source (same Key): the loads are
//     merged; Init runs once and every caller gets its result.
//   - A name that is coming from another source: wait for it, then
//     ErrExists if it went live, or load afresh if it failed.
//   - A name that is going: wait until it is gone, then load afresh.
//
// Parameters are validated against src.Info() before anything runs. If Init
// fails (or panics, or Start panics), nothing it registered was ever
// visible; the instance goes going, and the host waits a grace period and
// for the module's own references before releasing its name and
// dependencies (after a Start that panicked, Exit then runs as well, its
// refusal only tainting the module). Load returns an error wrapping ErrInit
// and the module's own (or the panic) once the name is released, or
// earlier when ctx ends or ctx is a hook call's: the teardown then finishes
// in the background (Shutdown waits for it) and the name stays reserved,
// going, until it has. Every wait honours ctx. Called with a hook call's
// context, a load of a name that is going fails at once with
// ErrInReadSection (see "Lifecycle calls from hooks" in the package
// documentation).
func (h *Host) Load(ctx context.Context, src Source, params map[string]string) (*Instance, error) {
	return h.load(ctx, src, params, loadOpts{})
}

func (h *Host) load(ctx context.Context, src Source, params map[string]string, lo loadOpts) (*Instance, error) {
	info := src.Info()
	name := info.Name
	if !ValidName(name) {
		return nil, modErr("load", fmt.Sprintf("%q", name), fmt.Errorf("bad module name: %w", ErrInvalid))
	}
	resolved, err := ResolveParams(info, params)
	if err != nil {
		return nil, err
	}
	key := src.Key()
	for {
		h.mu.Lock()
		cur := h.byName[name]
		if cur == nil {
			m := h.newInstance(info, key, resolved, lo)
			h.byName[name] = m
			if lo.waiter != nil {
				lo.waiter.waitingFor = m
			}
			h.mu.Unlock()
			err := h.initialize(ctx, m, src, lo)
			h.clearWaiting(lo.waiter)
			if err != nil {
				return nil, err
			}
			return m, nil
		}
		state := cur.State()
		if state == StateLive {
			h.mu.Unlock()
			return nil, modErr("load", name, ErrExists)
		}
		if state == StateGoing && h.inReadSection(ctx) {
			// Its teardown waits for a grace period, which waits for
			// the hook this call is made from.
			h.mu.Unlock()
			return nil, modErr("load", name, fmt.Errorf("%s is going: %w", name, ErrInReadSection))
		}
		if lo.waiter != nil {
			if chain := waitChain(lo.waiter, cur); chain != "" {
				h.mu.Unlock()
				return nil, modErr("load", name, fmt.Errorf("%s: %w", chain, ErrCycle))
			}
			lo.waiter.waitingFor = cur
		}
		if cur.restored == nil {
			cur.restored = make(chan struct{})
		}
		restored := cur.restored
		h.mu.Unlock()

		var done <-chan struct{} = cur.gone
		if state == StateComing {
			done = cur.initDone
			if cur.key == key && h.hooks.mergeWait != nil {
				h.hooks.mergeWait(cur)
			}
		} else if h.hooks.goingWait != nil {
			h.hooks.goingWait(cur)
		}
		select {
		case <-restored:
		case <-done:
		case <-ctx.Done():
			h.clearWaiting(lo.waiter)
			return nil, modErr("load", name, ctx.Err())
		}
		h.clearWaiting(lo.waiter)
		if state == StateComing && cur.key == key {
			// Merged with a concurrent load of the same module.
			if cur.initErr != nil {
				h.awaitGone(ctx, cur)
				return nil, cur.initErr
			}
			return cur, nil
		}
		// Another source finished its init, or the old instance is
		// gone: look again.
	}
}

// waitChain reports the cycle, as "a -> b -> a", if waiting for target
// would make waiter wait for itself. Called with h.mu held.
func waitChain(waiter, target *Instance) string {
	path := []string{waiter.name}
	for t := target; t != nil; t = t.waitingFor {
		path = append(path, t.name)
		if t == waiter {
			return strings.Join(path, " -> ")
		}
		if len(path) > 1000 {
			break
		}
	}
	return ""
}

func (h *Host) clearWaiting(w *Instance) {
	if w == nil {
		return
	}
	h.mu.Lock()
	w.waitingFor = nil
	h.mu.Unlock()
}

// newInstance creates a coming instance. Called with h.mu held.
func (h *Host) newInstance(info Info, key string, params map[string]string, lo loadOpts) *Instance {
	h.seq++
	m := &Instance{
		host:     h,
		name:     info.Name,
		key:      key,
		info:     info,
		seq:      h.seq,
		loaded:   time.Now(),
		refs:     h.words.New(true), // references from outside fail while coming
		initDone: make(chan struct{}),
		gone:     make(chan struct{}),
		params:   params,
	}
	h.queueEvent(m, StateComing) // delivered by initialize
	m.autoclean.Store(lo.autoclean)
	if lo.autoclean {
		h.autoclean[m] = struct{}{}
	}
	// A demand load is a use: the module survives at least one whole
	// sweep period even if nobody calls it before the next sweep.
	m.used.Store(lo.autoclean)
	m.kernel = &Kernel{inst: m}
	return m
}

// initialize runs the coming phase of m: dependencies, instantiation, Init,
// Start, then either publication (live) or the failed-init teardown.
func (h *Host) initialize(ctx context.Context, m *Instance, src Source, lo loadOpts) error {
	h.deliver(m) // coming
	err := h.resolveDepends(ctx, m)
	if err == nil {
		m.mod, err = instantiate(ctx, m, src)
		if err != nil {
			err = modErr("load", m.name, err)
		}
	}
	if err == nil {
		err = h.callInit(m)
	}
	if err != nil {
		h.failInit(ctx, m, err, false)
		return err
	}
	if m.swap != nil { // read-only for m's own goroutine until endSwap
		if err := h.checkSwap(m.swap); err != nil {
			h.failInit(ctx, m, err, true) // Init succeeded: Exit runs
			return err
		}
	}
	if err := callStart(m, ErrInit); err != nil {
		// Init succeeded: the teardown runs Exit.
		h.failInit(ctx, m, err, true)
		return err
	}
	regs := m.registrations()
	moved := 0 // dependants moved from the instance m replaces
	h.mu.Lock()
	h.setState(m, StateLive)
	m.refs.Revive()
	if old := m.replaces; old != nil {
		// A hot swap: the new instance takes the name and every
		// registration of the old one in the same step in which the old
		// one stops accepting references (see Replace).
		h.byName[m.name] = m
		m.unloading = true // Replace owns it until the old one is gone
		// The snapshot store precedes the kill: a TryGet that fails
		// because of this kill is followed, in Acquire, by a lookup
		// that finds the new registration.
		h.reg.swap(old.registrations(), regs)
		old.refs.Kill()
		h.setState(old, StateGoing)
		// Its dependants follow: the Funcs they imported find old's
		// references killed and look the name up again (see
		// Kernel.Import).
		moved = moveHolders(old, m)
	} else {
		h.reg.publish(regs)
	}
	h.mu.Unlock()
	if moved > 0 {
		putN(m.replaces, moved)
	}
	h.log.Debug("module live", "module", m.name)
	h.deliver(m) // live
	if old := m.replaces; old != nil {
		h.deliver(old) // going
	}
	close(m.initDone)
	return nil
}

// instantiate runs src.Instantiate (a native Source's constructor is module
// code) through catch.
func instantiate(ctx context.Context, m *Instance, src Source) (mod Module, err error) {
	defer m.catch("instantiate", "", nil, &err)
	return src.Instantiate(ctx)
}

// callInit runs Init with registrations open, through catch.
func (h *Host) callInit(m *Instance) (err error) {
	k := m.kernel
	k.initing.Store(true)
	defer func() {
		m.regMu.Lock()
		k.initing.Store(false)
		m.regMu.Unlock()
	}()
	defer m.catch("init", "", ErrInit, &err)
	if ierr := m.mod.Init(k); ierr != nil {
		return &ModuleError{Op: "init", Module: m.name, Err: fmt.Errorf("%w: %w", ErrInit, ierr)}
	}
	return nil
}

// callStart runs m's Start, if it has one, through catch: a panic is
// returned as an error wrapping sentinel (ErrInit on a first load).
func callStart(m *Instance, sentinel error) (err error) {
	s, ok := m.mod.(Starter)
	if !ok {
		return nil
	}
	defer m.catch("start", "", sentinel, &err)
	s.Start()
	return nil
}

// callStop runs m's Stop, if it has one, through catch.
func callStop(m *Instance) {
	s, ok := m.mod.(Stopper)
	if !ok {
		return
	}
	defer m.catch("stop", "", nil, nil)
	s.Stop()
}

// callExit runs m's exit point, ExitContext(ctx) for a ContextExiter, else
// Exit, through catch. A panic counts as an agreeing exit (busy 0, no
// error) and taints m: its state cannot be trusted to serve again, so
// unloading still works.
func callExit(ctx context.Context, m *Instance) (busy int, err error) {
	defer m.catch("exit", "", nil, nil)
	if ce, ok := m.mod.(ContextExiter); ok {
		return ce.ExitContext(ctx)
	}
	return m.mod.Exit()
}

// resolveDepends takes a dependency on every module named in Info.Depends,
// demand-loading missing ones through the resolver.
func (h *Host) resolveDepends(ctx context.Context, m *Instance) error {
	for _, dep := range m.info.Depends {
		for {
			d, err := h.request(ctx, dep, m)
			if err == nil {
				err = h.addDep(m, d, "")
			}
			if again, err := h.awaitSwap(ctx, err); again {
				continue // d was being replaced: request the name again
			} else if err != nil {
				return modErr("load", m.name, fmt.Errorf("dependency %s: %w", dep, err))
			}
			break
		}
	}
	return nil
}

// failInit tears down a module whose coming phase failed: dependencies,
// instantiation, Init, or (inited) after a successful Init, the check of a
// replacement (checkSwap) or Start; Exit then runs, a refusal only
// tainting the module, which never served. Nothing
// it registered was published. It moves m to going and wakes merged loads
// with err at once; the teardown (reapFailed) runs in the background,
// tracked by h.detached, and failInit waits for it while ctx allows (see
// awaitGone).
func (h *Host) failInit(ctx context.Context, m *Instance, err error, inited bool) {
	m.initErr = err
	h.mu.Lock()
	h.setState(m, StateGoing)
	h.mu.Unlock()
	h.deliver(m) // going
	m.refs.Kill()
	close(m.initDone)
	h.log.Info("module init failed", "module", m.name, "err", err)
	if h.hooks.initFailed != nil {
		h.hooks.initFailed(m)
	}
	h.detached.Add(1)
	go h.reapFailed(m, inited)
	h.awaitGone(ctx, m)
}

// reapFailed finishes the teardown of a failed coming phase. It frees
// nothing before a grace period has passed (module code may have handed
// out pointers to readers of the host's domain, hooks it called itself: as
// Linux's do_init_module does) and the module's own references are gone;
// then it runs Exit if Init had succeeded, releases the registrations'
// reservations, the dependencies and the name. Past Shutdown's deadline
// (h.detachedCtx cancelled) it stops waiting and taints the module.
func (h *Host) reapFailed(m *Instance, inited bool) {
	defer h.detached.Done()
	ctx := h.detachedCtx
	if err := h.grace.Synchronize(ctx); err != nil {
		reason := fmt.Sprintf("forced at shutdown: failed init of %s torn down without a grace period", m.name)
		m.Taint(TaintForcedUnload, reason)
		h.taint(TaintForcedUnload, reason)
	}
	if n := m.refs.Count(); n > 0 {
		h.log.Warn("failed init: waiting for the module's own references", "module", m.name, "refs", n)
		if m.refs.WaitZero(ctx) != nil {
			reason := fmt.Sprintf("forced at shutdown: failed init of %s with %d references", m.name, m.refs.Count())
			m.Taint(TaintForcedUnload, reason)
			h.taint(TaintForcedUnload, reason)
		}
	}
	if inited {
		if busy, err := callExit(ctx, m); busy > 0 || err != nil {
			m.Taint(TaintWarn, fmt.Sprintf("exit refused while tearing down a failed load (busy %d, %v)", busy, err))
		}
	}
	m.regMu.Lock()
	regs := m.regs
	m.regs = nil
	m.regMu.Unlock()
	h.reg.drop(regs)
	h.releaseDeps(m)
	h.finishGone(m)
}

// awaitGone waits until m, whose teardown runs in the background, is gone,
// or ctx ends. With a hook call's ctx it returns at once: the teardown's
// grace period waits for that hook to return.
func (h *Host) awaitGone(ctx context.Context, m *Instance) {
	if h.inReadSection(ctx) {
		return
	}
	select {
	case <-m.gone:
	case <-ctx.Done():
	}
}

// finishGone moves m to gone and releases its name.
func (h *Host) finishGone(m *Instance) {
	h.mu.Lock()
	h.setState(m, StateGone)
	if h.byName[m.name] == m {
		delete(h.byName, m.name)
	}
	delete(h.autoclean, m)
	h.mu.Unlock()
	h.deliver(m) // gone
	close(m.gone)
}
