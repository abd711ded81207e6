package torture

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/vfs"
)

// Phases of a test module instance (tmod.phase).
const (
	phNew        int32 = iota // constructed, Init not called
	phIniting                 // Init running: nothing of it may be visible
	phInitFailed              // Init failed or panicked: nothing of it may ever be visible
	phLive                    // Init succeeded (publication follows)
	phExiting                 // Exit running
	phExited                  // Exit succeeded: state poisoned
)

var phaseNames = [...]string{"new", "initing", "init-failed", "live", "exiting", "exited"}

// modSpec is one test module (a name the runner loads again and again).
type modSpec struct {
	idx    int
	name   string
	src    raceless.Source
	serial atomic.Uint64
}

func (s *modSpec) symA() string { return "sym." + s.name + ".a" }
func (s *modSpec) symB() string { return "sym." + s.name + ".b" }

// tmod is one instance of a test module. It checks, on every entry into
// its code, that it may run.
type tmod struct {
	r      *runner
	spec   *modSpec
	serial uint64
	rng    *rand.Rand // used only by Init and Exit, which the host serialises

	inst   atomic.Pointer[raceless.Instance]
	phase  atomic.Int32
	forced atomic.Bool // a forced unload of this instance began (set before Stop/Exit)

	stopped  atomic.Bool
	inflight atomic.Int64 // symbol calls inside module code
	held     atomic.Int64 // Bindings held by torture workers
	// exitBegin is the runner clock when the current Exit began, 0 when
	// no Exit runs or the last one refused.
	exitBegin atomic.Uint64
	inits     atomic.Int32
	exitCalls atomic.Int32
	exitOKs   atomic.Int32
	work      atomic.Int64 // the module's "state"
	sbAlive   atomic.Int64 // superblocks not yet released (each pins the module)
	handles   atomic.Int64 // open file handles
}

// symVal is the value of a symbol a test module exports.
type symVal struct {
	m    *tmod
	name string
}

func (r *runner) newSpec(i int) *modSpec {
	s := &modSpec{idx: i, name: fmt.Sprintf("t%d", i)}
	info := raceless.Info{
		Name:        s.name,
		Version:     "1.0",
		License:     "MIT",
		Description: "torture test module",
		Aliases:     []string{"alias-" + s.name},
		Params:      []raceless.ParamSpec{{Name: "mode", Type: raceless.ParamString, Default: "random"}},
	}
	s.src = raceless.Native(info, func() raceless.Module {
		serial := s.serial.Add(1)
		m := &tmod{r: r, spec: s, serial: serial,
			rng: rand.New(rand.NewPCG(uint64(r.seed), uint64(s.idx)<<40|serial))}
		r.track(m)
		return m
	})
	return s
}

func (m *tmod) String() string { return fmt.Sprintf("%s#%d", m.spec.name, m.serial) }

