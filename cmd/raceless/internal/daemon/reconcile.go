package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/desired"
	"github.com/raceless/raceless/cmd/raceless/internal/modindex"
)

// Reconciliation moves the host towards a desired state (package desired)
// with the ordinary operations, in this order:
//
//  1. umount the mounts a desired state made that the state no longer
//     names, deepest first;
//  2. unload the modules a desired state loaded that it no longer names,
//     dependents first, each waiting up to Config.ReconcileWait for its
//     references (forced only when its entry said force = true);
//  3. load (through modprobe's path: the index's dependencies first) or
//     replace (Host.Replace: calls and routes keep being served) the
//     state's modules, a module the state names before the state's
//     modules that depend on it;
//  4. mount the state's mounts, parents first;
//  5. set the HTTP middleware chain.
//
// Ownership: the reconciler manages only what a desired state put there.
// A module it loaded or replaced (and a dependency loaded for one) is the
// state's, and goes when the state stops naming it; a module it found
// loaded and kept as it was (a boot module, an operator's insmod) stays
// the operator's, and removing it from the state leaves it loaded. The
// same holds for mounts. A module or mount busy is left as it is, its
// item marked Retry, and the whole state is reconciled again after a
// delay that doubles from Config.ReconcileRetry up to 64 times it, until
// it converges, a new reconciliation starts, or the daemon shuts down.

// Defaults of the reconciler's Config fields.
const (
	// defaultReconcileWait bounds an unload's (or a replaced instance's)
	// wait for references: long enough for calls and requests in flight
	// to finish, short enough that one busy module does not hold up an
	// apply for long.
	defaultReconcileWait = 10 * time.Second
	// defaultReconcileRetry is the first retry's delay; retries back off
	// to 64 times it (about a minute).
	defaultReconcileRetry = time.Second
	maxRetryFactor        = 64
)

// reconciler is the daemon's reconciliation state. Lock order: mu, then
// retryMu.
type reconciler struct {
	d *Daemon

	// mu serialises reconciliations (Reconcile, Diff and retries): held
	// for the whole of one. It guards owned, mounts, mwSet and stopped.
	mu sync.Mutex
	// owned are the modules a desired state put there, by name.
	owned map[string]ownedModule
	// mounts are the mounts a desired state made, by target.
	mounts map[string]desired.Mount
	// mwSet is true when the HTTP middleware is the state's (else it is
	// Config.HTTPMiddleware).
	mwSet bool
	// stopped is set by stop once no reconciliation runs.
	stopped bool

	// retryMu guards gen, timer, delay and closed.
	retryMu sync.Mutex
	// gen counts reconciliations started from outside: a retry
	// scheduled by an older one does not run.
	gen    uint64
	timer  *time.Timer
	delay  time.Duration
	closed bool
	// retries counts retry callbacks running, waited for by stop.
	retries sync.WaitGroup

	ctx    context.Context // the retries' context, cancelled by stop
	cancel context.CancelFunc
}

type ownedModule struct {
	dep   bool   // loaded as a dependency of a state's module, not named by it
	force bool   // the state's entry said force = true
	entry string // the entry's name or file ("" for a dependency)
}

// entryKey identifies a state's module entry before its module's name is
// known: its name (or alias) or its file.
func entryKey(e desired.Module) string { return cmp(e.Name, e.File) }

func newReconciler(d *Daemon) *reconciler {
	r := &reconciler{d: d, owned: map[string]ownedModule{}, mounts: map[string]desired.Mount{}}
	r.ctx, r.cancel = context.WithCancel(d.stopping)
	return r
}

// stop cancels a pending retry, waits for one running and for a
// reconciliation in progress (cancelled by the daemon's stopping), and
// makes later ones do nothing. Shutdown calls it before unloading.
func (r *reconciler) stop() {
	r.retryMu.Lock()
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.retryMu.Unlock()
	r.cancel()
	r.retries.Wait()
	// Wait for the reconciliation in progress, if any.
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
}

