// Package httpwasm runs WebAssembly guests written for the http-wasm HTTP
// handler ABI (http-wasm.io, "HTTP handler ABI") as raceless route
// modules: Runtime.Source makes a raceless.Source whose module, on Init,
// starts a pool of instances of the guest (one member at first, more on
// demand up to the pool's size) and registers its route patterns (package
// web) with a handler that runs each request in one member of the pool.
// raceless's lifecycle exports, when the guest has them, run on every
// member (raceless_init and raceless_start as it starts, raceless_stop
// and raceless_exit as the pool closes it).
//
// The host side of the ABI is implemented here from the public
// specification; docs/http.md lists the functions and features covered.
//
// Invariants:
//
//   - One member runs one request at a time: a request takes a member out
//     of the pool and puts it back when the guest has returned. Members
//     are independent instances: each has its own memory and globals (its
//     own state), like proxy-wasm's per-worker VMs.
//   - The pool belongs to one module instance: its first member is
//     started in Init (a guest that fails to instantiate fails Init,
//     naming the module), the others in the background when a request
//     finds every member busy (one at a time, never more than the pool's
//     size: Options.PoolSize or the module parameter pool), and it is
//     closed in Exit (which waits for a member being started). The core
//     runs Exit only after every request has dropped its reference, so no
//     member is closed while it runs a request; a member still out at Exit
//     (a forced unload) is closed when it comes back.
//   - The response is buffered: nothing reaches the client until the
//     guest has returned. So a guest that traps, runs past its deadline
//     (Options.Timeout; wazero closes the instance when the request's
//     context ends), or writes an invalid status or header fails its
//     request cleanly: 504 at the deadline, else 500, with a generic body;
//     the module is named in the log and tainted; a member that trapped
//     or timed out is closed (a fresh one is started in the background
//     at once), one that broke the ABI is kept. The other members
//     keep serving.
//   - Memory: every member has the runtime's memory limit
//     (Config.MemoryLimitPages); a guest that grows past it sees
//     memory.grow fail (a Go guest then dies, failing its request as a
//     trap). On Linux a member's linear memory is mapped outside the Go
//     heap and unmapped once the member is closed and runs nothing
//     (mmap_linux.go).
//   - A guest that returns next=1 passes the request to its next handler
//     (the router's chain for a module registered as middleware,
//     Options.Middleware; else Options.Next, 404 when none), whose
//     response it may then inspect and change in handle_response, told
//     by is_error whether next failed (it panicked or answered a 5xx).
package httpwasm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm"
	"github.com/raceless/raceless/web"
)

// Errors a guest's request can fail with (logged, never shown to the
// client, which gets a generic body).
var (
	// ErrGuest is a guest that broke the ABI: an invalid status code,
	// header name or value, or memory access out of range.
	ErrGuest = errors.New("http-wasm guest broke the ABI")
	// ErrNotHandler is a binary that does not export what the ABI needs
	// (memory, handle_request, handle_response).
	ErrNotHandler = errors.New("not an http-wasm handler guest")
)

// Feature bits of enable_features.
const (
	FeatureBufferRequest  = 1 << 0
	FeatureBufferResponse = 1 << 1
	FeatureTrailers       = 1 << 2
	// supported are the features this host grants: it buffers both
	// bodies anyway; trailers are not supported.
	supported = FeatureBufferRequest | FeatureBufferResponse
)

// Config configures a Runtime.
type Config struct {
	// MemoryLimitPages is every member's memory limit in 64 KiB pages
	// (0: 1024, 64 MiB).
	MemoryLimitPages uint32
	Logger           *slog.Logger
}

// Runtime compiles and instantiates http-wasm guests: one wazero runtime
// with the "http_handler" host module (and WASI, for Go guests).
type Runtime struct {
	rt   wazero.Runtime
	log  *slog.Logger
	mods sync.Map // *module → struct{}: the live pools, for Pools

	cmu   sync.Mutex
	cache map[[32]byte]*compiled // by the guest's SHA-256
}

