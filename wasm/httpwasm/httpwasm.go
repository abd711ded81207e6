// Package httpwasm runs WebAssembly guests written for the http-wasm HTTP
// handler ABI (http-wasm.io, "HTTP handler ABI") as raceless route
// modules: Runtime.Source makes a raceless.Source whose module, on Init,
// instantiates a pool of instances of the guest and registers its route
// patterns (package web) with a handler that runs each request in one
// member of the pool.
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
//   - The pool belongs to one module instance: it is created in Init (a
//     guest that fails to instantiate fails Init, naming the module) and
//     closed in Exit, which the core runs only after every request has
//     dropped its reference, so no member is closed while it runs a
//     request; a member still out at Exit (a forced unload) is closed when
//     it comes back.
//   - The response is buffered: nothing reaches the client until the
//     guest has returned. So a guest that traps, runs past its deadline
//     (Options.Timeout; wazero closes the instance when the request's
//     context ends), or writes an invalid status or header fails its
//     request cleanly: 504 at the deadline, else 500, with a generic body;
//     the module is named in the log, tainted, and the member is replaced
//     by a fresh instance. The other members keep serving.
//   - Memory: every member has the runtime's memory limit
//     (Config.MemoryLimitPages); a guest that grows past it sees
//     memory.grow fail (a Go guest then dies, failing its request as a
//     trap).
//   - A guest that returns next=1 passes the request to its next handler
//     (the router's chain for a module registered as middleware,
//     Options.Middleware; else Options.Next, 404 when none), whose
//     response it may then inspect and change in handle_response.
package httpwasm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/raceless/raceless"
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
}

// PoolStat is one route module's pool as Runtime.Pools reports it.
type PoolStat struct {
	Module     string
	Size, Busy int
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
		busy := m.out
		m.mu.Unlock()
		out = append(out, PoolStat{Module: m.k.Name(), Size: cap(m.pool), Busy: busy, Errors: map[string]uint64{
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
	cm, err := r.rt.CompileModule(ctx, bin)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", info.Name, err)
	}
	exp := cm.ExportedFunctions()
	if _, ok := exp["handle_request"]; !ok {
		return nil, fmt.Errorf("%s: no handle_request export: %w", info.Name, ErrNotHandler)
	}
	if _, ok := exp["handle_response"]; !ok {
		return nil, fmt.Errorf("%s: no handle_response export: %w", info.Name, ErrNotHandler)
	}
	if len(cm.ExportedMemories()) == 0 {
		return nil, fmt.Errorf("%s: no exported memory: %w", info.Name, ErrNotHandler)
	}
	if o.PoolSize <= 0 {
		o.PoolSize = runtime.GOMAXPROCS(0)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	_, init := exp["_initialize"]
	// The compiled code is kept for the first instance and freed with
	// the last one's exit; an instance created after that compiles the
	// guest again (acquireCompiled).
	return &source{r: r, info: info, bin: bin, o: o, init: init, cm: cm}, nil
}

type source struct {
	r    *Runtime
	info raceless.Info
	bin  []byte
	o    Options

	mu   sync.Mutex
	cm   wazero.CompiledModule // nil while no instance of the source lives
	live int                   // instances between Instantiate and Exit
	init bool                  // the guest exports _initialize (a Go c-shared guest)
	key  string                // Open's: the file and its sum
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
		cm, err := s.r.rt.CompileModule(ctx, s.bin)
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
		s.cm.Close(context.Background())
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
	pool chan *member

	mu     sync.Mutex
	closed bool
	out    int // members taken, not yet back

	errTrap, errTimeout, errABI atomic.Uint64
}

type member struct {
	mod     api.Module
	handle  api.Function
	respond api.Function
}

func (m *module) Init(k *raceless.Kernel) (err error) {
	m.k, m.log = k, k.Logger()
	m.cfg = m.src.o.Config
	if m.cfg == nil && len(k.Params()) > 0 {
		// The module's parameters (declared in its modinfo block, given
		// at load: insmod FILE key=value), as a JSON object of strings.
		if m.cfg, err = json.Marshal(k.Params()); err != nil {
			return err
		}
	}
	m.pool = make(chan *member, m.src.o.PoolSize)
	defer func() {
		if err != nil {
			m.closeAll()
		}
	}()
	for range m.src.o.PoolSize {
		if m.src.o.FreshInstance {
			break
		}
		mb, err := m.newMember(context.Background())
		if err != nil {
			return fmt.Errorf("%s: instantiating a pool member: %w", k.Name(), err)
		}
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
// they come back (give). The compiled code is released with the first
// call, once.
func (m *module) closeAll() {
	m.mu.Lock()
	first := !m.closed
	m.closed = true
	m.mu.Unlock()
	for {
		select {
		case mb := <-m.pool:
			mb.mod.Close(context.Background())
		default:
			if first {
				m.src.releaseCompiled()
			}
			return
		}
	}
}

func (m *module) newMember(ctx context.Context) (*member, error) {
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions()
	mod, err := m.src.r.rt.InstantiateModule(ctx, m.cm, cfg)
	if err != nil {
		return nil, err
	}
	if m.src.init {
		if _, err := mod.ExportedFunction("_initialize").Call(ctx); err != nil {
			mod.Close(ctx)
			return nil, fmt.Errorf("_initialize: %w", err)
		}
	}
	return &member{mod: mod, handle: mod.ExportedFunction("handle_request"), respond: mod.ExportedFunction("handle_response")}, nil
}

// take returns a member, waiting for one while all are busy.
func (m *module) take(ctx context.Context) (*member, error) {
	select {
	case mb := <-m.pool:
		m.mu.Lock()
		m.out++
		m.mu.Unlock()
		return mb, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// give puts mb back (nil: it died; a fresh one replaces it).
func (m *module) give(mb *member) {
	m.mu.Lock()
	m.out--
	closed := m.closed
	m.mu.Unlock()
	if closed {
		if mb != nil {
			mb.mod.Close(context.Background())
		}
		return
	}
	if mb == nil {
		var err error
		if mb, err = m.newMember(context.Background()); err != nil {
			// The pool shrinks by one; say so loudly.
			m.log.Error("http-wasm: cannot replace a failed pool member: the pool is smaller", "err", err)
			m.k.Taint(raceless.TaintWarn, "http-wasm pool member could not be replaced: "+err.Error())
			return
		}
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
			defer mb.mod.Close(context.Background())
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
	if err == nil && c.err == nil {
		ctxNext := res[0]
		if uint32(ctxNext) != 0 { // next=1: the next handler, then handle_response
			c.runNext(next)
			_, err = mb.respond.Call(cctx, ctxNext>>32, 0)
		}
	}
	if err != nil || c.err != nil {
		if err == nil {
			err = c.err
		}
		if !errors.Is(err, ErrGuest) || mb.mod.IsClosed() {
			mb.mod.Close(context.Background())
			mb = nil // trapped or timed out: replace it
		}
		if !m.src.o.FreshInstance {
			m.give(mb)
		}
		m.fail(w, r, err, ctx)
		return
	}
	if !m.src.o.FreshInstance {
		m.give(mb)
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
// guest's current one (handle_response may read and change it).
func (c *call) runNext(next http.Handler) {
	if c.nextDone {
		return
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
	next.ServeHTTP(rec, r)
	c.status = rec.Code
	c.header = rec.Header()
	c.body.Reset()
	c.body.Write(rec.Body.Bytes())
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