// Reconcile moves the host towards s and reports, per item, what it did
// or why it could not. Reconciliations run one at a time; a new one
// cancels the pending retry of the previous. The report is Converged when
// the host now runs exactly s (no item failed or was left busy); items
// left busy are retried in the background (see Config.OnReconcile). The
// waits give up when ctx ends or the daemon begins to shut down; once
// shutdown has begun Reconcile does nothing and reports no item, not
// converged.
func (d *Daemon) Reconcile(ctx context.Context, s *desired.State) desired.Report {
	r := d.rec
	r.retryMu.Lock()
	r.gen++
	gen := r.gen
	if r.timer != nil {
		r.timer.Stop()
	}
	r.delay = d.cfg.ReconcileRetry
	r.retryMu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(d.stopping, cancel)()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.retryMu.Lock()
	closed := r.closed
	r.retryMu.Unlock()
	if closed || r.stopped {
		return desired.Report{Items: []desired.Item{}}
	}
	rep := r.run(ctx, s, false)
	r.after(gen, s, rep)
	return rep
}

// Diff reports what Reconcile would do with s, changing nothing. It waits
// for a reconciliation in progress to end.
func (d *Daemon) Diff(s *desired.State) desired.Report {
	r := d.rec
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.run(context.Background(), s, true)
}

// Reload reads the daemon's desired state (Config.Config) again and
// reconciles it (SIGHUP, `raceless apply`). A file that does not parse
// changes nothing and is returned (matching desired.ErrInvalid).
func (d *Daemon) Reload(ctx context.Context) (desired.Report, error) {
	if d.cfg.Config == "" {
		return desired.Report{}, &control.Error{Code: control.CodeUsage, Message: "the daemon runs without --config: give the desired state FILE"}
	}
	s, err := desired.Load(d.cfg.Config)
	if err != nil {
		d.log.Error("desired state refused; nothing changed", "config", d.cfg.Config, "err", err)
		return desired.Report{}, err
	}
	return d.Reconcile(ctx, s), nil
}

// after logs rep, tells Config.OnReconcile, and schedules a retry when
// items were left busy. r.mu is held.
func (r *reconciler) after(gen uint64, s *desired.State, rep desired.Report) {
	for _, it := range rep.Items {
		switch {
		case it.Err != "":
			r.d.log.Warn("reconcile", "kind", it.Kind, "name", it.Name, "action", it.Action, "err", it.Err, "retry", it.Retry)
		case it.Action != "keep":
			r.d.log.Info("reconcile", "kind", it.Kind, "name", it.Name, "action", it.Action)
		}
	}
	r.d.log.Info("reconciled", "items", len(rep.Items), "converged", rep.Converged)
	retry := slices.ContainsFunc(rep.Items, func(it desired.Item) bool { return it.Retry })
	r.retryMu.Lock()
	if retry && !r.closed && gen == r.gen {
		delay := r.delay
		r.delay = min(2*r.delay, maxRetryFactor*r.d.cfg.ReconcileRetry)
		r.timer = time.AfterFunc(delay, func() { r.retry(gen, s) })
	}
	r.retryMu.Unlock()
	if r.d.cfg.OnReconcile != nil {
		r.d.cfg.OnReconcile(rep)
	}
}

// retry reconciles s again, unless a newer reconciliation started or the
// daemon is stopping.
func (r *reconciler) retry(gen uint64, s *desired.State) {
	r.retryMu.Lock()
	if r.closed || gen != r.gen {
		r.retryMu.Unlock()
		return
	}
	r.retries.Add(1)
	r.retryMu.Unlock()
	defer r.retries.Done()

	r.mu.Lock()
	defer r.mu.Unlock()
	r.retryMu.Lock()
	stale := r.closed || gen != r.gen
	r.retryMu.Unlock()
	if stale {
		return
	}
	r.after(gen, s, r.run(r.ctx, s, false))
}

// plan is one module entry of the state, resolved.
type plan struct {
	entry  desired.Module
	name   string // the module's name
	target modindex.Target
	src    raceless.Source
	info   raceless.Info
	params map[string]string // resolved (defaults filled in)
	action string            // "load", "replace", "keep"
	err    error
	retry  bool
}