// Init registers its symbols, hooks and a route one step at a time, and
// fails, panics or blocks at a random step.
func (m *tmod) Init(k *raceless.Kernel) error {
	if m.inits.Add(1) != 1 {
		m.r.violate("exit-count", "%s: Init called twice", m)
	}
	m.inst.Store(k.Instance())
	m.r.byInst.Store(k.Instance(), m)
	m.phase.Store(phIniting)
	ok := false
	defer func() {
		if ok {
			m.phase.Store(phLive)
		} else {
			m.phase.Store(phInitFailed)
		}
	}()
	steps := []func() error{
		func() error { return k.Export(m.spec.symA(), &symVal{m: m, name: m.spec.symA()}) },
		func() error {
			return k.Hook("ev", func(ctx context.Context, arg any) error { return m.hook() })
		},
		func() error { return k.Export(m.spec.symB(), &symVal{m: m, name: m.spec.symB()}) },
		func() error {
			return k.Register(raceless.KindRoute, "/"+m.spec.name, &symVal{m: m, name: "/" + m.spec.name})
		},
		func() error {
			return k.Hook("ev."+m.spec.name, func(ctx context.Context, arg any) error { return m.hook() })
		},
		func() error {
			return k.Register(raceless.KindFilesystem, fstype(m.spec), vfs.FileSystemType(tfsType{m}))
		},
	}
	failAt, panicAt := -1, -1
	switch p := m.rng.IntN(100); {
	case p < 12:
		failAt = m.rng.IntN(len(steps) + 1)
		m.r.event("init-fail")
	case p < 16:
		panicAt = m.rng.IntN(len(steps) + 1)
		m.r.event("init-panic")
	case p < 20:
		m.r.event("init-block")
		if err := m.r.block(m.rng); err != nil {
			return err
		}
	case p < 30 && m.spec.idx > 0:
		// Depend on the module below: an import that may demand-load it.
		m.r.event("init-import")
		ctx, cancel := m.r.opContext(context.Background())
		v, err := k.Import(ctx, m.r.specs[m.spec.idx-1].symA())
		hung := context.Cause(ctx) == errHang
		cancel()
		if err != nil {
			if hung {
				m.r.violate("hang", "%s: Init's Import of %s: %v", m, m.r.specs[m.spec.idx-1].symA(), err)
			}
			return err
		}
		// We are now among the exporter's holders, so no unload of it
		// can begin: it must be live, and stay live until we are gone.
		if sv, ok := v.(*symVal); ok {
			if inst := sv.m.inst.Load(); inst != nil && inst.State() != raceless.StateLive {
				m.r.violate("dep-on-going", "%s: imported %s from %s, which is %s: a dependency on a module already unloading",
					m, sv.name, sv.m, inst.State())
			}
		}
	}
	for i, step := range steps {
		if i == failAt {
			return fmt.Errorf("%s: refusing at step %d", m, i)
		}
		if i == panicAt {
			panic(fmt.Sprintf("%s: panic at step %d", m, i))
		}
		if err := step(); err != nil {
			if errors.Is(err, raceless.ErrExists) {
				m.r.violate("reservation-leak", "%s: step %d: %v", m, i, err)
			}
			return err
		}
	}
	if failAt == len(steps) {
		return fmt.Errorf("%s: refusing after every registration", m)
	}
	if panicAt == len(steps) {
		panic(fmt.Sprintf("%s: panic after every registration", m))
	}
	ok = true
	return nil
}

// Start is the four-point start: after Init and after a refused Exit.
func (m *tmod) Start() { m.stopped.Store(false) }

// Stop runs before Exit, once nothing can reach the module.
func (m *tmod) Stop() {
	m.noteForced()
	if !m.forced.Load() && m.held.Load() > 0 {
		m.r.violate("exit-with-ref", "%s: Stop with %d bindings held", m, m.held.Load())
	}
	if !m.forced.Load() && m.sbAlive.Load() > 0 {
		m.r.violate("exit-with-ref", "%s: Stop with %d superblocks alive", m, m.sbAlive.Load())
	}
	m.stopped.Store(true)
}

// noteForced sets forced when the instance carries TaintForcedUnload (a
// forced unload) or TaintWarn, which the host sets on a test module only
// when it frees an instance whose Exit refused (documented): the new
// instance of an undone hot swap, a replacement refused for its exports,
// a failed Start's. It reads the flags, not the reasons: an instance keeps
// only its first 32 reasons, which the hooks' panics can fill first.
func (m *tmod) noteForced() {
	if inst := m.inst.Load(); inst != nil {
		f := inst.TaintFlags()
		if strings.ContainsRune(f, rune(raceless.TaintForcedUnload)) || strings.ContainsRune(f, rune(raceless.TaintWarn)) {
			m.forced.Store(true)
		}
	}
}

// Exit succeeds, refuses (a busy count or an error), blocks for a while
// or panics, at random. A successful Exit poisons the instance.
func (m *tmod) Exit() (int, error) {
	m.exitCalls.Add(1)
	m.noteForced()
	forced := m.forced.Load()
	if ph := m.phase.Load(); ph != phLive {
		m.r.violate("exit-count", "%s: Exit in phase %s", m, phaseNames[ph])
	}
	m.exitBegin.Store(m.r.clock.Add(1))
	m.phase.Store(phExiting)
	// Dekker pairing with enter: enter increments inflight then reads
	// phase; Exit stores phase then reads inflight.
	if !forced {
		if n := m.inflight.Load(); n > 0 {
			m.r.violate("exit-with-ref", "%s: Exit while %d calls are inside", m, n)
		}
		if n := m.held.Load(); n > 0 {
			m.r.violate("exit-with-ref", "%s: Exit while %d bindings are held", m, n)
		}
		if n := m.sbAlive.Load(); n > 0 {
			m.r.violate("exit-with-ref", "%s: Exit while %d superblocks are alive", m, n)
		}
	}
	refuse := func() {
		m.exitBegin.Store(0)
		m.phase.Store(phLive)
	}
	switch p := m.rng.IntN(100); {
	case p < 12:
		m.r.event("exit-refuse-busy")
		refuse()
		return 1 + m.rng.IntN(3), nil
	case p < 20:
		m.r.event("exit-refuse-error")
		refuse()
		return 0, fmt.Errorf("%s: not now", m)
	case p < 25:
		m.r.event("exit-block")
		_ = m.r.block(m.rng)
		if m.rng.IntN(2) == 0 {
			refuse()
			return 1, nil
		}
	case p < 28:
		m.r.event("exit-panic")
		m.poison()
		panic(fmt.Sprintf("%s: panic in Exit", m))
	}
	m.poison()
	return 0, nil
}

