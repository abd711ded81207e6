package web_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/testdeadline"
	"github.com/raceless/raceless/web"
	"github.com/raceless/raceless/web/webtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// routeModule is a native module registering routes (pattern → handler).
func routeModule(name, version string, routes map[string]http.Handler) raceless.Source {
	return raceless.Native(raceless.Info{Name: name, Version: version}, func() raceless.Module {
		return &rmod{routes: routes}
	})
}

type rmod struct{ routes map[string]http.Handler }

func (m *rmod) Init(k *raceless.Kernel) error {
	patterns := make([]string, 0, len(m.routes))
	for p := range m.routes {
		patterns = append(patterns, p)
	}
	sort.Strings(patterns) // registered in pattern order
	for _, p := range patterns {
		if err := web.Register(k, p, m.routes[p]); err != nil {
			return err
		}
	}
	return nil
}
func (m *rmod) Exit() (int, error) { return 0, nil }

func text(s string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, s) })
}

type fixture struct {
	h   *raceless.Host
	rt  *web.Router
	srv *httptest.Server
}

func newFixture(t *testing.T, cfg web.Config) *fixture {
	t.Helper()
	return newServerFixture(t, cfg, true)
}

// serverModes are the two ways a request's handler context is ended by
// Abort: the connection's (a server with web.ConnContext, HTTP/1) and the
// request's own (a server without it).
var serverModes = []struct {
	name        string
	connContext bool
}{{"ConnContext", true}, {"own context", false}}

// newServerFixture is newFixture with web.ConnContext installed in the
// server or not.
func newServerFixture(t *testing.T, cfg web.Config, connContext bool) *fixture {
	t.Helper()
	return newFixtureStarted(t, cfg, func(srv *httptest.Server) {
		if connContext {
			srv.Config.ConnContext = web.ConnContext
		}
		srv.Start()
	})
}

// newFixtureStarted is newFixture with a server that start configures
// and starts.
func newFixtureStarted(t *testing.T, cfg web.Config, start func(*httptest.Server)) *fixture {
	t.Helper()
	h := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	rt := web.New(h, cfg)
	srv := httptest.NewUnstartedServer(rt)
	start(srv)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		rt.Close()
		ctx, cancel := testdeadline.Context(t)
		defer cancel()
		if _, err := h.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &fixture{h: h, rt: rt, srv: srv}
}

