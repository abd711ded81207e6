package raceless

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
)

// ReplaceOptions modify Replace.
type ReplaceOptions struct {
	// Force lets the replacement drop symbols the old instance exports
	// that no module imports: callers holding a Handle or a Caller on
	// them then get ErrNotFound. Symbols that modules import are never
	// dropped.
	Force bool
}

// Replace hot-swaps the live module called name for a new instance loaded
// from src (an upgrade from v1 to v2) without a window in which callers
// find nothing:
//
//  1. The new instance is loaded alongside the old one: Init may take over
//     any name the old instance registered (other clashes still fail).
//     While it is coming the old instance serves every call.
//  2. Once its Init has returned, the replacement is checked against what
//     the old instance's importers (Kernel.Import) hold: it must export
//     every symbol they imported, each a Func with the same Signature (or
//     with none declared by either), an imported symbol must be a Func
//     (the importer holds any other value itself), and the replacement
//     must not depend on an importer (a cycle). Unless opts.Force, it
//     must also export every symbol the old instance exports. A
//     replacement that fails is unloaded (Exit runs; a refusal only taints
//     it, as after a failed Start) and Replace returns a *BusyError naming
//     the symbols at fault; nothing changed.
//  3. In one step the new instance goes live, takes the name, and every
//     registration of the old one is replaced by the new one's; the old
//     instance stops accepting references, and the modules that depend on
//     it depend on the new one instead: the Funcs they imported call it
//     from then on. A lookup that raced with the step and found the old
//     registration retries and finds the new one (Host.Acquire), so no
//     call fails.
//  4. The old instance is unloaded as by Unload with Wait: a grace period,
//     its references drain (honouring ctx), Stop, Exit.
//
// If the new Init fails, nothing changed. If the old Exit refuses, or ctx
// ends before its references drain, the swap is undone: the old instance
// is republished and live again, its dependants move back to it, the new
// one is unloaded, and the error is returned. A module that imports from
// either instance while a Replace runs waits for it to finish (see
// Kernel.Import). Replace refuses (ErrBusy) a module that is not live, or
// already being unloaded or replaced. Called with a hook call's context it
// fails at once with ErrInReadSection, changing nothing (its grace period
// would wait for that hook).
func (h *Host) Replace(ctx context.Context, name string, src Source, params map[string]string, opts ReplaceOptions) (*Instance, error) {
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
	case old.State() != StateLive:
		h.mu.Unlock()
		return nil, &BusyError{Op: "replace", Module: name, Reason: "not live (" + old.State().String() + ")"}
	case old.unloading:
		h.mu.Unlock()
		return nil, &BusyError{Op: "replace", Module: name, Reason: "unload or replacement in progress"}
	}
	old.unloading = true // no Unload or Replace of old meanwhile
	m := h.newInstance(info, src.Key(), resolved, loadOpts{})
	m.replaces = old // not in byName: it takes the name when it goes live
	sw := &hotSwap{old: old, new: m, force: opts.Force, done: make(chan struct{})}
	old.swap, m.swap = sw, sw
	h.mu.Unlock()
	defer h.endSwap(sw)

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

// hotSwap is a Replace in progress, recorded on both its instances
// (Instance.swap) from Replace's start to its end. Its fields are guarded
// by Host.mu.
type hotSwap struct {
	old, new *Instance
	force    bool // ReplaceOptions.Force
	// checked is set once the replacement passed checkSwap: from then on
	// a new dependency on either instance waits for done (addDep).
	checked bool
	done    chan struct{} // closed by endSwap
}

// endSwap ends sw: its instances are ordinary ones again, and the imports
// that waited for it look again.
func (h *Host) endSwap(sw *hotSwap) {
	h.mu.Lock()
	sw.old.swap, sw.new.swap = nil, nil
	h.mu.Unlock()
	close(sw.done)
}

