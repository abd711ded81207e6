// Package web serves the HTTP routes that modules register
// (raceless.KindRoute): the daemon's `serve --http`.
//
// A route is a registration of kind raceless.KindRoute whose name is a
// net/http ServeMux pattern ("GET /items/{id}", "example.com/", "/{$}")
// and whose value is an http.Handler. A Router matches requests against
// the published routes with an http.ServeMux, rebuilt whenever a module
// goes live, starts going or is gone (a ServeMux cannot remove a
// pattern).
//
// Invariants:
//
//   - A request runs a module's handler only while holding a reference on
//     the module that owns the route (Host.Acquire of the route, taken and
//     dropped by the Router, never by module code), from before the
//     handler is called until after it has returned: streaming responses
//     included. So an unload without --wait or --force refuses while a
//     request is in flight (see Router.InFlight for the routes), and a
//     waiting unload drains them.
//   - The mux only matches; the registry decides. A route that the mux
//     still lists after its module stopped publishing it is acquired by
//     name and found missing: the Router rebuilds its mux and dispatches
//     the request once more, so a request never runs in a module that is
//     not live. During a hot swap (Host.Replace) the acquisition follows
//     the name to the new instance: no request fails.
//   - Router.Abort (rmmod --force) cancels the requests in flight on a
//     module's routes and from then on discards whatever their handlers
//     write; once a handler returns, its request is answered 503 if it
//     wrote nothing, else its connection is closed mid-response (the
//     client sees a closed response, never a hang). Go cannot preempt a
//     handler that ignores its context: when Abort's context ends, the
//     connections of those still running are closed, and they keep
//     running, writing nowhere, holding their module's reference (which
//     the forced unload ignores). The context Abort cancels is the
//     connection's on an HTTP/1 connection of a server with ConnContext
//     (the handler gets the server's *http.Request), and the request's
//     own elsewhere (request.go); either way it is cancelled only while
//     the handler runs, never after it returned (the connection then
//     carries the next request).
//   - A handler that panics fails its request (500 when nothing was
//     written, else a closed connection), taints its module, and is
//     logged naming it; the server keeps serving.
//   - Middleware (KindMiddleware, chained in Config.Middleware's order)
//     runs before the routes, each holding its module's reference while
//     the request passes through it; a middleware of the chain that is not
//     loaded fails the request closed (503), never skipped. A request
//     inside a middleware module is in flight on it as on a route
//     (InFlight names it "middleware NAME"; Abort ends it alike).
//   - A request whose declared body exceeds the limit is answered 413
//     without calling the module; a body that grows past it while being
//     read fails the read (http.MaxBytesReader).
package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raceless/raceless"
)

// DefaultBodyLimit is the request body limit of a Router whose Config
// leaves it zero.
const DefaultBodyLimit = 10 << 20

// Config configures a Router.
type Config struct {
	Logger *slog.Logger
	// BodyLimit is the largest request body, in bytes, handed to a
	// module (0: DefaultBodyLimit; negative: no limit).
	BodyLimit int64
	// Observe, if set, is called after each request served by a module
	// route with the route's pattern, its owner's name, the status
	// written (0 when the request was aborted) and the time taken.
	Observe func(pattern, module string, status int, d time.Duration)
	// Middleware names the middleware (KindMiddleware registrations)
	// every request goes through before the routes, outermost first.
	// One that is not loaded fails the request closed (503), never
	// skipped.
	Middleware []string
}

// KindMiddleware is the registration kind of HTTP middleware: the name
// is the middleware's (its module's, for RegisterMiddleware), the value a
// Middleware.
const KindMiddleware raceless.Kind = "middleware"

// Middleware is HTTP middleware served by a module: it handles a request
// itself or passes it to next (the rest of the chain, then the routes).
type Middleware interface {
	ServeHTTPNext(w http.ResponseWriter, r *http.Request, next http.Handler)
}

// RegisterMiddleware stages the middleware of the module being
// initialised, under the module's name, as any registration.
func RegisterMiddleware(k *raceless.Kernel, mw Middleware) error {
	return k.Register(KindMiddleware, k.Name(), mw)
}

// Router is an http.Handler serving the routes published in a Host.
type Router struct {
	host  *raceless.Host
	log   *slog.Logger
	limit int64
	obs   func(string, string, int, time.Duration)
	mw    atomic.Pointer[[]string] // middleware, outermost first; replaced whole by SetMiddleware

	table atomic.Pointer[table]
	mu    sync.Mutex // serialises rebuilds; guards staged
	// staged are the patterns registered through Register by instances
	// not live yet, checked against later registrations until the
	// instance goes live (its routes are then in the table) or fails.
	staged map[*raceless.Instance][]string

	inflight inflight // the requests in flight, routes and middleware

	unsubscribe func()
	uncheck     func()
}