func (f *fixture) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := f.srv.Client().Get(f.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// getInBackground GETs path and reports, once done, "STATUS BODY", with
// " then error" when the body broke off, or "error: ..." when no response
// came.
func (f *fixture) getInBackground(path string) <-chan string {
	done := make(chan string, 1)
	go func() {
		resp, err := f.srv.Client().Get(f.srv.URL + path)
		if err != nil {
			done <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			done <- fmt.Sprintf("%d %q then error", resp.StatusCode, body)
			return
		}
		done <- fmt.Sprintf("%d %q", resp.StatusCode, body)
	}()
	return done
}

// checkAborted checks what the client of an aborted blocker request got
// (getInBackground's report): 503 when nothing was written, the first
// chunk then a closed connection when the response had begun (stream).
func checkAborted(t *testing.T, got string, stream bool) {
	t.Helper()
	if stream {
		if !strings.HasPrefix(got, "200 \"first\\n\" then error") {
			t.Fatalf("streaming client: %s, want the first chunk then a closed connection", got)
		}
	} else if !strings.HasPrefix(got, "503 ") {
		t.Fatalf("client: %s, want 503", got)
	}
}

func (f *fixture) load(t *testing.T, src raceless.Source) {
	t.Helper()
	if _, err := f.h.Load(context.Background(), src, nil); err != nil {
		t.Fatal(err)
	}
}

// Routes appear when their module goes live (by the time Load returns)
// and vanish when it is unloaded; ServeMux patterns (methods, wildcards)
// are honoured.
func TestRoutesFollowModule(t *testing.T) {
	f := newFixture(t, web.Config{})
	if code, _ := f.get(t, "/items/7"); code != http.StatusNotFound {
		t.Fatalf("before load: %d, want 404", code)
	}
	f.load(t, routeModule("items", "1", map[string]http.Handler{
		"GET /items/{id}": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "item %s", r.PathValue("id"))
		}),
	}))
	if code, body := f.get(t, "/items/7"); code != 200 || body != "item 7" {
		t.Fatalf("live: %d %q", code, body)
	}
	resp, err := f.srv.Client().Post(f.srv.URL+"/items/7", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d, want 405 (net/http's own answer)", resp.StatusCode)
	}
	if got := f.rt.Routes(); len(got) != 1 || got[0].Module != "items" || got[0].Pattern != "GET /items/{id}" {
		t.Fatalf("Routes: %+v", got)
	}
	if err := f.h.Unload(context.Background(), "items", raceless.UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if code, _ := f.get(t, "/items/7"); code != http.StatusNotFound {
		t.Fatalf("after unload: %d, want 404", code)
	}
}

// A pattern another module holds fails Init (ErrExists); an invalid one
// fails it with ErrPattern; neither leaves anything served.
func TestRouteClashAndInvalid(t *testing.T) {
	f := newFixture(t, web.Config{})
	f.load(t, routeModule("a", "1", map[string]http.Handler{"/x": text("a")}))
	_, err := f.h.Load(context.Background(), routeModule("b", "1", map[string]http.Handler{"/x": text("b")}), nil)
	if !errors.Is(err, raceless.ErrExists) {
		t.Fatalf("clash: %v, want ErrExists", err)
	}
	_, err = f.h.Load(context.Background(), routeModule("c", "1", map[string]http.Handler{"GET /{bad": text("c")}), nil)
	if !errors.Is(err, web.ErrPattern) || !errors.Is(err, raceless.ErrInvalid) || !strings.Contains(err.Error(), "c") {
		t.Fatalf("invalid: %v, want ErrPattern naming c", err)
	}
	if code, body := f.get(t, "/x"); code != 200 || body != "a" {
		t.Fatalf("after refused loads: %d %q", code, body)
	}
	if n := len(f.rt.Routes()); n != 1 {
		t.Fatalf("%d routes, want 1", n)
	}
}

// blocker is a handler that signals entry and holds the request until
// released (or its context ends), optionally after writing a first chunk.
type blocker struct {
	entered chan struct{}
	release chan struct{}
	stream  bool
	ctxDone atomic.Bool
}

func newBlocker(stream bool) *blocker {
	return &blocker{entered: make(chan struct{}, 16), release: make(chan struct{}), stream: stream}
}

func (b *blocker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if b.stream {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
	}
	b.entered <- struct{}{}
	select {
	case <-b.release:
		io.WriteString(w, "done\n")
	case <-r.Context().Done():
		b.ctxDone.Store(true)
	}
}

// A request in flight holds its module's reference: a plain unload
// refuses (and InFlight names the route), a waiting unload drains it and
// the request completes normally. Without the reference (the barrier) the
// plain unload would succeed.
func TestInFlightHoldsModule(t *testing.T) {
	f := newFixture(t, web.Config{})
	b := newBlocker(false)
	f.load(t, routeModule("slow", "1", map[string]http.Handler{"GET /slow": b}))
	type result struct {
		code int
		body string
	}
	res := make(chan result, 1)
	go func() {
		resp, err := f.srv.Client().Get(f.srv.URL + "/slow")
		if err != nil {
			res <- result{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		res <- result{resp.StatusCode, string(body)}
	}()
	<-b.entered
	err := f.h.Unload(context.Background(), "slow", raceless.UnloadOptions{})
	if !errors.Is(err, raceless.ErrBusy) {
		t.Fatalf("unload with a request in flight: %v, want ErrBusy", err)
	}
	if got := f.rt.InFlight("slow"); len(got) != 1 || got[0] != "GET /slow (1)" {
		t.Fatalf("InFlight: %q", got)
	}
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	progressed := make(chan struct{})
	var once sync.Once
	unloaded := make(chan error, 1)
	go func() {
		unloaded <- f.h.Unload(ctx, "slow", raceless.UnloadOptions{Wait: true, ProgressInterval: 1, Progress: func(p raceless.Progress) {
			if p.Refs > 0 {
				once.Do(func() { close(progressed) })
			}
		}})
	}()
	select {
	case <-progressed: // the unload is waiting for the request's reference
	case <-ctx.Done():
		t.Fatal("no progress from the waiting unload")
	}
	close(b.release)
	if r := <-res; r.code != 200 || r.body != "done\n" {
		t.Fatalf("drained request: %d %q", r.code, r.body)
	}
	if err := <-unloaded; err != nil {
		t.Fatalf("waiting unload: %v", err)
	}
	if code, _ := f.get(t, "/slow"); code != http.StatusNotFound {
		t.Fatalf("after drain: %d, want 404", code)
	}
}

// A forced unload after Abort: a request that wrote nothing gets 503, a
// streaming one sees its connection closed; neither hangs, and both
// handlers saw their context cancelled.
func TestAbortForced(t *testing.T) {
	for _, mode := range serverModes {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/stream=%v", mode.name, stream), func(t *testing.T) {
				testAbortForced(t, mode.connContext, stream)
			})
		}
	}
}