// run is one reconciliation (dry: what it would do). r.mu is held.
func (r *reconciler) run(ctx context.Context, s *desired.State, dry bool) desired.Report {
	d := r.d
	var rep desired.Report
	add := func(it desired.Item) { rep.Items = append(rep.Items, it) }
	item := func(kind, name, action string, err error, retry bool) desired.Item {
		it := desired.Item{Kind: kind, Name: name, Action: action, Retry: retry}
		if err != nil {
			it.Err = err.Error()
		}
		return it
	}

	plans := r.planModules(s)
	wanted := map[string]bool{}
	unresolved := map[string]bool{} // entries whose module could not be found or opened
	for _, p := range plans {
		if p.name != "" {
			wanted[p.name] = true
		} else {
			unresolved[entryKey(p.entry)] = true
		}
	}
	for name, o := range r.owned {
		// A module whose entry cannot be resolved now (its file moved,
		// the index changed) is still wanted: it is kept, not unloaded.
		if o.entry != "" && unresolved[o.entry] {
			wanted[name] = true
		}
	}
	// What the state's modules depend on stays, as their dependency.
	for name := range r.needed(plans) {
		if o, ok := r.owned[name]; ok && !wanted[name] {
			if !dry {
				o.dep, o.entry = true, ""
				r.owned[name] = o
			}
			wanted[name] = true
		}
	}
	wantMount := map[string]bool{}
	for _, m := range s.Mounts {
		wantMount[m.Target] = true
	}

	// 1. Mounts the state made and no longer names, deepest first.
	var gone []string
	for t := range r.mounts {
		if !wantMount[t] {
			gone = append(gone, t)
		}
	}
	slices.SortFunc(gone, func(a, b string) int { return depth(b) - depth(a) })
	for _, t := range gone {
		if dry {
			add(item("mount", t, "umount", nil, false))
			continue
		}
		err := r.umount(ctx, t)
		if err == nil || errors.Is(err, raceless.ErrNotFound) || errors.Is(err, raceless.ErrInvalid) {
			delete(r.mounts, t) // gone, or no longer a mount point
			err = nil
		}
		add(item("mount", t, "umount", err, busy(err)))
	}

	// 2. Modules the state put there and no longer names, dependents
	// first.
	removed := map[string]bool{}
	for _, name := range r.unloadOrder(wanted) {
		o := r.owned[name]
		m, ok := d.host.Module(name)
		if !ok {
			if !dry {
				delete(r.owned, name) // unloaded by hand meanwhile
			}
			continue
		}
		if o.dep && slices.ContainsFunc(m.Holders(), func(h string) bool { return !removed[h] }) {
			continue // a dependency still needed
		}
		if dry {
			removed[name] = true
			add(item("module", name, "unload", nil, false))
			continue
		}
		err := r.unload(ctx, name, o.force)
		if err == nil || errors.Is(err, raceless.ErrNotFound) {
			delete(r.owned, name)
			removed[name] = true
			err = nil
		}
		add(item("module", name, "unload", err, busy(err)))
	}

	// 3. The state's modules, dependencies first.
	for _, p := range plans {
		if p.err != nil {
			add(item("module", cmp(p.name, p.entry.Name, p.entry.File), p.action, p.err, p.retry))
			continue
		}
		if p.action == "keep" {
			if o, ok := r.owned[p.name]; ok && !dry {
				o.force, o.entry = p.entry.Force, entryKey(p.entry)
				if o.dep { // named by the state now: no longer only a dependency
					o.dep = false
				}
				r.owned[p.name] = o
			}
			add(item("module", p.name, "keep", nil, false))
			continue
		}
		if dry {
			if p.action == "load" && p.target.Name != "" {
				steps, err := d.probeDeps(p.target)
				for _, st := range steps {
					if !wanted[st.Name] { // a state's module has its own item
						add(item("module", st.Name, "load", nil, false))
					}
				}
				if err != nil {
					add(item("module", p.name, "load", err, false))
					continue
				}
			}
			add(item("module", p.name, p.action, nil, false))
			continue
		}
		var err error
		if p.action == "load" {
			var deps []string
			deps, err = r.load(ctx, p)
			for _, dep := range deps {
				add(item("module", dep, "load", nil, false))
			}
		} else {
			err = r.replace(ctx, p)
		}
		if err == nil {
			r.owned[p.name] = ownedModule{force: p.entry.Force, entry: entryKey(p.entry)}
		}
		add(item("module", p.name, p.action, err, busy(err)))
	}

	// 4. The state's mounts, parents first.
	mounts := slices.Clone(s.Mounts)
	slices.SortStableFunc(mounts, func(a, b desired.Mount) int { return depth(a.Target) - depth(b.Target) })
	for _, want := range mounts {
		action, err := r.mountAction(want)
		if err != nil || action == "keep" || dry {
			if action == "keep" && !dry {
				if _, ok := r.mounts[want.Target]; ok {
					r.mounts[want.Target] = want
				}
			}
			add(item("mount", want.Target, action, err, false))
			continue
		}
		if action == "remount" {
			if err := r.umount(ctx, want.Target); err != nil {
				add(item("mount", want.Target, action, err, busy(err)))
				continue
			}
			delete(r.mounts, want.Target)
		}
		err = r.mount(ctx, want)
		if err == nil {
			r.mounts[want.Target] = want
		}
		add(item("mount", want.Target, action, err, busy(err)))
	}

	// 5. The HTTP middleware chain.
	if it, ok := r.middleware(s, dry); ok {
		add(it)
	}

	rep.Converged = true
	for _, it := range rep.Items {
		if it.Err != "" || dry && it.Action != "keep" {
			rep.Converged = false
		}
	}
	if rep.Items == nil {
		rep.Items = []desired.Item{}
	}
	return rep
}

