package torture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/goleak"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/vfs"
)

// Options configure a run. The zero value runs for DefaultDuration.
type Options struct {
	// Duration bounds the run's wall time. 0 means DefaultDuration, unless
	// Ops is set, in which case the run lasts until Ops operations.
	Duration time.Duration
	// Ops stops the run after this many operations (0: no limit).
	Ops int64
	// Seed makes the operation streams reproducible; 0 picks one from the
	// clock (the Report carries it).
	Seed int64
	// Workers is the number of goroutines issuing operations (default
	// 2*GOMAXPROCS, at least 4).
	Workers int
	// Modules is the number of test modules (default 6).
	Modules int
	// OpTimeout is the watchdog deadline of every wait: an operation that
	// reaches it is a "hang" violation (default 10s).
	OpTimeout time.Duration
	// NoHookPanics turns off the hooks' random panics.
	NoHookPanics bool
	// NoFS leaves out the VFS operations (mount, umount, move, bind, open,
	// read, stat, close).
	NoFS bool
	// NoReplace leaves hot swaps (Host.Replace) out of the mix.
	NoReplace bool
	// NoHTTP leaves out the HTTP requests to the modules' routes (and
	// the Router's Abort before a forced unload).
	NoHTTP bool
	// Wasm lists loadable modules to load, unload and call too.
	Wasm []WasmModule
	// Logger receives the host's log (default: discarded).
	Logger *slog.Logger
}

// DefaultDuration is the length of a run when neither Duration nor Ops is set.
const DefaultDuration = 10 * time.Second

// maxDetails bounds the violation messages kept in a Report.
const maxDetails = 50

// maxDetailsPerKind bounds the messages kept for one kind, so that a
// flood of one kind does not hide the others.
const maxDetailsPerKind = 5

// errHang is the cause of a watchdog deadline.
var errHang = errors.New("watchdog deadline: waiter never woken")

// Report is the result of a run.
type Report struct {
	Ops        int64            `json:"ops"`
	Violations int64            `json:"violations"`
	ByKind     map[string]int64 `json:"by_kind"`
	Seed       int64            `json:"seed"`
	Seconds    float64          `json:"seconds"`
	OpsPerSec  float64          `json:"ops_per_sec"`
	Workers    int              `json:"workers"`
	Modules    int              `json:"modules"`
	// OpCounts counts operations by kind; Outcomes counts their results
	// ("unload/busy", "call/ok", ...).
	OpCounts map[string]int64 `json:"op_counts"`
	Outcomes map[string]int64 `json:"outcomes"`
	// Events counts what the test modules did (init-fail, exit-refuse-busy,
	// forced-stale-call, ...).
	Events map[string]int64 `json:"events"`
	// Instances is the number of module instances created.
	Instances int64 `json:"instances"`
	// Checked is the number of instances checked and let go during the
	// run, each as soon as it was gone and nothing referred to it any
	// more; the others (RetainedEnd) are checked at the end.
	Checked int64 `json:"checked"`
	// RetainedPeak is the most instances the run held at once for their
	// checks, RetainedEnd those it held when the workers stopped: both
	// stay small however long the run (TestTortureMemoryFlat).
	RetainedPeak int64 `json:"retained_peak"`
	RetainedEnd  int64 `json:"retained_end"`
	// HeapStart and HeapEnd are the live heap in bytes (HeapAlloc right
	// after a runtime.GC) before the workers start and once they have
	// stopped, before the final checks; HeapPeak is the largest of these
	// and of samples taken every heapSampleEvery during the run.
	HeapStart uint64 `json:"heap_start"`
	HeapEnd   uint64 `json:"heap_end"`
	HeapPeak  uint64 `json:"heap_peak"`
	// MountsEnd is the number of mounts in the namespace (the rootfs
	// included) when the workers stopped, MountsPeak the largest of it
	// and of the heap samples' counts: about maxMounts at most.
	MountsEnd  int `json:"mounts_end,omitempty"`
	MountsPeak int `json:"mounts_peak,omitempty"`
	// HostTaints is the number of host taints (forced unloads) at the end.
	HostTaints int `json:"host_taints"`
	// Details are the first violation messages, each with the seed.
	Details []string `json:"details,omitempty"`
}

// OK reports whether the run found no violation.
func (r Report) OK() bool { return r.Violations == 0 }

