package torture

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/vfs"
)

// worker issues random operations. It holds up to maxHeld Bindings across
// operations (so that unloads meet real references) and releases them all
// before any operation that may wait for references: a worker never waits
// while holding, so waits end unless the host loses a wake-up.
type worker struct {
	r      *runner
	id     int
	rng    *rand.Rand
	held   []*raceless.Binding
	files  []*vfs.File
	wheld  []wasmHeld
	caller *raceless.Caller // the worker's per-goroutine way in: wasm-handle-call, hooks
	stack  []uint64         // the stack of its wasm calls (the callee may overwrite it)

	opName  atomic.Pointer[string] // operation in progress, for the watchdog
	opSince atomic.Int64           // its start, unix nanoseconds

	// Merged into the runner's maps when the worker ends.
	opCounts map[string]int64
	outcomes map[string]int64
}

const maxHeld = 3

// op kinds and their weights.
type opEntry struct {
	name   string
	weight int
	fn     func(w *worker, ctx context.Context)
}

var opTable = []opEntry{
	{"call", 34, (*worker).opCall},
	{"instance-acquire", 4, (*worker).opInstanceAcquire},
	{"hooks", 14, (*worker).opHooks},
	{"lookup", 5, (*worker).opLookup},
	{"lsmod", 4, (*worker).opLsmod},
	{"load", 12, (*worker).opLoad},
	{"unload", 9, (*worker).opUnload},
	{"unload-wait", 3, (*worker).opUnloadWait},
	{"unload-force", 1, (*worker).opUnloadForce},
	{"request", 7, (*worker).opRequest},
	{"autoclean", 1, (*worker).opAutoclean},
	{"replace", 2, (*worker).opReplace},
}

// httpOpTable is added to opTable unless Options.NoHTTP.
var httpOpTable = []opEntry{
	{"http", 6, (*worker).opHTTP},
}

// fsOpTable is added to opTable unless Options.NoFS.
var fsOpTable = []opEntry{
	{"mount", 4, (*worker).opMount},
	{"umount", 3, (*worker).opUmount},
	{"umount-lazy", 2, (*worker).opUmountLazy},
	{"move", 1, (*worker).opMove},
	{"bind", 1, (*worker).opBind},
	{"open", 6, (*worker).opOpen},
	{"stat", 2, (*worker).opStat},
}

func totalWeight(ops []opEntry) int {
	n := 0
	for _, o := range ops {
		n += o.weight
	}
	return n
}

func (w *worker) current() (string, time.Time) {
	p := w.opName.Load()
	if p == nil {
		return "", time.Time{}
	}
	return *p, time.Unix(0, w.opSince.Load())
}

func (w *worker) run(ctx context.Context) {
	w.caller = w.r.host.NewCaller()
	defer func() {
		w.releaseAll()
		w.caller.Close()
		w.r.mu.Lock()
		for k, v := range w.opCounts {
			w.r.opCounts[k] += v
		}
		for k, v := range w.outcomes {
			w.r.outcomes[k] += v
		}
		w.r.mu.Unlock()
	}()
	limit := w.r.opts.Ops
	ops := w.r.opMix
	total := totalWeight(ops)
	for ctx.Err() == nil && !w.r.stopping() {
		if limit > 0 && w.r.ops.Load() >= limit {
			return
		}
		pick := w.rng.IntN(total)
		for _, o := range ops {
			if pick < o.weight {
				w.do(ctx, o.name, o.fn)
				break
			}
			pick -= o.weight
		}
		if len(w.held) > 0 && w.rng.IntN(3) == 0 {
			w.release(w.rng.IntN(len(w.held)))
		}
		if len(w.files) > 0 && w.rng.IntN(4) == 0 {
			i := w.rng.IntN(len(w.files))
			f := w.files[i]
			w.files = append(w.files[:i], w.files[i+1:]...)
			w.closeFile(f)
		}
	}
}

func (w *worker) do(ctx context.Context, name string, fn func(*worker, context.Context)) {
	w.opSince.Store(time.Now().UnixNano())
	w.opName.Store(&name)
	defer func() {
		w.opName.Store(nil)
		if p := recover(); p != nil {
			w.r.violate("panic", "worker %d, %s: %v", w.id, name, p)
		}
	}()
	fn(w, ctx)
	w.opCounts[name]++
	w.r.ops.Add(1)
}