// PoolStat is one route module's pool as Runtime.Pools reports it.
type PoolStat struct {
	Module string
	// Size is the members started (or being started), Max the most the
	// pool grows to, Busy the members running a request.
	Size, Max, Busy int
	// Errors counts failed requests by kind: "trap" (a trap, a Go
	// guest's panic or death), "timeout" (its deadline), "abi" (an
	// invalid status, header or memory access).
	Errors map[string]uint64
}

// Pools reports the pool of every module instantiated and not exited.
func (r *Runtime) Pools() []PoolStat {
	var out []PoolStat
	r.mods.Range(func(k, _ any) bool {
		m := k.(*module)
		m.mu.Lock()
		size, busy := m.made, m.out
		m.mu.Unlock()
		out = append(out, PoolStat{Module: m.k.Name(), Size: size, Max: m.size, Busy: busy, Errors: map[string]uint64{
			"trap": m.errTrap.Load(), "timeout": m.errTimeout.Load(), "abi": m.errABI.Load()}})
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Module < out[j].Module })
	return out
}

// NewRuntime creates a Runtime. Close it when its modules are gone.
func NewRuntime(ctx context.Context, cfg Config) (*Runtime, error) {
	if cfg.MemoryLimitPages == 0 {
		cfg.MemoryLimitPages = 1024
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().
		WithCloseOnContextDone(true).WithMemoryLimitPages(cfg.MemoryLimitPages))
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		rt.Close(ctx)
		return nil, err
	}
	if err := instantiateHost(ctx, rt); err != nil {
		rt.Close(ctx)
		return nil, err
	}
	return &Runtime{rt: rt, log: cfg.Logger}, nil
}

// Close closes the runtime and every instance left in it.
func (r *Runtime) Close(ctx context.Context) error { return r.rt.Close(ctx) }

// Options describe one guest as a route module.
type Options struct {
	// Patterns are the route patterns (net/http ServeMux syntax) the
	// module serves; at least one.
	Patterns []string
	// PoolSize is the number of members (0: GOMAXPROCS).
	PoolSize int
	// Config is what get_config returns; nil: the module's parameters
	// as a JSON object of strings (nothing when it has none).
	Config []byte
	// Timeout bounds one request in the guest (0: 10s); past it the
	// request fails 504 and the member is replaced.
	Timeout time.Duration
	// Next is what a guest returning next=1 passes the request to (nil:
	// 404).
	Next http.Handler
	// Middleware registers the guest as middleware (web.KindMiddleware,
	// under the module's name) instead of routes: the router's chain
	// gives it the next handler. Patterns are then not used.
	Middleware bool
	// FreshInstance instantiates the guest for every request and closes
	// it after, instead of keeping a pool: the naive baseline of
	// `raceless bench http` (wazero_naive), not for serving.
	FreshInstance bool
}