// runner is the state of one run.
type runner struct {
	opts       Options
	seed       int64
	host       *raceless.Host
	ns         *vfs.Namespace // nil with Options.NoFS
	web        *httpSide      // nil with Options.NoHTTP
	opMix      []opEntry      // the operation mix
	specs      []*modSpec
	hookPanics bool
	stop       chan struct{} // closed when the workers must stop
	clock      atomic.Uint64 // logical clock for "before" checks
	ops        atomic.Int64

	created atomic.Int64 // test module instances made
	checked atomic.Int64 // instances checked and let go during the run

	// reapMu serialises reap and the final checks.
	reapMu sync.Mutex

	mu       sync.Mutex // guards everything below
	byKind   map[string]int64
	details  []string
	opCounts map[string]int64
	outcomes map[string]int64
	events   map[string]int64
	// tracked holds the instances not checked yet: alive, or gone with
	// references left (a forced unload's stale Bindings, mounts). reap
	// checks the gone ones and drops them; the rest wait for the final
	// checks. retainedPeak is its largest length; reap runs when it
	// reaches nextReap.
	tracked      []*tmod
	retainedPeak int
	retainedEnd  int
	nextReap     int
	ended        bool // the final checks have begun: no more reaps
	workers      []*worker
	heapStart    uint64
	heapEnd      uint64
	heapPeak     uint64
	mountsEnd    int
	mountsPeak   int

	byInst sync.Map // *raceless.Instance -> *tmod, for the tracked ones

	// handles has a Handle per wasm symbol of Options.Wasm, shared by the
	// workers (wasm-handle-call); written before they start.
	handles map[string]*raceless.Handle
}

// describe lists every current instance with its state, references,
// holders and what the torture knows of it: the context of a hang.
func (r *runner) describe() string {
	var b strings.Builder
	for _, inst := range r.host.Modules() {
		fmt.Fprintf(&b, "[%s %s refs=%d holders=%v deps=%v", inst.Name(), inst.State(), inst.Refs(), inst.Holders(), inst.Deps())
		if m := r.tmodOf(inst); m != nil {
			fmt.Fprintf(&b, " %s phase=%s held=%d superblocks=%d handles=%d inflight=%d",
				m, phaseNames[m.phase.Load()], m.held.Load(), m.sbAlive.Load(), m.handles.Load(), m.inflight.Load())
		}
		b.WriteString("] ")
	}
	return b.String()
}

// tmodOf returns the test module behind inst, nil if unknown.
func (r *runner) tmodOf(inst *raceless.Instance) *tmod {
	if inst == nil {
		return nil
	}
	if m, ok := r.byInst.Load(inst); ok {
		return m.(*tmod)
	}
	return nil
}