// checkSwap checks the replacement of sw, whose Init has returned, against
// the old instance (step 2 of Replace) and, if it passes, marks sw checked.
// The signatures are asked for before Host.mu is taken (a Signer is module
// code); the importers are read under it, in the same critical section
// that marks sw checked, so that none is missed.
func (h *Host) checkSwap(sw *hotSwap) error {
	old, m := sw.old, sw.new
	type export struct {
		reg    *registration
		sig    Signature
		hasSig bool
	}
	exports := func(in *Instance) map[string]export {
		out := map[string]export{}
		for _, reg := range in.registrations() {
			if reg.key.kind != KindSymbol {
				continue
			}
			e := export{reg: reg}
			if reg.fn != nil {
				e.sig, e.hasSig = in.signature(reg.key.name)
			}
			out[reg.key.name] = e
		}
		return out
	}
	before, after := exports(old), exports(m)

	h.mu.Lock()
	defer h.mu.Unlock()
	held := map[string][]string{} // symbol -> the modules that imported it
	var holders []string
	for u := range old.holders {
		holders = append(holders, u.name)
		for sym, from := range u.imported {
			if from == old {
				held[sym] = append(held[sym], u.name)
			}
		}
	}
	var faults, symbols []string
	for u := range old.holders {
		if dependsOn(m, u) {
			faults = append(faults, fmt.Sprintf("it depends on %s, which imports from it (a cycle)", u.name))
		}
	}
	for _, sym := range slices.Sorted(maps.Keys(held)) {
		by := strings.Join(slices.Sorted(slices.Values(held[sym])), ",")
		b, a := before[sym], after[sym]
		var fault string
		switch {
		case b.reg == nil || b.reg.fn == nil:
			fault = fmt.Sprintf("%s (imported by %s) is not a function: its importers hold the old value", sym, by)
		case a.reg == nil:
			fault = fmt.Sprintf("%s (imported by %s) is missing", sym, by)
		case a.reg.fn == nil:
			fault = fmt.Sprintf("%s (imported by %s) is not a function in the replacement", sym, by)
		case b.hasSig != a.hasSig || b.hasSig && !b.sig.Equal(a.sig):
			fault = fmt.Sprintf("%s (imported by %s) changes type from %s to %s", sym, by, sigText(b.sig, b.hasSig), sigText(a.sig, a.hasSig))
		default:
			continue
		}
		faults = append(faults, fault)
		symbols = append(symbols, sym)
	}
	if len(faults) > 0 {
		sort.Strings(holders)
		return &BusyError{Op: "replace", Module: old.name, Holders: holders, Symbols: symbols,
			Reason: "the replacement does not serve its importers: " + strings.Join(faults, "; ")}
	}
	if !sw.force {
		var dropped []string
		for sym := range before {
			if _, ok := after[sym]; !ok {
				dropped = append(dropped, sym)
			}
		}
		if len(dropped) > 0 {
			sort.Strings(dropped)
			return &BusyError{Op: "replace", Module: old.name, Symbols: dropped,
				Reason: "the replacement drops symbols that callers may hold: " + strings.Join(dropped, ",") + " (force to drop them)"}
		}
	}
	sw.checked = true
	return nil
}

// dependsOn reports whether m depends on target, directly or through
// other modules. Called with Host.mu held.
func dependsOn(m, target *Instance) bool {
	seen := map[*Instance]bool{}
	var walk func(*Instance) bool
	walk = func(i *Instance) bool {
		if i == target {
			return true
		}
		if seen[i] {
			return false
		}
		seen[i] = true
		for d := range i.deps {
			if walk(d) {
				return true
			}
		}
		return false
	}
	return walk(m)
}

func sigText(s Signature, declared bool) string {
	if !declared {
		return "undeclared"
	}
	return s.String()
}

// moveHolders makes every module that depends on from depend on to instead,
// with the symbols it imported, taking a reference on to for each new edge.
// The caller drops from's references, one per edge moved (n), once it has
// let go of Host.mu. Called with Host.mu held and to live: a swap, or its
// undoing.
func moveHolders(from, to *Instance) (n int) {
	for u := range from.holders {
		delete(u.deps, from)
		for sym, o := range u.imported {
			if o == from {
				u.imported[sym] = to
			}
		}
		n++
		if u.deps[to] {
			continue
		}
		u.deps[to] = true
		if to.holders == nil {
			to.holders = make(map[*Instance]bool)
		}
		to.holders[u] = true
		to.refs.Get()
	}
	from.holders = nil
	return n
}

// putN drops n references on m.
func putN(m *Instance, n int) {
	for range n {
		m.put()
	}
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
	moved := moveHolders(m, old)
	h.byName[old.name] = old
	old.unloading = false
	if old.restored != nil {
		close(old.restored)
		old.restored = nil
	}
	h.mu.Unlock()
	putN(m, moved)
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