func (w *worker) outcome(op string, err error) {
	w.outcomes[op+"/"+errClass(err)]++
}

// hung records a hang when err came from the watchdog deadline of ctx.
func (w *worker) hung(ctx context.Context, what string, err error) {
	if err != nil && context.Cause(ctx) == errHang {
		w.r.violate("hang", "worker %d: %s: %v; modules now: %s", w.id, what, err, w.r.describe())
	}
}

func errClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, raceless.ErrInit): // before the causes it wraps
		return "initfail"
	case errors.Is(err, raceless.ErrBusy):
		return "busy"
	case errors.Is(err, raceless.ErrNotFound):
		return "notfound"
	case errors.Is(err, raceless.ErrNotLive):
		return "notlive"
	case errors.Is(err, raceless.ErrGone):
		return "gone"
	case errors.Is(err, raceless.ErrExists):
		return "exists"
	case errors.Is(err, raceless.ErrCycle):
		return "cycle"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	}
	return "other"
}

func (w *worker) spec() *modSpec { return w.r.specs[w.rng.IntN(len(w.r.specs))] }

// withCancel returns ctx, cancelled at a random point in the next 500µs
// with probability p percent: the injected cancellations.
func (w *worker) withCancel(ctx context.Context, p int) (context.Context, func()) {
	if w.rng.IntN(100) >= p {
		return ctx, func() {}
	}
	cctx, cancel := context.WithCancel(ctx)
	t := time.AfterFunc(time.Duration(w.rng.IntN(500))*time.Microsecond, cancel)
	return cctx, func() { t.Stop(); cancel() }
}

// checkVisible reports a registration seen from an instance that never
// went live.
func (w *worker) checkVisible(sv *symVal, how string) {
	switch ph := sv.m.phase.Load(); ph {
	case phNew, phIniting, phInitFailed:
		w.r.violate("visible-never-live", "%s: %s found %s in phase %s", sv.m, how, sv.name, phaseNames[ph])
	}
}

func (w *worker) take(b *raceless.Binding, how string) *symVal {
	sv, ok := b.Value().(*symVal)
	if !ok {
		w.r.violate("api", "%s returned a value of type %T", how, b.Value())
		b.Release()
		return nil
	}
	sv.m.held.Add(1)
	if b.Owner() != sv.m.inst.Load() {
		w.r.violate("api", "%s: binding owner %p is not the exporting instance of %s", how, b.Owner(), sv.m)
	}
	w.checkVisible(sv, how)
	return sv
}

func (w *worker) drop(b *raceless.Binding) {
	b.Value().(*symVal).m.held.Add(-1)
	b.Release()
}

func (w *worker) release(i int) {
	b := w.held[i]
	w.held[i] = w.held[len(w.held)-1]
	w.held[len(w.held)-1] = nil
	w.held = w.held[:len(w.held)-1]
	// A held binding may be called again before release: after a forced
	// unload that is the legitimate stale call.
	if w.rng.IntN(2) == 0 {
		b.Value().(*symVal).call()
	}
	w.drop(b)
}

// releaseAll drops every Binding and closes every file the worker holds.
func (w *worker) releaseAll() {
	for len(w.held) > 0 {
		w.release(len(w.held) - 1)
	}
	w.closeFiles()
	w.releaseWasm()
}

func (w *worker) opCall(ctx context.Context) {
	s := w.spec()
	name := s.symA()
	if w.rng.IntN(2) == 0 {
		name = s.symB()
	}
	b, err := w.r.host.Acquire(raceless.KindSymbol, name)
	w.outcome("call", err)
	if err != nil {
		return
	}
	sv := w.take(&b, "Host.Acquire")
	if sv == nil {
		return
	}
	sv.call()
	if len(w.held) < maxHeld && w.rng.IntN(4) == 0 {
		w.held = append(w.held, &b)
		return
	}
	w.drop(&b)
}

func (w *worker) opInstanceAcquire(ctx context.Context) {
	s := w.spec()
	inst, ok := w.r.host.Module(s.name)
	if !ok {
		w.outcome("instance-acquire", raceless.ErrNotFound)
		return
	}
	// The lookup of one instance's registration: Host.Acquire, then the
	// owner compared. A gone instance's symbol must never be found.
	wasGone := inst.State() == raceless.StateGone
	b, err := w.r.host.Acquire(raceless.KindSymbol, s.symA())
	if err == nil && b.Owner() != inst {
		b.Release()
		err = raceless.ErrNotFound // another instance of the name
	}
	w.outcome("instance-acquire", err)
	if err != nil {
		return
	}
	if wasGone {
		w.r.violate("api", "Host.Acquire found a symbol of gone %s", s.name)
	}
	if sv := w.take(&b, "Host.Acquire (of an instance)"); sv != nil {
		sv.call()
		w.drop(&b)
	}
}