// Run runs the torture test and reports what it found. It returns an
// error only when the run could not take place or did not end (a stuck
// worker); violations are in the Report. It is safe to call Run from
// several goroutines: each run has its own Host.
func Run(ctx context.Context, opts Options) (Report, error) {
	if opts.Duration <= 0 && opts.Ops <= 0 {
		opts.Duration = DefaultDuration
	}
	if opts.Workers <= 0 {
		opts.Workers = max(4, 2*runtime.GOMAXPROCS(0))
	}
	if opts.Modules <= 0 {
		opts.Modules = 6
	}
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = 10 * time.Second
	}
	if opts.Seed == 0 {
		opts.Seed = time.Now().UnixNano()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	leakOpt := goleak.IgnoreCurrent()
	r := &runner{
		opts:       opts,
		seed:       opts.Seed,
		hookPanics: !opts.NoHookPanics,
		stop:       make(chan struct{}),
		byKind:     map[string]int64{},
		opCounts:   map[string]int64{},
		outcomes:   map[string]int64{},
		events:     map[string]int64{},
		nextReap:   minReap,
	}
	for i := 0; i < opts.Modules; i++ {
		r.specs = append(r.specs, r.newSpec(i))
	}
	r.host = raceless.New(raceless.WithLogger(opts.Logger), raceless.WithResolver(resolver{r}))
	r.opMix = opTable
	if opts.NoReplace {
		r.opMix = nil
		for _, o := range opTable {
			if o.name != "replace" {
				r.opMix = append(r.opMix, o)
			}
		}
	}
	if !opts.NoFS {
		if err := r.setupFS(); err != nil {
			return Report{Seed: r.seed}, err
		}
		r.opMix = append(append([]opEntry(nil), r.opMix...), fsOpTable...)
	}
	if !opts.NoHTTP {
		if err := r.setupHTTP(); err != nil {
			return Report{Seed: r.seed}, err
		}
		r.opMix = append(append([]opEntry(nil), r.opMix...), httpOpTable...)
	}
	if len(opts.Wasm) > 0 {
		r.opMix = append(append([]opEntry(nil), r.opMix...), wasmOpTable...)
		r.handles = map[string]*raceless.Handle{}
		for _, m := range opts.Wasm {
			for _, c := range m.Calls {
				r.handles[c.Symbol] = r.host.Handle(c.Symbol)
			}
		}
	}

	runCtx := ctx
	var cancelRun context.CancelFunc = func() {}
	if opts.Duration > 0 {
		runCtx, cancelRun = context.WithTimeout(ctx, opts.Duration)
	}
	defer cancelRun()

	var wg sync.WaitGroup
	for i := 0; i < opts.Workers; i++ {
		w := &worker{r: r, id: i, rng: rand.New(rand.NewPCG(uint64(opts.Seed), uint64(i))),
			opCounts: map[string]int64{}, outcomes: map[string]int64{}}
		r.workers = append(r.workers, w)
	}
	r.heapStart = liveHeap()
	r.heapPeak = r.heapStart
	start := time.Now()
	for _, w := range r.workers {
		wg.Go(func() { w.run(runCtx) })
	}
	// Stop the workers when the run is over; watch for stuck ones.
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()
	stuck := r.watch(runCtx, workersDone)
	elapsed := time.Since(start)
	if stuck {
		return r.report(elapsed), fmt.Errorf("torture: workers stuck (seed %d)", r.seed)
	}
	h, mounts := liveHeap(), r.mounts()
	r.mu.Lock()
	r.heapEnd, r.heapPeak = h, max(r.heapPeak, h)
	r.mountsEnd, r.mountsPeak = mounts, max(r.mountsPeak, mounts)
	r.retainedEnd = len(r.tracked)
	r.mu.Unlock()
	r.finalChecks(ctx)
	if err := goleak.Find(leakOpt, goleak.IgnoreCurrent()); err != nil {
		r.violate("goroutine-leak", "%v", err)
	}
	return r.report(elapsed), nil
}

// watch waits for the end of the run, then for the workers, reporting a
// worker stuck in one operation for more than twice the watchdog deadline.
// A stuck worker ends the run early. It reports whether the workers
// never came back.
func (r *runner) watch(runCtx context.Context, workersDone <-chan struct{}) bool {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	stopped := false
	var stopAt time.Time
	reported := map[int]bool{}
	lastSample := time.Now()
	for {
		var runDone <-chan struct{}
		if !stopped {
			runDone = runCtx.Done()
		}
		select {
		case <-workersDone:
			if !stopped {
				close(r.stop)
			}
			return false
		case <-runDone:
			stopped, stopAt = true, time.Now()
			close(r.stop)
		case now := <-tick.C:
			if !stopped && now.Sub(lastSample) >= heapSampleEvery {
				lastSample = now
				h, mounts := liveHeap(), r.mounts()
				r.mu.Lock()
				r.heapPeak = max(r.heapPeak, h)
				r.mountsPeak = max(r.mountsPeak, mounts)
				r.mu.Unlock()
			}
			for _, w := range r.workers {
				what, since := w.current()
				if what != "" && now.Sub(since) > 2*r.opts.OpTimeout && !reported[w.id] {
					reported[w.id] = true
					r.violate("stuck", "worker %d stuck in %s for %v", w.id, what, now.Sub(since).Round(time.Millisecond))
					if !stopped { // give up on the run: stop the others now
						stopped, stopAt = true, now
						close(r.stop)
					}
				}
			}
			if stopped && time.Since(stopAt) > 2*r.opts.OpTimeout {
				buf := make([]byte, 32<<10) // the first goroutines are enough to see the wait
				n := runtime.Stack(buf, true)
				r.violate("stuck", "workers did not stop; goroutines (truncated):\n%s", buf[:n])
				return true
			}
		}
	}
}

