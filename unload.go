package raceless

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// UnloadOptions modify Unload.
type UnloadOptions struct {
	// Wait blocks until the references drain instead of refusing with
	// ErrBusy (honouring the context: cancelling restores the module).
	Wait bool
	// Force unloads with references held and taints the host. Holders
	// (modules depending on this one) still refuse it.
	Force bool
	// Progress, if set, is called while waiting with what is left.
	Progress func(Progress)
	// ProgressInterval is how often Progress is called while waiting
	// (default 100ms).
	ProgressInterval time.Duration
}

// Progress reports what a waiting unload waits for.
type Progress struct {
	Module  string
	Refs    int64
	Holders []string
}

// Unload removes the module called name.
//
// It refuses, with a *BusyError matching ErrBusy and leaving state and
// count exactly as they were, when other modules depend on it (naming them),
// when it is not live, or when references are held (unless Wait or Force).
// Otherwise: new references are refused; its registrations are
// unpublished; a grace period passes; if a reference slipped in meanwhile
// the module is restored and ErrBusy returned (or, with Wait, the unload
// waits for it; with Force, it goes on and taints the host). Then Stop and
// Exit run. If Exit refuses, Start runs again, the registrations are
// republished, the module is live again and the caller gets the refusal.
// Exit runs exactly once per successful unload; afterwards the module's
// dependencies are released and its name is free. Called with a hook
// call's context it fails at once with ErrInReadSection (its grace period
// would wait for that hook).
func (h *Host) Unload(ctx context.Context, name string, opts UnloadOptions) error {
	if h.inReadSection(ctx) {
		return sectionErr("unload", name)
	}
	for {
		m, ok := h.Module(name)
		if !ok {
			return modErr("unload", name, ErrNotFound)
		}
		if h.hooks.unloadFound != nil {
			h.hooks.unloadFound(m)
		}
		err := h.unloadInstance(ctx, m, opts)
		if errors.Is(err, ErrNotFound) {
			// m lost the name before unloadInstance took Host.mu: a
			// hot swap gave it to its replacement, which is the module
			// of that name now. ENOENT would say no module is called
			// name; look again.
			if cur, ok := h.Module(name); ok && cur != m {
				continue
			}
		}
		return err
	}
}

// unloadInstance unloads m. Its callers (Unload, Autoclean, Shutdown) have
// refused a hook's context (ErrInReadSection) already.
func (h *Host) unloadInstance(ctx context.Context, m *Instance, opts UnloadOptions) error {
	h.mu.Lock()
	if h.byName[m.name] != m {
		h.mu.Unlock()
		return modErr("unload", m.name, ErrNotFound)
	}
	if len(m.holders) > 0 {
		holders := names(m.holders)
		h.mu.Unlock()
		return &BusyError{Module: m.name, Refs: m.refs.Count(), Holders: holders, Reason: "in use by: " + strings.Join(holders, ",")}
	}
	if m.unloading {
		h.mu.Unlock()
		return &BusyError{Module: m.name, Reason: "unload or replacement in progress"}
	}
	if s := m.State(); s != StateLive {
		h.mu.Unlock()
		return &BusyError{Module: m.name, Reason: "not live (" + s.String() + ")"}
	}
	if !opts.Wait && !opts.Force {
		if n := m.refs.Count(); n > 0 {
			h.mu.Unlock()
			return &BusyError{Module: m.name, Refs: n, Reason: "in use"}
		}
	}
	// 1. New references are refused, in the same critical section as the
	// state change: addDep (under h.mu) sees a live module that accepts
	// references, or a going one that refuses them, never a going one
	// that still accepts them.
	m.unloading = true
	m.refs.Kill()
	h.setState(m, StateGoing)
	h.mu.Unlock()
	h.deliver(m) // going
	h.collectUnderflows(m)
	if h.hooks.afterKill != nil {
		h.hooks.afterKill(m)
	}
	// 2. Registrations unpublished, 3. grace period: every hook call that
	// could have found this module's hooks has returned.
	regs := m.registrations()
	h.reg.unpublish(regs)
	if err := h.grace.Synchronize(ctx); err != nil {
		h.restore(m, regs, false)
		return modErr("unload", m.name, err)
	}
	if h.hooks.afterGrace != nil {
		h.hooks.afterGrace(m)
	}
	// 4. The final count: it can only go down now.
	if n := m.refs.Count(); n > 0 {
		switch {
		case opts.Force:
			reason := fmt.Sprintf("forced unload of %s with %d references", m.name, n)
			m.Taint(TaintForcedUnload, reason)
			h.taint(TaintForcedUnload, reason)
		case opts.Wait:
			if err := h.waitRefs(ctx, m, opts); err != nil {
				h.restore(m, regs, false)
				return modErr("unload", m.name, err)
			}
		default:
			h.restore(m, regs, false)
			return &BusyError{Module: m.name, Refs: n, Reason: "in use"}
		}
	}
	// 5. Stop, Exit.
	if h.hooks.beforeExit != nil {
		h.hooks.beforeExit(m)
	}
	callStop(m)
	busy, exitErr := callExit(ctx, m)
	if busy > 0 || exitErr != nil {
		if !opts.Force {
			h.restore(m, regs, true)
			return &BusyError{Module: m.name, Refs: int64(busy), Reason: "exit refused", Err: exitErr}
		}
		reason := fmt.Sprintf("forced unload of %s although its exit refused (busy %d, %v)", m.name, busy, exitErr)
		m.Taint(TaintForcedUnload, reason)
		h.taint(TaintForcedUnload, reason)
	}
	h.reg.drop(regs)
	h.releaseDeps(m)
	h.finishGone(m)
	h.log.Info("module unloaded", "module", m.name)
	return nil
}