func testAbortForced(t *testing.T, connContext, stream bool) {
	f := newServerFixture(t, web.Config{}, connContext)
	b := newBlocker(stream)
	f.load(t, routeModule("slow", "1", map[string]http.Handler{"GET /slow": b}))
	done := f.getInBackground("/slow")
	<-b.entered
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	if n := f.rt.Abort(ctx, "slow"); n != 1 {
		t.Fatalf("Abort: %d, want 1", n)
	}
	if !b.ctxDone.Load() {
		t.Fatal("the handler's context was not cancelled")
	}
	if err := f.h.Unload(ctx, "slow", raceless.UnloadOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	checkAborted(t, <-done, stream)
}

// A panicking handler answers 500, taints its module, and the next
// request is served.
func TestPanicTaints(t *testing.T) {
	f := newFixture(t, web.Config{})
	f.load(t, routeModule("bad", "1", map[string]http.Handler{
		"/panic": http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }),
		"/ok":    text("ok"),
	}))
	if code, _ := f.get(t, "/panic"); code != 500 {
		t.Fatalf("panic: %d, want 500", code)
	}
	m, _ := f.h.Module("bad")
	if len(m.Taints()) == 0 {
		t.Fatal("module not tainted")
	}
	if code, body := f.get(t, "/ok"); code != 200 || body != "ok" {
		t.Fatalf("after panic: %d %q", code, body)
	}
}

// A body over the limit is refused with 413 before the module runs; an
// invalid status written by a module becomes 500.
func TestBodyLimitAndBadStatus(t *testing.T) {
	var called atomic.Int32
	f := newFixture(t, web.Config{BodyLimit: 8})
	f.load(t, routeModule("m", "1", map[string]http.Handler{
		"POST /echo": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			called.Add(1)
			io.Copy(w, r.Body)
		}),
		"/status": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(42) }),
	}))
	resp, err := f.srv.Client().Post(f.srv.URL+"/echo", "text/plain", strings.NewReader("0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || called.Load() != 0 {
		t.Fatalf("over limit: %d (handler called %d times), want 413 and no call", resp.StatusCode, called.Load())
	}
	if code, _ := f.get(t, "/status"); code != 500 {
		t.Fatalf("invalid status: %d, want 500", code)
	}
}

// A hot swap (Host.Replace) under concurrent load fails no request, and
// requests after the swap see the new version.
func TestSwapUnderLoad(t *testing.T) {
	f := newFixture(t, web.Config{})
	version := func(v string) raceless.Source {
		return routeModule("svc", v, map[string]http.Handler{"GET /v": text(v)})
	}
	f.load(t, version("0"))
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	load := webtest.StartLoad(f.srv.Client(), f.srv.URL+"/v", 4, http.StatusOK)
	defer load.Stop()
	const swaps = 100
	for i := 1; i <= swaps; i++ {
		if _, err := f.h.Replace(ctx, "svc", version(fmt.Sprint(i)), nil, raceless.ReplaceOptions{}); err != nil {
			t.Fatalf("swap %d: %v", i, err)
		}
		if code, body := f.get(t, "/v"); code != 200 || body != fmt.Sprint(i) {
			t.Fatalf("after swap %d: %d %q", i, code, body)
		}
	}
	total, failed, first := load.Stop()
	if failed != 0 {
		t.Fatalf("%d of %d requests failed during %d swaps (first: %v)", failed, total, swaps, first)
	}
	t.Logf("%d requests, %d swaps, none failed", total, swaps)
}

// Malformed requests get net/http's own answer and reach no module.
func TestMalformed(t *testing.T) {
	f := newFixture(t, web.Config{})
	var called atomic.Int32
	f.load(t, routeModule("m", "1", map[string]http.Handler{"/": http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called.Add(1) })}))
	c, err := net.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 400") || called.Load() != 0 {
		t.Fatalf("malformed: %q %v (module called %d times)", line, err, called.Load())
	}
}