// finalChecks runs after every worker has released everything.
func (r *runner) finalChecks(ctx context.Context) {
	h := r.host
	// The instances not retired during the run; they get the checks every
	// instance got at the end before instances were let go as they went.
	left := r.endBatch()
	if r.ns != nil {
		r.teardownFS(left)
	}
	if r.web != nil {
		r.teardownHTTP()
	}
	for _, inst := range h.Modules() {
		if inst.State() != raceless.StateLive {
			r.violate("api", "%s is %s after every operation returned", inst.Name(), inst.State())
			continue
		}
		if n, deps := inst.Refs(), int64(len(inst.Holders())); n != deps {
			r.violate("refs-at-end", "%s: %d references, %d holders, nothing else held", inst.Name(), n, deps)
		}
	}
	if n := h.Underflows(); n != 0 {
		r.violate("ref-underflow", "%d puts without a get", n)
	}
	sctx, cancel := context.WithTimeoutCause(ctx, r.opts.OpTimeout, errHang)
	forced, err := h.Shutdown(sctx)
	cancel()
	if len(forced) > 0 {
		r.violate("refs-at-end", "shutdown had to force %v", forced)
	}
	if err != nil {
		r.violate("hang", "shutdown: %v", err)
	}
	if mods := h.Modules(); len(mods) > 0 {
		r.violate("api", "%d modules left after Shutdown", len(mods))
	}
	if n := h.Underflows(); n != 0 {
		r.violate("ref-underflow", "%d puts without a get after shutdown", n)
	}
	for _, m := range left {
		r.checkInstance(m)
	}
}

// stopping reports whether the run is over for the workers.
func (r *runner) stopping() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// minReap is the least length of the tracked list at which reap runs.
const minReap = 64

// heapSampleEvery is how often the run samples its live heap.
const heapSampleEvery = 5 * time.Second

// track adds a new instance to those to check. When the list has doubled
// since the last reap (and has at least minReap entries) it reaps it: the
// list stays within twice the instances that could not be checked at the
// last reap (alive, or pinned by stale references), or minReap, plus one
// per goroutine making an instance, whatever the length of the run.
func (r *runner) track(m *tmod) {
	r.created.Add(1)
	r.mu.Lock()
	r.tracked = append(r.tracked, m)
	n := len(r.tracked)
	r.retainedPeak = max(r.retainedPeak, n)
	due := n >= r.nextReap
	r.mu.Unlock()
	if due {
		r.reap()
	}
}

// reap checks every tracked instance that is done with (retire) and drops
// it. It waits for a reap already running, so that the list never grows
// past nextReap plus one instance per goroutine making one, and does
// nothing if that reap made the list short enough, or once the final
// checks have begun.
func (r *runner) reap() {
	r.reapMu.Lock()
	defer r.reapMu.Unlock()
	r.mu.Lock()
	if r.ended || len(r.tracked) < r.nextReap {
		r.mu.Unlock()
		return
	}
	batch := r.tracked
	r.tracked = nil // instances made meanwhile go to a new list
	r.mu.Unlock()
	keep := batch[:0]
	for _, m := range batch {
		if !r.retire(m) {
			keep = append(keep, m)
		}
	}
	clear(batch[len(keep):]) // let the retired go
	r.mu.Lock()
	r.tracked = append(keep, r.tracked...)
	r.nextReap = max(minReap, 2*len(r.tracked))
	r.mu.Unlock()
}

// retire checks m and lets it go if it is done with: its instance is gone
// and nothing holds a reference on it. A dead reference's count is exact,
// and nothing can take one any more: every Binding, superblock and open
// file of m was released (each drops its counts in the torture before
// it drops the reference), and m's Init, Exit and Stop have all run. m
// then gets exactly the checks of the end of the run (checkInstance).
// Instances that are not done with stay tracked: a reference that is
// never put keeps its instance until the final checks, which report it.
func (r *runner) retire(m *tmod) bool {
	inst := m.inst.Load()
	if inst == nil {
		return false // Init has not run yet
	}
	select {
	case <-inst.Gone():
	default:
		return false
	}
	if inst.Refs() != 0 {
		return false
	}
	r.checkFSCounts(m)
	r.checkInstance(m)
	r.byInst.Delete(inst)
	r.checked.Add(1)
	return true
}

// endBatch takes every instance still tracked, for the final checks, and
// keeps reap from running again.
func (r *runner) endBatch() []*tmod {
	r.mu.Lock()
	r.ended = true
	r.mu.Unlock()
	r.reapMu.Lock() // wait for a reap in progress
	defer r.reapMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tmod(nil), r.tracked...)
}

