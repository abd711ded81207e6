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
// fails, nothing it registered was ever visible; the host waits a grace
// period and for the module's own references before releasing its name and
// dependencies, and returns an error wrapping ErrInit and the module's own.
// Waits honour ctx.
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
		refs:     h.holders.New(true), // outside TryGet fails while coming
		initDone: make(chan struct{}),
		gone:     make(chan struct{}),
		params:   params,
	}
	m.autoclean.Store(lo.autoclean)
	// A demand load is a use: the module survives at least one whole
	// sweep period even if nobody calls it before the next sweep.
	m.used.Store(lo.autoclean)
	m.kernel = &Kernel{inst: m, log: h.log.With("module", info.Name)}
	return m
}

// initialize runs the coming phase of m: dependencies, instantiation, Init,
// then either publication (live) or the failed-init teardown.
func (h *Host) initialize(ctx context.Context, m *Instance, src Source, lo loadOpts) error {
	h.emit(m, StateComing)
	err := h.resolveDepends(ctx, m)
	if err == nil {
		m.mod, err = src.Instantiate(ctx)
		if err != nil {
			err = modErr("load", m.name, err)
		}
	}
	if err == nil {
		err = h.callInit(m)
	}
	if err != nil {
		h.failInit(ctx, m, err)
		return err
	}
	if s, ok := m.mod.(Starter); ok {
		s.Start()
	}
	regs := m.registrations()
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
	} else {
		h.reg.publish(regs)
	}
	h.mu.Unlock()
	h.log.Debug("module live", "module", m.name)
	h.emit(m, StateLive)
	close(m.initDone)
	return nil
}

// callInit runs Init with registrations open, recovering a panic.
func (h *Host) callInit(m *Instance) (err error) {
	k := m.kernel
	k.initing.Store(true)
	defer func() {
		m.regMu.Lock()
		k.initing.Store(false)
		m.regMu.Unlock()
		if p := recover(); p != nil {
			m.Taint(fmt.Sprintf("panic in init: %v", p))
			err = &ModuleError{Op: "init", Module: m.name, Err: fmt.Errorf("%w: panic: %v", ErrInit, p)}
		}
	}()
	if ierr := m.mod.Init(k); ierr != nil {
		return &ModuleError{Op: "init", Module: m.name, Err: fmt.Errorf("%w: %w", ErrInit, ierr)}
	}
	return nil
}

// resolveDepends takes a dependency on every module named in Info.Depends,
// demand-loading missing ones through the resolver.
func (h *Host) resolveDepends(ctx context.Context, m *Instance) error {
	for _, dep := range m.info.Depends {
		d, err := h.request(ctx, dep, m)
		if err != nil {
			return modErr("load", m.name, fmt.Errorf("dependency %s: %w", dep, err))
		}
		if err := h.addDep(m, d); err != nil {
			return modErr("load", m.name, fmt.Errorf("dependency %s: %w", dep, err))
		}
	}
	return nil
}

// failInit tears down a module whose Init (or earlier step) failed. Nothing
// it registered was published. It frees nothing before a grace period has
// passed and the module's own references are gone; then it releases the
// dependencies and the name, and wakes the waiters with err.
func (h *Host) failInit(ctx context.Context, m *Instance, err error) {
	h.mu.Lock()
	h.setState(m, StateGoing)
	h.mu.Unlock()
	if h.hooks.initFailed != nil {
		h.hooks.initFailed(m)
	}
	h.emit(m, StateGoing)
	m.refs.Kill()
	// Nothing was published, but module code may have handed out
	// pointers to readers of the host's domain (hooks it called
	// itself): wait them out as Linux's do_init_module does.
	bg := context.WithoutCancel(ctx)
	_ = h.grace.Synchronize(bg)
	if m.refs.Count() > 0 {
		h.log.Warn("failed init: waiting for the module's own references", "module", m.name, "refs", m.refs.Count())
		_ = m.refs.WaitZero(bg)
	}
	m.regMu.Lock()
	regs := m.regs
	m.regs = nil
	m.regMu.Unlock()
	h.reg.drop(regs)
	h.releaseDeps(m)
	m.initErr = err
	h.finishGone(m)
	close(m.initDone)
	h.log.Info("module init failed", "module", m.name, "err", err)
}

// finishGone moves m to gone and releases its name.
func (h *Host) finishGone(m *Instance) {
	h.mu.Lock()
	h.setState(m, StateGone)
	if h.byName[m.name] == m {
		delete(h.byName, m.name)
	}
	h.mu.Unlock()
	h.emit(m, StateGone)
	close(m.gone)
}