func (m *tmod) poison() {
	if m.exitOKs.Add(1) != 1 {
		m.r.violate("exit-count", "%s: Exit succeeded twice", m)
	}
	m.work.Store(-1 << 40)
	m.phase.Store(phExited)
}

// Size is called by Instance.Size (lsmod) without a reference.
func (m *tmod) Size() int64 {
	switch ph := m.phase.Load(); ph {
	case phExiting, phExited:
		if !m.forced.Load() {
			m.r.violate("unprotected-call", "%s: Size called in phase %s", m, phaseNames[ph])
		}
	case phIniting, phInitFailed, phNew:
		m.r.violate("unprotected-call", "%s: Size called in phase %s", m, phaseNames[ph])
	}
	return 4096
}

// call is the body of a symbol call.
func (s *symVal) call() {
	m := s.m
	m.inflight.Add(1)
	defer m.inflight.Add(-1)
	s.check("call")
}

// check is what module code entered through s (counted in inflight by
// the caller) checks: that its instance may run. what, "call" or "route"
// (ServeHTTP), names the violation kinds and the event.
func (s *symVal) check(what string) {
	m := s.m
	switch ph := m.phase.Load(); ph {
	case phLive:
		if m.stopped.Load() && !m.forced.Load() {
			m.r.violate(what+"-while-stopped", "%s: %s of %s between Stop and Exit", m, what, s.name)
		}
	case phExiting, phExited:
		if m.forced.Load() {
			m.r.event("forced-stale-" + what)
		} else {
			m.r.violate(what+"-after-exit", "%s: %s of %s in phase %s", m, what, s.name, phaseNames[ph])
		}
	default:
		m.r.violate("visible-never-live", "%s: %s of %s in phase %s", m, what, s.name, phaseNames[ph])
	}
	if m.work.Add(1) < 0 && !m.forced.Load() {
		m.r.violate(what+"-after-exit", "%s: %s of %s found poisoned state", m, what, s.name)
	}
}

// hook is the body of every hook of the module. It panics now and then.
func (m *tmod) hook() error {
	switch ph := m.phase.Load(); ph {
	case phLive:
	case phExiting, phExited:
		m.r.violate("hook-after-exit", "%s: hook in phase %s (forced=%v)", m, phaseNames[ph], m.forced.Load())
	default:
		m.r.violate("visible-never-live", "%s: hook in phase %s", m, phaseNames[ph])
	}
	if m.r.hookPanics && m.work.Add(1)%257 == 0 {
		m.r.event("hook-panic")
		panic(fmt.Sprintf("%s: panic in hook", m))
	}
	return nil
}

// block waits a random while (up to 300µs) or until the run stops: module
// code that takes its time, as a slow Init or Exit does.
func (r *runner) block(rng *rand.Rand) error {
	t := time.NewTimer(time.Duration(rng.IntN(300)) * time.Microsecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-r.stop:
		return errors.New("torture run stopping")
	}
}

// resolver resolves "tN", "alias-tN", "symbol:sym.tN.a|b" and "fs-tfs-tN".
type resolver struct{ r *runner }

func (rs resolver) Resolve(ctx context.Context, name string) (raceless.Source, error) {
	n := strings.TrimPrefix(strings.TrimPrefix(name, "symbol:"), "fs-tfs-")
	if strings.HasPrefix(n, "sym.") {
		n = strings.TrimPrefix(n, "sym.")
		n, _, _ = strings.Cut(n, ".")
	}
	n = strings.TrimPrefix(n, "alias-")
	for _, s := range rs.r.specs {
		if s.name == n {
			return s.src, nil
		}
	}
	return nil, fmt.Errorf("torture resolver: %s: %w", name, raceless.ErrNotFound)
}