// checkInstance runs the checks of one instance that is gone and whose
// references are all put: at the end of the run after Shutdown, or during
// it when reap retires the instance.
func (r *runner) checkInstance(m *tmod) {
	m.noteForced() // a forced unload whose Exit refused taints after Exit
	inits, calls, oks := m.inits.Load(), m.exitCalls.Load(), m.exitOKs.Load()
	inst := m.inst.Load()
	switch {
	case inits > 1:
		r.violate("exit-count", "%s: Init ran %d times", m, inits)
	case inst == nil:
		// Instantiated, never initialised (a dependency failed).
	case m.phase.Load() == phInitFailed || m.phase.Load() == phIniting:
		if calls != 0 {
			r.violate("exit-count", "%s: Exit called %d times after a failed Init", m, calls)
		}
	case calls == 0:
		r.violate("exit-count", "%s: went live, never exited (state %s)", m, inst.State())
	case oks == 0 && !m.forced.Load():
		r.violate("exit-count", "%s: %s without a successful Exit (%d calls, taints %q)", m, inst.State(), calls, inst.Taints())
	}
	if inst != nil {
		if inst.State() != raceless.StateGone {
			r.violate("api", "%s: %s after Shutdown", m, inst.State())
		}
		if n := inst.Refs(); n != 0 {
			r.violate("refs-at-end", "%s: %d references after Shutdown", m, n)
		}
	}
	if n := m.held.Load(); n != 0 {
		r.violate("refs-at-end", "%s: torture still counts %d bindings", m, n)
	}
}

// checkFSCounts checks that none of m's superblocks or handles is alive:
// in teardownFS, once nothing is mounted or open, for the instances left at
// the end; in retire, once m's references are all put (a superblock holds
// one until after its Release, a handle keeps its superblock).
func (r *runner) checkFSCounts(m *tmod) {
	if n := m.sbAlive.Load(); n != 0 {
		r.violate("refs-at-end", "%s: %d superblocks alive with nothing mounted or open", m, n)
	}
	if n := m.handles.Load(); n != 0 {
		r.violate("refs-at-end", "%s: %d handles open with every file closed", m, n)
	}
}

// mounts returns the number of mounts of the namespace, 0 without one.
func (r *runner) mounts() int {
	if r.ns == nil {
		return 0
	}
	return len(r.ns.Mounts())
}

// liveHeap returns the live heap in bytes: HeapAlloc after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// violate records a violation.
func (r *runner) violate(kind, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.violateLocked(kind, format, args...)
}

func (r *runner) violateLocked(kind, format string, args ...any) {
	r.byKind[kind]++
	if len(r.details) < maxDetails && r.byKind[kind] <= maxDetailsPerKind {
		r.details = append(r.details, fmt.Sprintf("[%s] seed %d: %s", kind, r.seed, fmt.Sprintf(format, args...)))
	}
}

func (r *runner) event(name string) {
	r.mu.Lock()
	r.events[name]++
	r.mu.Unlock()
}

// opContext returns the watchdog context of one operation: it expires
// with cause errHang after OpTimeout.
func (r *runner) opContext(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(parent, r.opts.OpTimeout, errHang)
}

func (r *runner) report(elapsed time.Duration) Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := Report{
		Ops:          r.ops.Load(),
		ByKind:       copyMap(r.byKind),
		Seed:         r.seed,
		Seconds:      elapsed.Seconds(),
		Workers:      r.opts.Workers,
		Modules:      r.opts.Modules,
		OpCounts:     copyMap(r.opCounts),
		Outcomes:     copyMap(r.outcomes),
		Events:       copyMap(r.events),
		Instances:    r.created.Load(),
		Checked:      r.checked.Load(),
		RetainedPeak: int64(r.retainedPeak),
		RetainedEnd:  int64(r.retainedEnd),
		HeapStart:    r.heapStart,
		HeapEnd:      r.heapEnd,
		HeapPeak:     r.heapPeak,
		MountsEnd:    r.mountsEnd,
		MountsPeak:   r.mountsPeak,
		HostTaints:   countTaints(r.host.Taints()),
		Details:      append([]string(nil), r.details...),
	}
	for _, n := range r.byKind {
		rep.Violations += n
	}
	if elapsed > 0 {
		rep.OpsPerSec = float64(rep.Ops) / elapsed.Seconds()
	}
	return rep
}

func copyMap(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// countTaints is how many taints a Taints list stands for: the kept
// reasons, plus the count its last line gives for those not kept.
func countTaints(list []string) int {
	n := len(list)
	if n == 0 {
		return 0
	}
	var more int
	if _, err := fmt.Sscanf(list[n-1], raceless.TaintsMoreFormat, &more); err == nil {
		return n - 1 + more
	}
	return n
}