// table is one immutable generation of the mux.
type table struct {
	mux    *http.ServeMux
	routes []Route
}

// Route is a published route as the Router serves it.
type Route struct {
	Pattern string
	Module  string
	// Err is why the route is not served (a pattern that is invalid or
	// conflicts with another module's); "" when it is.
	Err string
}

// New returns a Router serving h's routes. Close it to unsubscribe.
func New(h *raceless.Host, cfg Config) *Router {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BodyLimit == 0 {
		cfg.BodyLimit = DefaultBodyLimit
	}
	rt := &Router{host: h, log: cfg.Logger, limit: cfg.BodyLimit, obs: cfg.Observe,
		staged: map[*raceless.Instance][]string{}}
	rt.SetMiddleware(cfg.Middleware)
	rt.unsubscribe = h.Subscribe(func(ev raceless.Event) {
		switch ev.State {
		case raceless.StateLive, raceless.StateGoing, raceless.StateGone:
			rt.Rebuild()
			rt.mu.Lock()
			delete(rt.staged, ev.Instance)
			rt.mu.Unlock()
		}
	})
	rt.Rebuild()
	rt.uncheck = h.CheckRegistrations(raceless.KindRoute, rt.check)
	return rt
}

// Close unsubscribes the Router from its host's lifecycle events and
// removes its check of route registrations.
func (rt *Router) Close() {
	rt.uncheck()
	rt.unsubscribe()
}

// check is the Router's raceless.RegisterCheck of KindRoute: a route
// registered by any means (Register, or Kernel.Register directly) must be
// an http.Handler at a valid pattern that conflicts with no other
// module's route, served or staged (stage). It runs for a hot swap's
// replacement too, which so cannot bring a conflicting pattern.
func (rt *Router) check(inst *raceless.Instance, pattern string, value any) error {
	if _, ok := value.(http.Handler); !ok {
		return fmt.Errorf("route %q: value is %T, not an http.Handler: %w", pattern, value, raceless.ErrInvalid)
	}
	if err := CheckPattern(pattern); err != nil {
		return err
	}
	return rt.stage(inst, pattern)
}

// ErrConflict is the error of a route pattern that conflicts with one
// another module serves or is registering (ServeMux's rules: two patterns
// that match some request alike, neither more specific).
var ErrConflict = errors.New("route pattern conflicts")

// stage checks pattern, registered by inst, against the routes of other
// modules (served, or staged by instances still coming) and records it.
func (rt *Router) stage(inst *raceless.Instance, pattern string) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	check := func(other, module string) error {
		mux := http.NewServeMux()
		mux.Handle(other, http.NotFoundHandler())
		if err := handle(mux, pattern, http.NotFoundHandler()); err != nil {
			// The module is named by the Kernel's error (register NAME).
			return fmt.Errorf("%w: %q conflicts with %q of module %s: %w", ErrConflict, pattern, other, module, raceless.ErrExists)
		}
		return nil
	}
	for _, r := range rt.table.Load().routes {
		if r.Err == "" && r.Module != inst.Name() && r.Pattern != pattern {
			if err := check(r.Pattern, r.Module); err != nil {
				return err
			}
		}
	}
	for other, ps := range rt.staged {
		if other == inst || other.Name() == inst.Name() {
			continue
		}
		for _, p := range ps {
			if p != pattern {
				if err := check(p, other.Name()); err != nil {
					return err
				}
			}
		}
	}
	rt.staged[inst] = append(rt.staged[inst], pattern)
	return nil
}

// Routes lists the routes of the current mux, sorted by pattern.
func (rt *Router) Routes() []Route { return append([]Route(nil), rt.table.Load().routes...) }

// Rebuild makes a new mux from the routes published now. It is called on
// every lifecycle event; a request that finds its route gone calls it too.
func (rt *Router) Rebuild() {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	regs := rt.host.Lookup(raceless.KindRoute)
	t := &table{mux: http.NewServeMux()}
	for _, reg := range regs {
		r := Route{Pattern: reg.Name, Module: reg.Owner}
		if _, ok := reg.Value.(http.Handler); !ok {
			r.Err = fmt.Sprintf("value is %T, not an http.Handler", reg.Value)
		} else if err := handle(t.mux, reg.Name, &routeHandler{rt: rt, pattern: reg.Name}); err != nil {
			r.Err = err.Error()
		}
		if r.Err != "" {
			rt.log.Error("route not served", "module", reg.Owner, "pattern", reg.Name, "err", r.Err)
		}
		t.routes = append(t.routes, r)
	}
	sort.Slice(t.routes, func(i, j int) bool { return t.routes[i].Pattern < t.routes[j].Pattern })
	rt.table.Store(t)
}