func (w *worker) opHooks(ctx context.Context) {
	ev := "ev"
	if w.rng.IntN(2) == 0 {
		ev = "ev." + w.spec().name
	}
	var err error
	if w.rng.IntN(2) == 0 {
		err = w.caller.CallHooks(ctx, ev, nil)
	} else {
		err = w.r.host.CallHooks(ctx, ev, nil)
	}
	w.outcome("hooks", err)
}

func (w *worker) opLookup(ctx context.Context) {
	seq0 := w.r.clock.Add(1)
	regs := append(w.r.host.Lookup(raceless.KindSymbol), w.r.host.Lookup(raceless.KindRoute)...)
	w.outcome("lookup", nil)
	for _, reg := range regs {
		sv, ok := reg.Value.(*symVal)
		if !ok {
			continue // a wasm module's symbol
		}
		w.checkVisible(sv, "Lookup")
		if eb := sv.m.exitBegin.Load(); eb != 0 && eb < seq0 {
			w.r.violate("stale-registration", "%s: Lookup found %s %s, Exit began before the lookup (phase %s)",
				sv.m, reg.Kind, reg.Name, phaseNames[sv.m.phase.Load()])
		}
		if reg.Owner != sv.m.spec.name {
			w.r.violate("api", "Lookup: %s owned by %q, exported by %s", reg.Name, reg.Owner, sv.m)
		}
	}
}

func (w *worker) opLsmod(ctx context.Context) {
	for _, inst := range w.r.host.Modules() {
		_ = inst.Size()
		if n := inst.Refs(); n < 0 {
			w.r.violate("ref-underflow", "%s: Refs() = %d", inst.Name(), n)
		}
		_ = inst.Holders()
		_ = inst.Deps()
		_ = inst.Taints()
		_ = inst.Params()
	}
	w.outcome("lsmod", nil)
}

func (w *worker) opLoad(ctx context.Context) {
	w.releaseAll()
	s := w.spec()
	octx, cancel := w.r.opContext(ctx)
	defer cancel()
	cctx, stop := w.withCancel(octx, 20)
	defer stop()
	var params map[string]string
	if w.rng.IntN(4) == 0 {
		params = map[string]string{"mode": fmt.Sprint(w.rng.IntN(10))}
	}
	inst, err := w.r.host.Load(cctx, s.src, params)
	w.outcome("load", err)
	w.hung(octx, "load "+s.name, err)
	if err == nil {
		if inst.Name() != s.name {
			w.r.violate("api", "Load(%s) returned %s", s.name, inst.Name())
		}
		if st := inst.State(); st == raceless.StateComing {
			w.r.violate("api", "Load(%s) returned a coming instance", s.name)
		}
	}
}

// unload runs one Unload of a random module. patience, when positive,
// bounds a waiting unload (its expiry is an outcome, not a hang).
func (w *worker) unload(ctx context.Context, s *modSpec, op string, opts raceless.UnloadOptions, cancelP int, patience func(*tmod) time.Duration) {
	before, _ := w.r.host.Module(s.name)
	tm := w.r.tmodOf(before)
	octx, cancel := w.r.opContext(ctx)
	defer cancel()
	pctx := octx
	if patience != nil {
		if d := patience(tm); d > 0 {
			var pcancel context.CancelFunc
			pctx, pcancel = context.WithTimeout(octx, d)
			defer pcancel()
		}
	}
	cctx, stop := w.withCancel(pctx, cancelP)
	defer stop()
	err := w.r.host.Unload(cctx, s.name, opts)
	switch {
	case err != nil && context.Cause(octx) == errHang && tm != nil && tm.sbAlive.Load() > 0:
		// Mounts hold references for as long as nobody unmounts: a
		// wait for them is not a lost wake-up.
		w.outcomes[op+"/deadline-mounted"]++
	case err != nil && pctx != octx && pctx.Err() != nil && octx.Err() == nil:
		w.outcomes[op+"/patience"]++
	default:
		w.outcome(op, err)
		w.hung(octx, op+" "+s.name, err)
	}
	// The unloaded instance is the name's current one, which need not be
	// before (a hot swap may have moved the name to a new instance, or
	// an undone one back to the old): only a live before is impossible.
	if err == nil && before != nil && before.State() == raceless.StateLive {
		w.r.violate("api", "%s %s returned nil, instance %p is still live", op, s.name, before)
	}
}