// Source returns a raceless.Source for the guest bin, as a route module
// described by info. The binary is compiled once, here.
func (r *Runtime) Source(ctx context.Context, info raceless.Info, bin []byte, o Options) (raceless.Source, error) {
	if len(o.Patterns) == 0 && !o.Middleware {
		return nil, fmt.Errorf("%s: no route pattern: %w", info.Name, raceless.ErrInvalid)
	}
	for _, p := range o.Patterns {
		if err := web.CheckPattern(p); err != nil {
			return nil, fmt.Errorf("%s: %w", info.Name, err)
		}
	}
	sum := sha256.Sum256(bin)
	cm, err := r.acquire(ctx, sum, bin)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", info.Name, err)
	}
	fail := func(err error) (raceless.Source, error) {
		r.release(sum)
		return nil, err
	}
	exp := cm.ExportedFunctions()
	if _, ok := exp["handle_request"]; !ok {
		return fail(fmt.Errorf("%s: no handle_request export: %w", info.Name, ErrNotHandler))
	}
	if _, ok := exp["handle_response"]; !ok {
		return fail(fmt.Errorf("%s: no handle_response export: %w", info.Name, ErrNotHandler))
	}
	if len(cm.ExportedMemories()) == 0 {
		return fail(fmt.Errorf("%s: no exported memory: %w", info.Name, ErrNotHandler))
	}
	if o.PoolSize <= 0 {
		o.PoolSize = runtime.GOMAXPROCS(0)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	_, init := exp["_initialize"]
	var life lifecycle
	for _, e := range []struct {
		name    string
		results int
		has     *bool
	}{{"raceless_init", 1, &life.init}, {"raceless_start", 0, &life.start}, {"raceless_stop", 0, &life.stop}, {"raceless_exit", 1, &life.exit}} {
		d, ok := exp[e.name]
		if !ok {
			continue
		}
		if len(d.ParamTypes()) != 0 || len(d.ResultTypes()) != e.results || (e.results == 1 && d.ResultTypes()[0] != api.ValueTypeI32) {
			return fail(fmt.Errorf("%s: export %q has signature %v -> %v: %w", info.Name, e.name, d.ParamTypes(), d.ResultTypes(), wasm.ErrMissingExport))
		}
		*e.has = true
	}
	added := false
	if _, ok := poolParam(info); !ok {
		added = true
		// pool=N at load overrides Options.PoolSize (modinfo "pool").
		info.Params = append(append([]raceless.ParamSpec(nil), info.Params...), raceless.ParamSpec{
			Name: PoolParam, Type: raceless.ParamUint,
			Description: fmt.Sprintf("http-wasm: instances in the pool, 1 to %d (default: modinfo \"pool\", else GOMAXPROCS)", MaxPool)})
	} else if p, _ := poolParam(info); p.Type != raceless.ParamUint && p.Type != raceless.ParamInt {
		return fail(fmt.Errorf("%s: parameter %q is the pool size, of type uint, not %q: %w", info.Name, PoolParam, p.Type, raceless.ErrInvalid))
	}
	// The compiled code is held for the first instance and released with
	// the last one's exit; an instance created after that acquires it
	// again (acquireCompiled).
	return &source{r: r, info: info, bin: bin, sum: sum, o: o, init: init, life: life, added: added, cm: cm}, nil
}

// PoolParam is the module parameter that sets the pool size at load
// (insmod FILE pool=N), overriding Options.PoolSize (modinfo "pool");
// MaxPool is its largest value.
const (
	PoolParam = "pool"
	MaxPool   = 1024
)

func poolParam(info raceless.Info) (raceless.ParamSpec, bool) {
	for _, p := range info.Params {
		if p.Name == PoolParam {
			return p, true
		}
	}
	return raceless.ParamSpec{}, false
}

// lifecycle says which of raceless's lifecycle exports the guest has.
type lifecycle struct{ init, start, stop, exit bool }

// compiled is one guest's compiled code in Runtime.cache, shared by the
// sources and instances of the same bytes.
type compiled struct {
	cm   wazero.CompiledModule
	refs int
}

// acquire returns the compiled code of bin (whose SHA-256 is sum),
// compiling it unless a source or instance of the same bytes holds it:
// the replacement of a swap that brings the same bytes (the same file
// loaded again, the benchmark's swap row) costs no decoding, validation
// or compilation. release drops the reference; the last one frees it.
func (r *Runtime) acquire(ctx context.Context, sum [32]byte, bin []byte) (wazero.CompiledModule, error) {
	r.cmu.Lock()
	defer r.cmu.Unlock()
	if c := r.cache[sum]; c != nil {
		c.refs++
		return c.cm, nil
	}
	cm, err := r.rt.CompileModule(ctx, bin)
	if err != nil {
		return nil, err
	}
	if r.cache == nil {
		r.cache = map[[32]byte]*compiled{}
	}
	r.cache[sum] = &compiled{cm: cm, refs: 1}
	return cm, nil
}

func (r *Runtime) release(sum [32]byte) {
	r.cmu.Lock()
	defer r.cmu.Unlock()
	c := r.cache[sum]
	if c.refs--; c.refs == 0 {
		delete(r.cache, sum)
		c.cm.Close(context.Background())
	}
}

type source struct {
	r    *Runtime
	info raceless.Info
	bin  []byte
	sum  [32]byte // bin's SHA-256: its key in Runtime.cache
	o    Options

	mu    sync.Mutex
	cm    wazero.CompiledModule // nil while no instance of the source lives
	live  int                   // instances between Instantiate and Exit
	init  bool                  // the guest exports _initialize (a Go c-shared guest)
	life  lifecycle             // raceless's lifecycle exports, run on every member
	added bool                  // PoolParam was added to info.Params by Source
	key   string                // Open's: the file and its sum
}