// handle registers h at pattern in mux, turning ServeMux's panic on an
// invalid or conflicting pattern into an error.
func handle(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

// ErrPattern is the error of a route pattern that net/http refuses.
var ErrPattern = errors.New("invalid route pattern")

// CheckPattern reports whether pattern is a valid ServeMux pattern,
// with an error wrapping ErrPattern and raceless.ErrInvalid if not.
func CheckPattern(pattern string) error {
	if err := handle(http.NewServeMux(), pattern, http.NotFoundHandler()); err != nil {
		return fmt.Errorf("%w %q: %v: %w", ErrPattern, pattern, err, raceless.ErrInvalid)
	}
	return nil
}

// Register stages a route of the module being initialised: pattern is
// checked first (an invalid one fails with ErrPattern, so Init fails
// naming it), then registered as raceless.KindRoute with the same
// staging rules as any registration (the same pattern held by another
// module fails Init with raceless.ErrExists). In a host a Router serves,
// its check (raceless.Host.CheckRegistrations) refuses a pattern that
// conflicts with a different pattern another module serves or is
// registering, with ErrConflict and raceless.ErrExists, naming both
// patterns and the other module: for a module loaded and for the
// replacement of a hot swap (Host.Replace) alike, which then fails,
// leaving the old instance serving.
func Register(k *raceless.Kernel, pattern string, h http.Handler) error {
	if err := CheckPattern(pattern); err != nil {
		return fmt.Errorf("%s: %w", k.Name(), err)
	}
	return k.Register(raceless.KindRoute, pattern, h)
}

type ctxKey int

const (
	connKey ctxKey = iota
	retriedKey
)

// ServeHTTP serves r with the route that matches it (404 when none).
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rt.limit > 0 && r.ContentLength > rt.limit {
		w.Header().Set("Connection", "close")
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return
	}
	mw := *rt.mw.Load()
	if len(mw) == 0 {
		rt.table.Load().mux.ServeHTTP(w, r)
		return
	}
	(&chain{rt: rt, mw: mw}).ServeHTTP(w, r)
}

// SetMiddleware replaces the middleware chain (Config.Middleware),
// outermost first: requests that begin afterwards go through names;
// requests in flight finish with the chain they began with.
func (rt *Router) SetMiddleware(names []string) {
	mw := append([]string(nil), names...)
	rt.mw.Store(&mw)
}

// Middleware returns the middleware chain, outermost first.
func (rt *Router) Middleware() []string { return append([]string(nil), *rt.mw.Load()...) }

// chain runs a request through the middleware from index i on, then the
// routes. Each middleware's module is held (a reference, as for routes)
// while its handler runs, which includes the rest of the chain.
type chain struct {
	rt *Router
	mw []string // the chain the request began with
	i  int
}

func (c *chain) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := c.rt
	if c.i == len(c.mw) {
		rt.table.Load().mux.ServeHTTP(w, r)
		return
	}
	name := c.mw[c.i]
	b, err := rt.host.Acquire(KindMiddleware, name)
	if err != nil {
		rt.log.Warn("middleware not served: request refused", "middleware", name, "err", err)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "service unavailable: middleware "+name+" is not loaded", http.StatusServiceUnavailable)
		return
	}
	mw, ok := b.Value().(Middleware)
	if !ok {
		b.Release()
		http.Error(w, "internal server error", http.StatusInternalServerError)
		return
	}
	c.serve(&b, name, mw, w, r)
}

// serve runs middleware mw, called name and held by b, as one request in
// flight (apart from ServeHTTP for open-coded defers, as routeHandler's).
func (c *chain) serve(b *raceless.Binding, name string, mw Middleware, w http.ResponseWriter, r *http.Request) {
	rt := c.rt
	defer b.Release()
	owner := b.Owner()
	// Tracked as a route's request is (InFlight names it "middleware
	// NAME", Abort ends it): the rest of the chain writes through req.
	req, hr := rt.begin(w, r, owner, name, true)
	if req == nil {
		return
	}
	defer rt.leave(req)
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler { //nolint:errorlint // net/http compares it so too
				panic(p)
			}
			rt.log.Error("middleware panicked", "module", owner.Name(), "panic", fmt.Sprint(p))
			owner.Taint(raceless.TaintWarn, fmt.Sprintf("middleware panicked: %v", p))
			panic(http.ErrAbortHandler)
		}
	}()
	mw.ServeHTTPNext(req, hr, &chain{rt: rt, mw: c.mw, i: c.i + 1})
	req.finish()
}