// cmp returns the first of its arguments that is not empty.
func cmp(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// needed returns the modules the plans' modules depend on, directly or
// not: their Info.Depends and, for a file of the module directory, what
// modules.dep lists, followed through the built-in and loaded modules'
// own dependencies.
func (r *reconciler) needed(plans []plan) map[string]bool {
	out := map[string]bool{}
	var visit func(name string, depth int)
	visit = func(name string, depth int) {
		if out[name] || depth > 32 {
			return
		}
		out[name] = true
		var deps []string
		if m, ok := r.d.host.Module(name); ok {
			deps = append(deps, m.Info().Depends...)
		} else if src, ok := r.d.resolver.Builtin(name); ok {
			deps = append(deps, src.Info().Depends...)
		}
		for _, dep := range deps {
			visit(dep, depth+1)
		}
	}
	for _, p := range plans {
		for _, dep := range p.info.Depends {
			visit(dep, 0)
		}
		for _, path := range p.target.Deps {
			visit(modindex.NameOf(path), 0)
		}
	}
	return out
}

// busy reports whether err leaves an item to retry: references held past
// the wait, holders, a module or mount in use, a wait cut short.
func busy(err error) bool {
	return err != nil && (errors.Is(err, raceless.ErrBusy) || errors.Is(err, raceless.ErrNotLive) ||
		errors.Is(err, context.DeadlineExceeded))
}

// depth is the number of components of a clean absolute path.
func depth(p string) int { return strings.Count(strings.TrimSuffix(p, "/"), "/") }

// planModules resolves each module entry of s: its module's name and
// source (opened, as a load would open it), the digest and version
// checks, and what to do with it. The plans come out in load order: a
// module the state names before the state's modules that depend on it.
func (r *reconciler) planModules(s *desired.State) []plan {
	d := r.d
	plans := make([]plan, 0, len(s.Modules))
	byName := map[string]string{} // module name → the entry (At) that named it
	for _, e := range s.Modules {
		p := plan{entry: e, action: "load"}
		plans = append(plans, p)
		pp := &plans[len(plans)-1]
		pp.err = r.resolve(pp)
		if pp.err != nil {
			if _, ok := d.host.Module(pp.name); ok && pp.name != "" {
				pp.action = "replace" // what a good source would have been
			}
			continue
		}
		if prev, ok := byName[pp.name]; ok {
			pp.err = fmt.Errorf("module %s is also named at %s: %w", pp.name, prev, desired.ErrInvalid)
			continue
		}
		byName[pp.name] = cmp(e.At, e.Name, e.File)
		m, ok := d.host.Module(pp.name)
		switch {
		case !ok:
			pp.action = "load"
		case m.State() != raceless.StateLive:
			pp.action = "replace"
			pp.err, pp.retry = &raceless.BusyError{Op: "replace", Module: pp.name, Reason: "not live (" + m.State().String() + ")"}, true
		case m.Key() != pp.src.Key() || !maps.Equal(m.Params(), pp.params):
			pp.action = "replace"
		default:
			pp.action = "keep"
		}
	}
	// Dependency order among the state's modules (a stable topological
	// sort: file order where the dependencies say nothing).
	index := map[string]int{}
	for i, p := range plans {
		if p.err == nil {
			index[p.name] = i
		}
	}
	out := make([]plan, 0, len(plans))
	state := make([]int, len(plans)) // 0 new, 1 visiting, 2 done
	var visit func(i int)
	visit = func(i int) {
		if state[i] != 0 {
			return // done, or a cycle (the load reports it)
		}
		state[i] = 1
		for _, dep := range plans[i].info.Depends {
			if j, ok := index[dep]; ok {
				visit(j)
			}
		}
		state[i] = 2
		out = append(out, plans[i])
	}
	for i := range plans {
		visit(i)
	}
	return out
}

// resolve finds p's module: by name or alias through the resolver (as
// modprobe does), or by file; opens its source; checks the digest against
// the bytes opened, the version against the module's modinfo, and the
// parameters against its parameter list.
func (r *reconciler) resolve(p *plan) error {
	d := r.d
	e := p.entry
	var err error
	if e.Name != "" {
		if p.target, err = d.resolver.Lookup(e.Name); err != nil {
			return err
		}
		if p.src, err = d.resolver.Source(p.target); err != nil {
			return err
		}
	} else {
		if d.cfg.Open == nil {
			return control.Unsupportedf("%s: loadable (wasm) modules are not built in this version", e.File)
		}
		if p.src, err = d.cfg.Open(e.File); err != nil {
			return err
		}
	}
	p.info = p.src.Info()
	p.name = p.info.Name
	if e.Digest != "" {
		sum, ok := fileSum(p.src.Key())
		if !ok {
			return fmt.Errorf("module %s is built in: it has no file to match digest %s: %w", p.name, e.Digest, desired.ErrInvalid)
		}
		if "sha256:"+sum != e.Digest {
			return fmt.Errorf("module %s: digest mismatch: the file is sha256:%s, the state wants %s: %w", p.name, sum, e.Digest, ErrDigest)
		}
	}
	if e.Version != "" && p.info.Version != e.Version {
		return fmt.Errorf("module %s: version %q wanted, its source is version %q: %w", p.name, e.Version, p.info.Version, raceless.ErrInvalid)
	}
	p.params, err = raceless.ResolveParams(p.info, e.Params)
	return err
}

// ErrDigest is an item's error when a module file's bytes are not the
// digest its entry names: the module is not loaded.
var ErrDigest = errors.New("module file digest mismatch")

// fileSum returns the sha256 of a loadable module's key,
// "file:PATH@SUM" (the bytes the loader read).
func fileSum(key string) (string, bool) {
	if !strings.HasPrefix(key, "file:") {
		return "", false
	}
	i := strings.LastIndexByte(key, '@')
	if i < 0 {
		return "", false
	}
	return key[i+1:], true
}

// load loads p through modprobe's path: what the index says it needs
// first (probeDeps), then the module, with its parameters. It returns the
// dependencies it loaded, which become the state's.
func (r *reconciler) load(ctx context.Context, p plan) ([]string, error) {
	d := r.d
	var loaded []string
	if p.target.Name != "" {
		steps, err := d.probeDeps(p.target)
		if err != nil {
			return nil, err
		}
		for _, st := range steps {
			src, err := d.resolver.Source(st)
			if err != nil {
				return loaded, err
			}
			if _, err := d.load(ctx, src, nil); err != nil {
				if errors.Is(err, raceless.ErrExists) {
					continue // loaded meanwhile: not the state's
				}
				return loaded, err
			}
			r.owned[st.Name] = ownedModule{dep: true}
			loaded = append(loaded, st.Name)
		}
	}
	_, err := d.load(ctx, p.src, p.entry.Params)
	return loaded, err
}

// replace hot-swaps the live module for p's source and parameters
// (Host.Replace, as `raceless replace` does), waiting up to
// Config.ReconcileWait for the old instance's references.
func (r *reconciler) replace(ctx context.Context, p plan) error {
	d := r.d
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ReconcileWait)
	defer cancel()
	_, err := d.host.Replace(ctx, p.name, p.src, p.entry.Params, raceless.ReplaceOptions{Force: p.entry.Force})
	if err != nil {
		d.metrics.failed(p.name, "replace")
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("replace %s: the old instance's references were still held after %s: %w", p.name, d.cfg.ReconcileWait, raceless.ErrBusy)
		}
	}
	return err
}