func (s *source) Info() raceless.Info { return s.info }
func (s *source) Key() string {
	if s.key != "" {
		return s.key
	}
	return "http-wasm:" + s.info.Name + "@" + s.info.Version
}
func (s *source) Instantiate(ctx context.Context) (raceless.Module, error) {
	cm, err := s.acquireCompiled(ctx)
	if err != nil {
		return nil, err
	}
	return &module{src: s, cm: cm}, nil
}

// acquireCompiled returns the compiled guest, compiling it for the first
// instance; releaseCompiled frees it with the last.
func (s *source) acquireCompiled(ctx context.Context) (wazero.CompiledModule, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cm == nil {
		cm, err := s.r.acquire(ctx, s.sum, s.bin)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.info.Name, err)
		}
		s.cm = cm
	}
	s.live++
	return s.cm, nil
}

func (s *source) releaseCompiled() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live--; s.live == 0 && s.cm != nil {
		s.r.release(s.sum)
		s.cm = nil
	}
}

// module is one instance of a route module: its pool.
type module struct {
	src  *source
	cfg  []byte // what get_config returns
	cm   wazero.CompiledModule
	k    *raceless.Kernel
	log  *slog.Logger
	size int          // the most members
	pool chan *member // the free members (capacity size)

	mu      sync.Mutex
	closed  bool
	out     int           // members taken, not yet back
	made    int           // members alive or being made (≤ size)
	growing bool          // a member is being made (grow)
	grown   chan struct{} // closed when the member being made is ready or failed
	// growFailed: the last member made failed to start.
	growFailed bool
	growWG     sync.WaitGroup

	errTrap, errTimeout, errABI atomic.Uint64
}

type member struct {
	mod     api.Module
	mem     *linearMemory // its linear memory, freed with it (free)
	handle  api.Function
	respond api.Function
}

func (m *module) Init(k *raceless.Kernel) (err error) {
	m.k, m.log = k, k.Logger()
	m.cfg = m.src.o.Config
	params := k.Params()
	m.size = m.src.o.PoolSize
	if v, ok := params[PoolParam]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPool {
			return fmt.Errorf("%s: parameter %s=%s: the pool size is 1 to %d: %w", k.Name(), PoolParam, v, MaxPool, raceless.ErrInvalid)
		}
		m.size = n
		if m.src.added {
			params = maps.Clone(params)
			delete(params, PoolParam) // the host's, not the guest's configuration
		}
	}
	if m.cfg == nil && len(params) > 0 {
		// The module's parameters (declared in its modinfo block, given
		// at load: insmod FILE key=value), as a JSON object of strings.
		if m.cfg, err = json.Marshal(params); err != nil {
			return err
		}
	}
	m.pool = make(chan *member, m.size)
	defer func() {
		if err != nil {
			m.closeAll()
		}
	}()
	if !m.src.o.FreshInstance {
		// One warm member now (a guest that cannot start fails Init);
		// the others are made when requests find every member busy
		// (grow), off the request path.
		mb, err := m.newMember(context.Background())
		if err != nil {
			return fmt.Errorf("%s: instantiating a pool member: %w", k.Name(), err)
		}
		m.made = 1
		m.pool <- mb
	}
	if m.src.o.Middleware {
		if err := web.RegisterMiddleware(k, m); err != nil {
			return err
		}
	} else {
		for _, p := range m.src.o.Patterns {
			if err := web.Register(k, p, m); err != nil {
				return err
			}
		}
	}
	m.src.r.mods.Store(m, struct{}{})
	return nil
}

// Exit closes the pool. The core runs it once (after a failed Init too,
// where closeAll has run already: closing twice is harmless).
func (m *module) Exit() (int, error) {
	m.src.r.mods.Delete(m)
	m.closeAll()
	return 0, nil
}

