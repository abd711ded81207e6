package raceless

import (
	"context"
	"fmt"
	"strings"
)

// Replace hot-swaps the live module called name for a new instance loaded
// from src (an upgrade from v1 to v2) without a window in which callers
// find nothing:
//
//  1. The new instance is loaded alongside the old one: Init may take over
//     any name the old instance registered (other clashes still fail).
//     While it is coming the old instance serves every call.
//  2. In one step the new instance goes live, takes the name, and every
//     registration of the old one is replaced by the new one's; the old
//     instance stops accepting references. A lookup that raced with the
//     step and found the old registration retries and finds the new one
//     (Host.Acquire), so no call fails.
//  3. The old instance is unloaded as by Unload with Wait: a grace period,
//     its references drain (honouring ctx), Stop, Exit.
//
// If the new Init fails, nothing changed. If the old Exit refuses, or ctx
// ends before its references drain, the swap is undone: the old instance
// is republished and live again, the new one is unloaded, and the error is
// returned. Replace refuses (ErrBusy) a module that other modules depend
// on, or that is not live. Called with a hook call's context it fails at
// once with ErrInReadSection, changing nothing (its grace period would
// wait for that hook).
func (h *Host) Replace(ctx context.Context, name string, src Source, params map[string]string) (*Instance, error) {
	if h.inReadSection(ctx) {
		return nil, sectionErr("replace", name)
	}
	info := src.Info()
	if info.Name != name {
		return nil, modErr("replace", name, fmt.Errorf("replacement is named %q: %w", info.Name, ErrInvalid))
	}
	resolved, err := ResolveParams(info, params)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	old := h.byName[name]
	switch {
	case old == nil:
		h.mu.Unlock()
		return nil, modErr("replace", name, ErrNotFound)
	case len(old.holders) > 0:
		holders := names(old.holders)
		h.mu.Unlock()
		return nil, &BusyError{Module: name, Holders: holders, Reason: "in use by: " + strings.Join(holders, ",")}
	case old.State() != StateLive || old.unloading:
		h.mu.Unlock()
		return nil, &BusyError{Module: name, Reason: "not live (" + old.State().String() + ")"}
	}
	old.unloading = true // no Unload or Replace of old meanwhile
	m := h.newInstance(info, src.Key(), resolved, loadOpts{})
	m.replaces = old // not in byName: it takes the name when it goes live
	h.mu.Unlock()

	if err := h.initialize(ctx, m, src, loadOpts{}); err != nil {
		h.mu.Lock()
		old.unloading = false
		h.mu.Unlock()
		return nil, err
	}
	// The swap happened in initialize; now the old instance goes.
	oldRegs := old.registrations()
	if err := h.drainReplaced(ctx, old); err != nil {
		h.undoReplace(ctx, old, m, oldRegs)
		return nil, err
	}
	h.reg.drop(oldRegs)
	h.releaseDeps(old)
	h.finishGone(old)
	h.mu.Lock()
	m.unloading = false // now an ordinary live module
	h.mu.Unlock()
	h.log.Info("module replaced", "module", name, "from", old.key, "to", m.key)
	return m, nil
}

// drainReplaced waits out the old instance of a hot swap and runs its Stop
// and Exit. A refusal (or ctx ending) leaves it stopped-or-not as reported
// by the returned error; undoReplace restarts it.
func (h *Host) drainReplaced(ctx context.Context, old *Instance) error {
	if err := h.grace.Synchronize(ctx); err != nil {
		return modErr("replace", old.name, err)
	}
	if err := h.waitRefs(ctx, old, UnloadOptions{}); err != nil {
		return modErr("replace", old.name, err)
	}
	callStop(old)
	if busy, err := callExit(ctx, old); busy > 0 || err != nil {
		_ = callStart(old, nil) // a panic only taints it
		return &BusyError{Module: old.name, Refs: int64(busy), Reason: "exit refused", Err: err}
	}
	return nil
}

// undoReplace puts the old instance of a failed hot swap back, live and
// published, and unloads the new one (forcing it if its own Exit refuses:
// it served for a moment only). The new instance's teardown runs in the
// background, tracked by h.detached: a grace period, then its references,
// taken by callers during the moment it was published, then Stop and Exit.
// undoReplace waits for it while ctx allows (awaitGone).
func (h *Host) undoReplace(ctx context.Context, old, m *Instance, oldRegs []*registration) {
	h.mu.Lock()
	// Live, revive, swap back, kill: a lookup racing the undo finds an
	// instance that accepts references, as in the swap itself, and a
	// TryGet on old succeeds only once it is live again.
	h.setState(old, StateLive)
	old.refs.Revive()
	if h.hooks.revived != nil {
		h.hooks.revived(old)
	}
	h.reg.swap(m.registrations(), oldRegs)
	m.refs.Kill()
	h.setState(m, StateGoing) // m.unloading stays set: no Unload of it
	h.byName[old.name] = old
	old.unloading = false
	if old.restored != nil {
		close(old.restored)
		old.restored = nil
	}
	h.mu.Unlock()
	h.deliver(old) // live
	h.deliver(m)   // going

	h.detached.Add(1)
	go func() {
		defer h.detached.Done()
		dctx := h.detachedCtx
		if h.grace.Synchronize(dctx) != nil {
			reason := fmt.Sprintf("forced at shutdown: %s (an undone replacement) torn down without a grace period", m.name)
			m.Taint(TaintForcedUnload, reason)
			h.taint(TaintForcedUnload, reason)
		}
		if m.refs.WaitZero(dctx) != nil {
			reason := fmt.Sprintf("forced at shutdown: %s (an undone replacement) with %d references", m.name, m.refs.Count())
			m.Taint(TaintForcedUnload, reason)
			h.taint(TaintForcedUnload, reason)
		}
		h.finishUndone(dctx, m)
	}()
	h.awaitGone(ctx, m)
}

// finishUndone runs Stop and Exit of the new instance of an undone swap,
// once its references are gone, and frees it; a refusal only taints it
// (ctx goes to a ContextExiter).
func (h *Host) finishUndone(ctx context.Context, m *Instance) {
	callStop(m)
	if busy, err := callExit(ctx, m); busy > 0 || err != nil {
		m.Taint(TaintWarn, fmt.Sprintf("exit refused while undoing a replacement (busy %d, %v)", busy, err))
	}
	h.reg.drop(m.registrations())
	h.releaseDeps(m)
	h.finishGone(m)
}
