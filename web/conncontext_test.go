package web_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/testdeadline"
	"github.com/raceless/raceless/web"
)

// liveOrFail answers "ok", or 500 naming the error when the request's
// context has already ended.
var liveOrFail = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if err := r.Context().Err(); err != nil {
		http.Error(w, "context ended: "+err.Error(), http.StatusInternalServerError)
		return
	}
	io.WriteString(w, "ok")
})

// getOn GETs url with c, reporting "STATUS BODY", whether the response
// closes its connection, and whether the request reused one.
func getOn(t *testing.T, c *http.Client, url string) (got string, closes, reused bool) {
	t.Helper()
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "error: " + err.Error(), true, reused
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body))), resp.Close, reused
}

// ctxRecorder reports the context of each request it serves, then waits
// for it to end or for release.
type ctxRecorder struct {
	entered chan context.Context
	release chan struct{}
}

func (c *ctxRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.entered <- r.Context()
	select {
	case <-c.release:
		io.WriteString(w, "done")
	case <-r.Context().Done():
	}
}

// With ConnContext, Abort ends the connection's context: the aborted
// request's handler sees Canceled (the cause names the forced unload),
// its client gets 503 with the connection closed, and a request of
// another module on another connection goes on.
func TestAbortEndsOnlyItsConnection(t *testing.T) {
	f := newFixture(t, web.Config{})
	a := &ctxRecorder{entered: make(chan context.Context, 1), release: make(chan struct{})}
	b := &ctxRecorder{entered: make(chan context.Context, 1), release: make(chan struct{})}
	f.load(t, routeModule("a", "1", map[string]http.Handler{"GET /a": a}))
	f.load(t, routeModule("b", "1", map[string]http.Handler{"GET /b": b}))
	type result struct {
		got    string
		closes bool
	}
	aDone, bDone := make(chan result, 1), make(chan result, 1)
	go func() { got, closes, _ := getOn(t, f.srv.Client(), f.srv.URL+"/a"); aDone <- result{got, closes} }()
	go func() { got, closes, _ := getOn(t, f.srv.Client(), f.srv.URL+"/b"); bDone <- result{got, closes} }()
	actx, bctx := <-a.entered, <-b.entered
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	if n := f.rt.Abort(ctx, "a"); n != 1 {
		t.Fatalf("Abort: %d, want 1", n)
	}
	if err := actx.Err(); err != context.Canceled { //nolint:errorlint // Err returns the sentinel itself
		t.Fatalf("aborted handler's Err: %v, want context.Canceled", err)
	}
	if cause := context.Cause(actx); cause == nil || !strings.Contains(cause.Error(), "unloaded by force") {
		t.Errorf("aborted handler's Cause: %v, want the forced unload", cause)
	}
	if r := <-aDone; !strings.HasPrefix(r.got, "503 ") || !r.closes {
		t.Fatalf("aborted client: %s (closes %v), want 503 closing the connection", r.got, r.closes)
	}
	if err := bctx.Err(); err != nil {
		t.Fatalf("the other module's request ended with the abort: %v", err)
	}
	close(b.release)
	if r := <-bDone; r.got != "200 done" || r.closes {
		t.Fatalf("other client: %s (closes %v), want 200 done on a kept connection", r.got, r.closes)
	}
}

// An Abort that reaches a request after its handler returned and was
// answered (parked there by the test hook) must leave the connection's
// context alone: the connection carries the next request, which must be
// served with a live context. Without that check, the next request on
// the connection would be refused (or find its context ended).
func TestAbortAfterAnswerSparesConnection(t *testing.T) {
	parked, resume, aborted := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var park sync.Once
	web.SetTestHooks(func() { park.Do(func() { close(parked); <-resume }) }, func() { close(aborted) })
	t.Cleanup(func() { web.SetTestHooks(nil, nil) }) // after the fixture's cleanup: the server is closed
	f := newFixture(t, web.Config{})
	f.load(t, routeModule("quick", "1", map[string]http.Handler{"GET /quick": liveOrFail}))
	c := f.srv.Client()
	first := make(chan string, 1)
	go func() { got, _, _ := getOn(t, c, f.srv.URL+"/quick"); first <- got }()
	<-parked
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	abortDone := make(chan int, 1)
	go func() { abortDone <- f.rt.Abort(ctx, "quick") }()
	<-aborted
	close(resume)
	if n := <-abortDone; n != 1 {
		t.Fatalf("Abort: %d, want 1", n)
	}
	if got := <-first; got != "200 ok" {
		t.Fatalf("first request: %s, want 200 ok", got)
	}
	got, closes, reused := getOn(t, c, f.srv.URL+"/quick")
	if !reused {
		t.Fatal("the second request did not reuse the connection: the test shows nothing")
	}
	if got != "200 ok" || closes {
		t.Fatalf("next request on the connection: %s (closes %v), want 200 ok", got, closes)
	}
}

// headerDropper is middleware that hands the rest of the chain a writer
// of its own and copies back only the status and body: the Connection:
// close of an aborted route's answer is lost, and the connection, whose
// context Abort ended, stays open. The next module request on it is
// refused with 503 and the connection closed; the one after that, on a
// new connection, is served.
type headerDropper struct{}

func (headerDropper) Init(k *raceless.Kernel) error {
	return web.RegisterMiddleware(k, mwFunc(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	}))
}
func (headerDropper) Exit() (int, error) { return 0, nil }