// closeAll closes the pool: the members in it now, and the others as
// they come back (give); it waits for a member being made (grow), which
// then closes it. The compiled code is released with the first call,
// once.
func (m *module) closeAll() {
	m.mu.Lock()
	first := !m.closed
	m.closed = true
	m.mu.Unlock()
	m.growWG.Wait()
	for {
		select {
		case mb := <-m.pool:
			m.closeMember(mb)
		default:
			if first {
				m.src.releaseCompiled()
			}
			return
		}
	}
}

// newMember instantiates a member: the guest's _initialize, then its
// raceless_init (a non-zero result refuses: the member is closed and the
// error returned) and raceless_start, each bounded by Options.Timeout.
func (m *module) newMember(ctx context.Context) (*member, error) {
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions()
	var lm *linearMemory
	mod, err := m.src.r.rt.InstantiateModule(withMemory(ctx, &lm), m.cm, cfg)
	if err != nil {
		lm.release()
		return nil, err
	}
	fail := func(err error) (*member, error) {
		freeMember(mod, lm)
		return nil, err
	}
	if m.src.init {
		if _, err := m.lifeCall(mod, "_initialize"); err != nil {
			return fail(err)
		}
	}
	if m.src.life.init {
		code, err := m.lifeCall(mod, "raceless_init")
		if err == nil && code != 0 {
			err = fmt.Errorf("raceless_init: %w", &wasm.GuestError{Code: code})
		}
		if err != nil {
			return fail(err)
		}
	}
	if m.src.life.start {
		if _, err := m.lifeCall(mod, "raceless_start"); err != nil {
			return fail(err)
		}
	}
	return &member{mod: mod, mem: lm, handle: mod.ExportedFunction("handle_request"), respond: mod.ExportedFunction("handle_response")}, nil
}

// lifeCall calls the lifecycle export name of a member outside any
// request: of the ABI's host functions only log and log_enabled work
// (the module's log); the others see no request. It returns the i32
// result, if any.
func (m *module) lifeCall(mod api.Module, name string) (int32, error) {
	ctx, cancel := context.WithTimeout(context.Background(), m.src.o.Timeout)
	defer cancel()
	ctx = context.WithValue(ctx, callKey{}, &call{log: m.log, life: true})
	res, err := mod.ExportedFunction(name).Call(ctx)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	if len(res) == 1 {
		return int32(res[0]), nil
	}
	return 0, nil
}

// closeMember closes a member that did not fail: its raceless_stop and
// raceless_exit run first. A pool cannot stay live member by member, so
// a raceless_exit that refuses (a non-zero result) or traps is logged and
// the member closed all the same.
func (m *module) closeMember(mb *member) {
	if m.src.life.stop {
		if _, err := m.lifeCall(mb.mod, "raceless_stop"); err != nil {
			m.log.Error("http-wasm: pool member's raceless_stop failed", "module", m.k.Name(), "err", err)
		}
	}
	if m.src.life.exit && !mb.mod.IsClosed() {
		code, err := m.lifeCall(mb.mod, "raceless_exit")
		if err == nil && code != 0 {
			err = &wasm.GuestError{Code: code}
		}
		if err != nil {
			m.log.Warn("http-wasm: pool member's raceless_exit refused or failed: closed all the same (a pool cannot refuse member by member)", "module", m.k.Name(), "err", err)
		}
	}
	mb.free()
}

// freeMember closes mod and frees its linear memory (lm, from
// withMemory); no call may run in mod.
func freeMember(mod api.Module, lm *linearMemory) {
	mod.Close(context.Background())
	lm.release()
}

// free closes the member and frees its memory; no call may run in it.
func (mb *member) free() { freeMember(mb.mod, mb.mem) }