func (w *worker) opUnload(ctx context.Context) {
	w.unload(ctx, w.spec(), "unload", raceless.UnloadOptions{}, 5, nil)
}

// opUnloadWait waits for references to drain. With the VFS, references
// of mounts last until someone unmounts, and a mount that looked up its
// type just before the unload began may attach while it waits: the wait
// is bounded at 2ms (its expiry is the "patience" outcome). Without the
// VFS every reference is a Binding or file a worker drops within a few
// operations, so the wait runs under the watchdog: a lost wake-up is a
// "hang".
func (w *worker) opUnloadWait(ctx context.Context) {
	w.releaseAll()
	var patience func(*tmod) time.Duration
	if w.r.ns != nil {
		patience = func(*tmod) time.Duration { return 2 * time.Millisecond }
	}
	w.unload(ctx, w.spec(), "unload-wait", raceless.UnloadOptions{Wait: true, ProgressInterval: time.Millisecond,
		Progress: func(p raceless.Progress) {
			if p.Refs < 0 {
				w.r.violate("ref-underflow", "unload progress of %s: %d refs", p.Module, p.Refs)
			}
		}}, 50, patience)
}

func (w *worker) opUnloadForce(ctx context.Context) {
	s := w.spec()
	if w.r.web != nil {
		w.abortRequests(ctx, s.name)
	}
	w.unload(ctx, s, "unload-force", raceless.UnloadOptions{Force: true}, 0, nil)
}

func (w *worker) opRequest(ctx context.Context) {
	w.releaseAll()
	s := w.spec()
	name := s.name
	if w.rng.IntN(2) == 0 {
		name = "alias-" + s.name
	}
	octx, cancel := w.r.opContext(ctx)
	defer cancel()
	cctx, stop := w.withCancel(octx, 20)
	defer stop()
	inst, err := w.r.host.Request(cctx, name)
	w.outcome("request", err)
	w.hung(octx, "request "+name, err)
	if err == nil && inst.Name() != s.name {
		w.r.violate("api", "Request(%s) returned %s", name, inst.Name())
	}
}

func (w *worker) opAutoclean(ctx context.Context) {
	w.releaseAll()
	octx, cancel := w.r.opContext(ctx)
	defer cancel()
	_, err := w.r.host.Autoclean(octx)
	w.outcome("autoclean", err)
	w.hung(octx, "autoclean", err)
}

// opReplace hot-swaps a module for a fresh instance of itself
// (Host.Replace). The old instance's references must drain first, which
// mounts may prevent: with the VFS the wait is bounded at 2ms (the swap is
// then undone), without it the watchdog applies.
func (w *worker) opReplace(ctx context.Context) {
	w.releaseAll()
	s := w.spec()
	before, _ := w.r.host.Module(s.name)
	octx, cancel := w.r.opContext(ctx)
	defer cancel()
	pctx := octx
	if w.r.ns != nil {
		var pcancel context.CancelFunc
		pctx, pcancel = context.WithTimeout(octx, 2*time.Millisecond)
		defer pcancel()
	}
	cctx, stop := w.withCancel(pctx, 10)
	defer stop()
	inst, err := w.r.host.Replace(cctx, s.name, s.src, nil, raceless.ReplaceOptions{})
	if err != nil && pctx != octx && pctx.Err() != nil && octx.Err() == nil {
		w.outcomes["replace/patience"]++
	} else {
		w.outcome("replace", err)
		w.hung(octx, "replace "+s.name, err)
	}
	if err == nil {
		if inst == before || inst.Name() != s.name {
			w.r.violate("api", "Replace(%s) returned %v, the instance it replaced was %v", s.name, inst, before)
		}
		// before is what Module returned before the call; another
		// worker's swap may have made it something else than the
		// instance this Replace took over (an undone swap's new
		// instance, still going while its references drain). What must
		// hold: it is not live beside the new instance.
		if before != nil && before != inst && before.State() == raceless.StateLive {
			w.r.violate("api", "Replace(%s) returned, the old instance is %s", s.name, before.State())
		}
	}
}