func TestAbortedConnectionRefusesNextRequest(t *testing.T) {
	f := newFixture(t, web.Config{Middleware: []string{"dropper"}})
	slow := &ctxRecorder{entered: make(chan context.Context, 1), release: make(chan struct{})}
	f.load(t, routeModule("slow", "1", map[string]http.Handler{"GET /slow": slow}))
	f.load(t, routeModule("fine", "1", map[string]http.Handler{"GET /fine": liveOrFail}))
	f.load(t, raceless.Native(raceless.Info{Name: "dropper"}, func() raceless.Module { return headerDropper{} }))
	c := f.srv.Client()
	first := make(chan string, 1)
	go func() {
		got, closes, _ := getOn(t, c, f.srv.URL+"/slow")
		first <- fmt.Sprintf("%s (closes %v)", got, closes)
	}()
	<-slow.entered
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	if n := f.rt.Abort(ctx, "slow"); n != 1 {
		t.Fatalf("Abort: %d, want 1", n)
	}
	if got := <-first; !strings.HasPrefix(got, "503 ") || !strings.HasSuffix(got, "(closes false)") {
		t.Fatalf("aborted request: %s, want 503 with its Connection: close dropped by the middleware", got)
	}
	got, closes, reused := getOn(t, c, f.srv.URL+"/fine")
	if !reused {
		t.Fatal("the second request did not reuse the connection: the test shows nothing")
	}
	if !strings.HasPrefix(got, "503 ") || !closes {
		t.Fatalf("next request on the aborted connection: %s (closes %v), want 503 closing it", got, closes)
	}
	if got, _, reused := getOn(t, c, f.srv.URL+"/fine"); got != "200 ok" || reused {
		t.Fatalf("request after: %s (reused %v), want 200 ok on a new connection", got, reused)
	}
}

// On HTTP/2 the streams of a connection share its context, so Abort must
// not end it there: with ConnContext installed, aborting one module's
// request leaves another module's request on the same connection
// running, and it completes.
func TestAbortOnHTTP2SparesOtherStreams(t *testing.T) {
	f := newFixtureStarted(t, web.Config{}, func(srv *httptest.Server) {
		srv.EnableHTTP2 = true
		srv.Config.ConnContext = web.ConnContext
		srv.StartTLS()
	})
	srv, rt := f.srv, f.rt
	a := &ctxRecorder{entered: make(chan context.Context, 1), release: make(chan struct{})}
	b := &ctxRecorder{entered: make(chan context.Context, 1), release: make(chan struct{})}
	f.load(t, routeModule("a", "1", map[string]http.Handler{"GET /a": a}))
	f.load(t, routeModule("b", "1", map[string]http.Handler{"GET /b": b}))
	c := srv.Client()
	type result struct {
		got    string
		reused bool
	}
	aDone, bDone := make(chan result, 1), make(chan result, 1)
	go func() { got, _, reused := getOn(t, c, srv.URL+"/a"); aDone <- result{got, reused} }()
	actx := <-a.entered
	go func() { got, _, reused := getOn(t, c, srv.URL+"/b"); bDone <- result{got, reused} }()
	bctx := <-b.entered
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	if n := rt.Abort(ctx, "a"); n != 1 {
		t.Fatalf("Abort: %d, want 1", n)
	}
	if actx.Err() == nil {
		t.Fatal("the aborted request's context did not end")
	}
	if r := <-aDone; !strings.HasPrefix(r.got, "503 ") {
		t.Fatalf("aborted client: %s, want 503", r.got)
	}
	if err := bctx.Err(); err != nil {
		t.Fatalf("the other stream's context ended with the abort: %v", err)
	}
	close(b.release)
	r := <-bDone
	if !r.reused {
		t.Fatal("the second request did not share the first's connection: the test shows nothing")
	}
	if r.got != "200 done" {
		t.Fatalf("other stream: %s, want 200 done", r.got)
	}
}

// ConnContext must not hang a cancellable context per connection under a
// base context that can be cancelled (package context would watch the
// base for it, in a goroutine, for as long as the server runs): there,
// requests get a context of their own. Checked with goleak once the
// connection is closed.
func TestConnContextUnderCancellableBase(t *testing.T) {
	base, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	closed := make(chan struct{})
	f := newFixtureStarted(t, web.Config{}, func(srv *httptest.Server) {
		srv.Config.BaseContext = func(net.Listener) context.Context { return waitOnly{base} }
		srv.Config.ConnContext = web.ConnContext
		srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				close(closed)
			}
		}
		srv.Start()
	})
	f.load(t, routeModule("quick", "1", map[string]http.Handler{"GET /quick": liveOrFail}))
	before := goleak.IgnoreCurrent()
	tr := &http.Transport{}
	if got, _, _ := getOn(t, &http.Client{Transport: tr}, f.srv.URL+"/quick"); got != "200 ok" {
		t.Fatalf("request: %s, want 200 ok", got)
	}
	tr.CloseIdleConnections()
	<-closed
	if err := goleak.Find(before); err != nil {
		t.Fatalf("left behind by one connection: %v", err)
	}
}

// waitOnly is a context package context cannot see into (no values, so
// not the cancelCtx underneath; no AfterFunc): it watches it with a
// goroutine, as it would any context not its own. (Under its own
// cancelCtx, it would register a child there, until the server's base
// context ends: the same leak, of memory.)
type waitOnly struct{ context.Context }

func (waitOnly) Value(any) any { return nil }