// take returns a member, waiting for one while all are busy; when every
// member is busy and the pool is not full, it has one more made (grow)
// and takes whichever is free first. A request still waiting when a
// member was made (and taken by another) has one more made, up to the
// pool's size; once a member it waited for failed to start, it stops
// asking for more and only waits.
func (m *module) take(ctx context.Context) (*member, error) {
	tried := false
	for {
		select {
		case mb := <-m.pool:
			m.mu.Lock()
			m.out++
			m.mu.Unlock()
			return mb, nil
		default:
		}
		var grown <-chan struct{} // nil (never ready) when the pool is full
		if !tried {
			grown = m.grow()
		}
		select {
		case mb := <-m.pool:
			m.mu.Lock()
			m.out++
			m.mu.Unlock()
			return mb, nil
		case <-grown:
			m.mu.Lock()
			tried = m.growFailed
			m.mu.Unlock()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// grow makes one more member in the background, unless the pool is full,
// closed, or already growing: one member at a time, so a burst of
// requests (or a swap's new pool) does not start every member at once on
// the cores that serve the requests. It returns a channel closed once the
// member being made (by this call or an earlier one) is in the pool or
// failed; nil when none is being made.
func (m *module) grow() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.growing {
		return m.grown
	}
	if m.closed || m.made >= m.size {
		return nil
	}
	m.growing = true
	m.made++
	grown := make(chan struct{})
	m.grown = grown
	m.growWG.Add(1)
	go func() {
		defer close(grown)
		defer m.growWG.Done()
		mb, err := m.newMember(context.Background())
		m.mu.Lock()
		m.growing = false
		m.growFailed = err != nil
		closed := m.closed
		if err != nil || closed {
			m.made--
		} else {
			m.pool <- mb // never blocks: made ≤ size = cap(pool)
		}
		m.mu.Unlock()
		switch {
		case err != nil:
			m.log.Error("http-wasm: cannot start a pool member: the pool is smaller", "module", m.k.Name(), "err", err)
			m.k.Taint(raceless.TaintWarn, "http-wasm pool member could not be started: "+err.Error())
		case closed:
			m.closeMember(mb)
		}
	}()
	return grown
}

// give puts mb back (nil: it died; another is made in the background to
// replace it).
func (m *module) give(mb *member) {
	m.mu.Lock()
	m.out--
	closed := m.closed
	if mb == nil {
		m.made--
	}
	m.mu.Unlock()
	if closed {
		// Back after Exit (a forced unload): its request was cut off, so
		// it is closed without its lifecycle exports, as a forced unload
		// skips a module's exit.
		if mb != nil {
			mb.free()
		}
		return
	}
	if mb == nil {
		m.grow()
		return
	}
	m.pool <- mb
}

// ServeHTTP runs one request in one member (a route; next=1 goes to
// Options.Next).
func (m *module) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.serve(w, r, m.src.o.Next) }

// ServeHTTPNext runs one request in one member as middleware: next=1
// goes to next (web.Middleware).
func (m *module) ServeHTTPNext(w http.ResponseWriter, r *http.Request, next http.Handler) {
	m.serve(w, r, next)
}

func (m *module) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	ctx, cancel := context.WithTimeout(r.Context(), m.src.o.Timeout)
	defer cancel()
	var mb *member
	var err error
	if m.src.o.FreshInstance {
		if mb, err = m.newMember(ctx); err == nil {
			defer mb.free()
		}
	} else {
		mb, err = m.take(ctx)
	}
	if err != nil {
		m.fail(w, r, err, ctx)
		return
	}
	c := &call{r: r, cfg: m.cfg, log: m.log, status: http.StatusOK, header: http.Header{}}
	cctx := context.WithValue(ctx, callKey{}, c)
	res, err := mb.handle.Call(cctx)
	var abort bool // next panicked with http.ErrAbortHandler
	if err == nil && c.err == nil {
		ctxNext := res[0]
		if uint32(ctxNext) != 0 { // next=1: the next handler, then handle_response
			var failed bool
			failed, abort = c.runNext(next)
			var isErr uint64
			if failed {
				isErr = 1
			}
			_, err = mb.respond.Call(cctx, ctxNext>>32, isErr)
		}
	}

	if err != nil || c.err != nil {
		if err == nil {
			err = c.err
		}
		if !errors.Is(err, ErrGuest) || mb.mod.IsClosed() {
			mb.free() // the call has returned
			mb = nil  // trapped or timed out: replace it
		}
		if !m.src.o.FreshInstance {
			m.give(mb)
		}
		if abort {
			panic(http.ErrAbortHandler)
		}
		m.fail(w, r, err, ctx)
		return
	}
	if !m.src.o.FreshInstance {
		m.give(mb)
	}
	if abort {
		// The next handler cut its response (a route aborted by a forced
		// unload): the client sees its connection closed, whatever
		// handle_response did.
		panic(http.ErrAbortHandler)
	}
	h := w.Header()
	for k, v := range c.header {
		h[k] = v
	}
	w.WriteHeader(c.status)
	w.Write(c.body.Bytes())
}