// unload unloads name waiting up to Config.ReconcileWait for its
// references (with force: forcing, as rmmod -f).
func (r *reconciler) unload(ctx context.Context, name string, force bool) error {
	d := r.d
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ReconcileWait)
	defer cancel()
	m, _ := d.host.Module(name)
	err := d.unload(ctx, name, raceless.UnloadOptions{Wait: !force, Force: force})
	if err != nil && errors.Is(err, context.DeadlineExceeded) && m != nil {
		return fmt.Errorf("unload %s: %d references still held after %s: %w", name, m.Refs(), d.cfg.ReconcileWait, raceless.ErrBusy)
	}
	return err
}

// unloadOrder returns the modules the state put there that it no longer
// wants, dependents first.
func (r *reconciler) unloadOrder(wanted map[string]bool) []string {
	left := map[string]bool{}
	for name := range r.owned {
		if !wanted[name] {
			left[name] = true
		}
	}
	var out []string
	for len(left) > 0 {
		var next []string
		for name := range left {
			held := false
			if m, ok := r.d.host.Module(name); ok {
				for _, h := range m.Holders() {
					held = held || left[h]
				}
			}
			if !held {
				next = append(next, name)
			}
		}
		if len(next) == 0 { // a cycle: cannot happen in a host, but do not spin
			for name := range left {
				next = append(next, name)
			}
		}
		slices.Sort(next)
		for _, name := range next {
			delete(left, name)
		}
		out = append(out, next...)
	}
	return out
}