// A pattern that conflicts with a different pattern of another module
// (ServeMux's rules) fails the load, naming both patterns and the module;
// the patterns a failed load staged block nothing afterwards.
func TestRouteConflict(t *testing.T) {
	f := newFixture(t, web.Config{})
	f.load(t, routeModule("a", "1", map[string]http.Handler{"GET /a/{x}": text("a"), "GET /e": text("a")}))
	_, err := f.h.Load(context.Background(), routeModule("b", "1", map[string]http.Handler{"GET /a/{y}": text("b")}), nil)
	if !errors.Is(err, web.ErrConflict) || !errors.Is(err, raceless.ErrExists) ||
		!strings.Contains(err.Error(), `"GET /a/{y}" conflicts with "GET /a/{x}" of module a`) {
		t.Fatalf("conflicting load: %v", err)
	}
	// c stages /c/{x}, then fails its Init on a clash of the same name.
	_, err = f.h.Load(context.Background(), routeModule("c", "1", map[string]http.Handler{"GET /c/{x}": text("c"), "GET /e": text("c")}), nil)
	if !errors.Is(err, raceless.ErrExists) || errors.Is(err, web.ErrConflict) {
		t.Fatalf("c: %v, want ErrExists of GET /e", err)
	}
	f.load(t, routeModule("d", "1", map[string]http.Handler{"GET /c/{y}": text("d")}))
	if code, body := f.get(t, "/c/1"); code != 200 || body != "d" {
		t.Fatalf("/c/1: %d %q", code, body)
	}
}

// mwModule is a native middleware module: it adds its name to the
// request's X-Order header and passes the request on.
type mwModule struct{}

func (mwModule) Init(k *raceless.Kernel) error {
	name := k.Name()
	return web.RegisterMiddleware(k, mwFunc(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		r.Header.Add("X-Order", name)
		next.ServeHTTP(w, r)
	}))
}
func (mwModule) Exit() (int, error) { return 0, nil }

type mwFunc func(http.ResponseWriter, *http.Request, http.Handler)

func (f mwFunc) ServeHTTPNext(w http.ResponseWriter, r *http.Request, next http.Handler) {
	f(w, r, next)
}

// Middleware runs in the order the operator set, before the routes; one
// that is not loaded fails the request closed (503), never skipped.
func TestMiddlewareChain(t *testing.T) {
	f := newFixture(t, web.Config{Middleware: []string{"mwb", "mwa"}})
	f.load(t, routeModule("r", "1", map[string]http.Handler{"/r": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Join(r.Header.Values("X-Order"), ","))
	})}))
	f.load(t, raceless.Native(raceless.Info{Name: "mwa"}, func() raceless.Module { return mwModule{} }))
	if code, _ := f.get(t, "/r"); code != http.StatusServiceUnavailable {
		t.Fatalf("with mwb missing: %d, want 503", code)
	}
	f.load(t, raceless.Native(raceless.Info{Name: "mwb"}, func() raceless.Module { return mwModule{} }))
	if code, body := f.get(t, "/r"); code != 200 || body != "mwb,mwa" {
		t.Fatalf("chain: %d %q, want mwb,mwa", code, body)
	}
}

// A handler that ignores its context keeps running after Abort, but Abort
// returns when its own context ends, having closed the request's
// connection: the client sees it closed, never a hang.
func TestAbortClosesConnOfHandlerIgnoringContext(t *testing.T) {
	f := newFixture(t, web.Config{})
	entered, release := make(chan struct{}), make(chan struct{})
	f.load(t, routeModule("deaf", "1", map[string]http.Handler{"GET /deaf": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release // not r.Context()
	})}))
	got := make(chan string, 1)
	go func() {
		resp, err := f.srv.Client().Get(f.srv.URL + "/deaf")
		if err != nil {
			got <- "error"
			return
		}
		resp.Body.Close()
		got <- resp.Status
	}()
	<-entered
	expired, cancel := context.WithCancel(context.Background())
	cancel() // Abort waits for nobody
	if n := f.rt.Abort(expired, "deaf"); n != 1 {
		t.Fatalf("Abort: %d, want 1", n)
	}
	wctx, wcancel := testdeadline.Context(t)
	defer wcancel()
	select {
	case g := <-got:
		if g != "error" {
			t.Fatalf("client: %s, want its connection closed", g)
		}
	case <-wctx.Done():
		t.Fatal("the client still waits: its connection was not closed")
	}
	close(release)
	if err := f.h.Unload(wctx, "deaf", raceless.UnloadOptions{Wait: true}); err != nil {
		t.Fatal(err)
	}
}