// fail answers a failed request (504 at the deadline, else 500), logs it
// naming the module, and taints the module.
func (m *module) fail(w http.ResponseWriter, r *http.Request, err error, ctx context.Context) {
	code, what := http.StatusInternalServerError, "internal server error"
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) && r.Context().Err() == nil:
		code, what = http.StatusGatewayTimeout, "gateway timeout"
		m.errTimeout.Add(1)
	case errors.Is(err, ErrGuest):
		m.errABI.Add(1)
	case r.Context().Err() == nil:
		m.errTrap.Add(1)
	}
	m.log.Error("http-wasm request failed", "module", m.k.Name(), "method", r.Method, "uri", r.RequestURI, "status", code, "err", err)
	if r.Context().Err() == nil {
		m.k.Taint(raceless.TaintWarn, fmt.Sprintf("http-wasm request failed (%d): %v", code, err))
	}
	http.Error(w, what, code)
}

type callKey struct{}

// call is one request's state, seen by the host functions.
type call struct {
	r      *http.Request
	cfg    []byte
	log    *slog.Logger
	life   bool  // a lifecycle call (lifeCall): no request
	err    error // the guest broke the ABI
	status int
	header http.Header
	body   bytes.Buffer

	features uint32
	reqBody  []byte
	reqRead  bool // reqBody holds the whole body
	reqOff   int
	respOff  int
	nextDone bool

	reqWritten, respWritten bool
}

func (c *call) fault(format string, a ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrGuest)
	}
}

func (c *call) readRequestBody() {
	if c.reqRead {
		return
	}
	c.reqRead = true
	if c.r.Body != nil {
		b, err := io.ReadAll(c.r.Body)
		if err != nil {
			c.fault("reading the request body: %v", err)
		}
		c.reqBody = b
	}
}

// runNext serves the request with next, recording its response as the
// guest's current one (handle_response may read and change it). It
// reports whether next failed (the ABI's is_error): it panicked (its
// response is then a generic 500) or answered a 5xx status, as the
// router answers a route that panicked, trapped, timed out or is
// unloading; abort is a panic with http.ErrAbortHandler.
func (c *call) runNext(next http.Handler) (failed, abort bool) {
	if c.nextDone {
		return false, false
	}
	c.nextDone = true
	if next == nil {
		next = http.NotFoundHandler()
	}
	r := c.r
	if c.reqRead || c.reqWritten {
		r = r.Clone(r.Context())
		r.Body = io.NopCloser(bytes.NewReader(c.reqBody))
		r.ContentLength = int64(len(c.reqBody))
	}
	rec := httptest.NewRecorder()
	defer func() {
		if p := recover(); p != nil {
			abort = p == http.ErrAbortHandler //nolint:errorlint // net/http compares it so too
			if !abort {
				c.log.Error("http-wasm: the next handler panicked", "panic", fmt.Sprint(p))
			}
			failed = true
			c.status, c.header = http.StatusInternalServerError, http.Header{"Content-Type": {"text/plain; charset=utf-8"}}
			c.body.Reset()
			c.body.WriteString("internal server error\n")
		}
	}()
	next.ServeHTTP(rec, r)
	c.status = rec.Code
	c.header = rec.Header()
	c.body.Reset()
	c.body.Write(rec.Body.Bytes())
	return c.status >= 500, false
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b >= 0x80 || b <= ' ' || strings.IndexByte("\"(),/:;<=>?@[\\]{}\x7f", b) >= 0 {
			return false
		}
	}
	return true
}

func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b == '\r' || b == '\n' || b == 0 {
			return false
		}
	}
	return true
}