// restore puts a module whose unload was refused back exactly as it was:
// Start again (if Stop ran; a panic there only taints it), republished,
// live, references accepted. The state is live before the first TryGet can
// succeed again: from outside, TryGet fails unless the module is live.
func (h *Host) restore(m *Instance, regs []*registration, stopped bool) {
	if stopped {
		_ = callStart(m, nil)
	}
	h.reg.publish(regs) // found but refusing references until the revive, as while going
	h.mu.Lock()
	m.unloading = false
	h.setState(m, StateLive)
	m.refs.Revive()
	if h.hooks.revived != nil {
		h.hooks.revived(m)
	}
	if m.restored != nil {
		close(m.restored)
		m.restored = nil
	}
	h.mu.Unlock()
	h.deliver(m) // live
}

func (m *Instance) registrations() []*registration {
	m.regMu.Lock()
	defer m.regMu.Unlock()
	return m.regs
}

// waitRefs waits for m's references to drain, reporting progress.
func (h *Host) waitRefs(ctx context.Context, m *Instance, opts UnloadOptions) error {
	interval := opts.ProgressInterval
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	for {
		if opts.Progress != nil {
			opts.Progress(Progress{Module: m.name, Refs: m.refs.Count(), Holders: m.Holders()})
		}
		wctx, cancel := context.WithTimeout(ctx, interval)
		err := m.refs.WaitZero(wctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// Shutdown unloads every module, dependents before their dependencies, in
// rounds, and waits for the teardowns running in the background (failed
// inits, undone replacements). Each unload waits for references while ctx
// allows; once ctx is done, a module still busy is forced (and named in
// forced), and the background teardowns stop waiting and finish, tainting
// their modules.
//
// It returns a nil error once a round finds no module left and the
// background teardowns have finished. It does not stop other goroutines
// from loading modules: one loaded after that last look stays loaded. A
// module that is coming or going (a load, or another caller's unload, in
// progress) is waited for, even after ctx is done, so a load whose Init
// never returns keeps Shutdown from returning.
//
// It returns early, with modules left, once ctx is done and a round in
// which no module could go ended with unload errors that even a forced
// unload gets (a module whose unload or hot swap another caller owns, or
// on which another module came to depend): the joined errors, with forced
// naming what was forced so far. Background teardowns may then still be running.
//
// Called with a hook call's context it fails at once with ErrInReadSection.
func (h *Host) Shutdown(ctx context.Context) (forced []string, err error) {
	if h.inReadSection(ctx) {
		return nil, sectionErr("shutdown", "host")
	}
	for {
		mods := h.Modules()
		if len(mods) == 0 {
			h.waitDetached(ctx)
			return forced, nil
		}
		var errs []error
		progressed := false
		for _, m := range mods {
			if len(m.Holders()) > 0 {
				continue
			}
			if s := m.State(); s == StateComing || s == StateGoing {
				continue // a load or unload in progress: look again next round
			}
			// Wait while the deadline allows; past it, try once more
			// without waiting, and force only what is still busy.
			force := false
			uerr := h.unloadInstance(ctx, m, UnloadOptions{Wait: ctx.Err() == nil})
			if uerr != nil && ctx.Err() != nil {
				uerr = h.unloadInstance(context.WithoutCancel(ctx), m, UnloadOptions{})
				if errors.Is(uerr, ErrBusy) {
					force = true
					uerr = h.unloadInstance(context.WithoutCancel(ctx), m, UnloadOptions{Force: true})
				}
			}
			switch {
			case uerr == nil:
				progressed = true
				if force {
					forced = append(forced, m.name)
				}
			case errors.Is(uerr, ErrNotFound):
				progressed = true
			default:
				errs = append(errs, uerr)
			}
		}
		if progressed {
			continue
		}
		if ctx.Err() != nil && len(errs) > 0 {
			return forced, errors.Join(errs...)
		}
		// Nothing could go this round (an Exit refused, a load or
		// unload in progress, a teardown in the background): retry
		// shortly, forcing once ctx is done.
		t := time.NewTimer(20 * time.Millisecond)
		if ctx.Err() != nil {
			h.detachedForce() // background teardowns stop waiting
			<-t.C
		} else {
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
	}
}

// waitDetached waits for the instances torn down in the background, forcing
// them once ctx is done.
func (h *Host) waitDetached(ctx context.Context) {
	for {
		idle := h.detached.Idle()
		select {
		case <-idle:
		case <-ctx.Done():
			h.detachedForce()
			<-idle
		}
		select {
		case <-h.detached.Idle():
			return
		default: // a teardown began meanwhile
		}
	}
}