// routeHandler is what the mux holds for a pattern: it acquires the route
// by name for each request.
type routeHandler struct {
	rt      *Router
	pattern string
}

func (rh *routeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := rh.rt
	b, err := rt.host.Acquire(raceless.KindRoute, rh.pattern)
	if err != nil {
		if errors.Is(err, raceless.ErrNotFound) && r.Context().Value(retriedKey) == nil {
			// The route went away after this mux was built: match
			// again against the routes published now (the mux only:
			// the middleware has run already).
			rt.Rebuild()
			rt.table.Load().mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), retriedKey, true)))
			return
		}
		if errors.Is(err, raceless.ErrNotLive) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "service unavailable: the module serving this route is unloading", http.StatusServiceUnavailable)
			return
		}
		http.NotFound(w, r)
		return
	}
	h, ok := b.Value().(http.Handler)
	if !ok {
		b.Release()
		http.Error(w, "internal server error", http.StatusInternalServerError)
		return
	}
	rh.serve(&b, h, w, r)
}

// serve runs the route's handler h, held by b, as one request in flight.
// Apart from ServeHTTP, so that its defers are open-coded (a function
// with many returns gets the slower deferred calls of the runtime, a
// measurable share of a route's cost per request).
func (rh *routeHandler) serve(b *raceless.Binding, h http.Handler, w http.ResponseWriter, r *http.Request) {
	rt := rh.rt
	defer b.Release()
	owner := b.Owner()
	var start time.Time
	if rt.obs != nil {
		start = time.Now()
	}
	req, hr := rt.begin(w, r, owner, rh.pattern, false)
	if req == nil {
		return
	}
	defer rt.leave(req)
	if rt.limit > 0 && r.Body != nil && r.Body != http.NoBody {
		hr.Body = http.MaxBytesReader(req, r.Body, rt.limit)
	}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler { //nolint:errorlint // net/http compares it so too
				panic(p)
			}
			rt.log.Error("route handler panicked", "module", owner.Name(), "pattern", rh.pattern, "panic", fmt.Sprint(p))
			owner.Taint(raceless.TaintWarn, fmt.Sprintf("route %q panicked: %v", rh.pattern, p))
			if !req.internalError() {
				panic(http.ErrAbortHandler) // a response had begun: close the connection
			}
		}
		if rt.obs != nil {
			rt.obs(rh.pattern, owner.Name(), req.statusCode(), time.Since(start))
		}
	}()
	h.ServeHTTP(req, hr)
	req.finish()
	if testHookFinished != nil {
		testHookFinished()
	}
}

// InFlight returns, for the module called name, how many requests are in
// flight on each of its routes, as "PATTERN (N)", and inside it as
// middleware, as "middleware NAME (N)", sorted.
func (rt *Router) InFlight(name string) []string {
	counts := map[string]int{}
	rt.inflight.each(name, func(q *request) {
		if q.middleware {
			counts["middleware "+q.what]++
		} else {
			counts[q.what]++
		}
	})
	out := make([]string, 0, len(counts))
	for p, n := range counts {
		out = append(out, fmt.Sprintf("%s (%d)", p, n))
	}
	sort.Strings(out)
	return out
}

// Abort ends the requests in flight on the routes of the module called
// name, and those inside it as middleware (for a forced unload): each is
// cancelled and its writes discarded (the rest of the chain, behind the
// middleware, writes nowhere too),
// and Abort waits until their handlers return; a request that wrote
// nothing is then answered 503, one whose response had begun has its
// connection closed. The connection of a handler still running when ctx
// ends is closed at once. It returns how many requests it aborted.
func (rt *Router) Abort(ctx context.Context, name string) int {
	var qs []*request
	rt.inflight.each(name, func(q *request) {
		if q.done == nil {
			q.done = make(chan struct{})
		}
		qs = append(qs, q)
	})
	for _, q := range qs {
		q.abort()
	}
	for _, q := range qs {
		select {
		case <-q.done:
		case <-ctx.Done():
			q.closeConn()
		}
	}
	return len(qs)
}

// String describes the routes, one "PATTERN MODULE" a line.
func (rt *Router) String() string {
	var b strings.Builder
	for _, r := range rt.Routes() {
		fmt.Fprintf(&b, "%s\t%s\n", r.Pattern, r.Module)
	}
	return b.String()
}