// mountAction says what want needs: "keep" when the topmost mount at its
// target is of its type and source with its options, "mount" when
// nothing is mounted there, "remount" when a mount the state made there
// differs. A different mount the state did not make is an error: it is
// the operator's.
func (r *reconciler) mountAction(want desired.Mount) (string, error) {
	var top *MountEntry
	for _, m := range mountEntries(r.d.ns.ns.Mounts()) {
		if string(m.Target) == want.Target {
			top = &m
		}
	}
	if top == nil {
		return "mount", nil
	}
	have := strings.Split(string(top.Options), ",")
	same := string(top.FSType) == want.Type && string(top.Source) == want.Source
	for _, o := range strings.Split(want.Options, ",") {
		same = same && (o == "" || slices.Contains(have, o))
	}
	switch _, ours := r.mounts[want.Target]; {
	case same:
		return "keep", nil
	case ours:
		return "remount", nil
	}
	return "mount", fmt.Errorf("%s is mounted (%s from %s), not by the desired state: unmount it first: %w", want.Target, top.FSType, top.Source, raceless.ErrBusy)
}

// mount mounts want with the namespace's mount op (as `raceless mount`).
func (r *reconciler) mount(ctx context.Context, want desired.Mount) error {
	opts := want.Options
	if want.Mkdir {
		opts = strings.TrimPrefix(opts+",X-mount.mkdir", ",")
	}
	_, err := r.d.ns.handle(ctx, &control.Request{Op: "mount", Source: want.Source, Target: want.Target, Type: want.Type, Options: opts})
	return err
}

// umount unmounts target with the namespace's umount op (not lazily: a
// busy mount is left and retried).
func (r *reconciler) umount(ctx context.Context, target string) error {
	_, err := r.d.ns.handle(ctx, &control.Request{Op: "umount", Target: target})
	return err
}

// middleware sets the router's middleware chain to the state's (or back
// to Config.HTTPMiddleware when the state stopped setting it).
func (r *reconciler) middleware(s *desired.State, dry bool) (desired.Item, bool) {
	want, set := s.HTTP.Middleware, s.HTTP.Middleware != nil
	if !set {
		if !r.mwSet {
			return desired.Item{}, false
		}
		want = r.d.cfg.HTTPMiddleware
	}
	it := desired.Item{Kind: "http", Name: "middleware", Action: "set"}
	if r.d.router == nil {
		if len(want) == 0 {
			return desired.Item{}, false
		}
		it.Err = fmt.Sprintf("middleware %s: the daemon serves no HTTP (--http off): %v", strings.Join(want, ","), raceless.ErrNotFound)
		return it, true
	}
	if slices.Equal(r.d.router.Middleware(), want) {
		it.Action = "keep"
	} else if !dry {
		r.d.router.SetMiddleware(want)
	}
	if !dry {
		r.mwSet = set
	}
	return it, true
}

// opApply is "apply" (reconcile) and "diff" (what apply would do): the
// desired state at req.Path (a file or directory the daemon reads), or
// without a path the daemon's Config.Config read again. A state that does
// not parse is refused whole (code invalid), changing nothing.
func (d *Daemon) opApply(ctx context.Context, req *control.Request) (any, error) {
	path := req.Path
	if path == "" {
		if d.cfg.Config == "" {
			return nil, &control.Error{Code: control.CodeUsage, Message: req.Op + ": the daemon runs without --config: give the desired state FILE"}
		}
		path = d.cfg.Config
	}
	s, err := desired.Load(path)
	if err != nil {
		if req.Op == "apply" {
			d.log.Error("desired state refused; nothing changed", "path", path, "err", err)
		}
		return nil, err
	}
	if req.Op == "diff" {
		return d.Diff(s), nil
	}
	return d.Reconcile(ctx, s), nil
}
