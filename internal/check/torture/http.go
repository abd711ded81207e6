package torture

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/raceless/raceless/web"
)

// The HTTP side of the run (unless Options.NoHTTP). Every test module
// registers the route /NAME (a step of its Init), whose handler is module
// code checked like a symbol call (symVal.ServeHTTP). Package web's Router
// serves the routes two ways, at random: called directly (each request
// with a context of its own) and from a loopback server with
// web.ConnContext (the connection's context, as the daemon serves them).
// A forced unload aborts the module's requests first (Router.Abort), as
// the daemon's does. Checked: the handler runs only while its instance
// may run (route-after-exit; a forced unload's stale request is an
// event), a non-forced Exit finds no request inside (exit-with-ref, the
// Router's reference on the module), and every answer is 200 "ok", 404
// or 503, or a response cut off while an Abort ran (http).

// httpSide is the Router and its server.
type httpSide struct {
	router *web.Router
	srv    *http.Server
	url    string // the server's, "http://127.0.0.1:PORT"
	client *http.Client
	// aborts counts Router.Abort calls begun: a request cut off with
	// no Abort begun while it ran is a violation.
	aborts atomic.Int64
}

// abortGrace is how long a forced unload lets the aborted handlers return
// (the daemon gives a second; the test handlers wait on their context).
const abortGrace = 100 * time.Millisecond

func (r *runner) setupHTTP() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	discard := slog.New(slog.DiscardHandler)
	s := &httpSide{router: web.New(r.host, web.Config{Logger: discard})}
	s.srv = &http.Server{Handler: s.router, ConnContext: web.ConnContext,
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	s.url = "http://" + ln.Addr().String()
	s.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: r.opts.Workers}}
	go s.srv.Serve(ln)
	r.web = s
	return nil
}

// teardownHTTP closes the server and its connections, and the Router.
func (r *runner) teardownHTTP() {
	s := r.web
	s.client.Transport.(*http.Transport).CloseIdleConnections()
	s.srv.Close()
	s.router.Close()
}

// ServeHTTP is the route's handler: module code entered as a call is
// (counted inside while it runs), which now and then waits up to the
// number of microseconds in the query's wait, or until its context ends
// (Abort), so that unloads meet requests in flight.
func (s *symVal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := s.m
	m.inflight.Add(1)
	defer m.inflight.Add(-1)
	s.check("route")
	if us, _ := strconv.Atoi(r.URL.Query().Get("wait")); us > 0 {
		t := time.NewTimer(time.Duration(us) * time.Microsecond)
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
		s.check("route") // still: the Router holds the reference all along
	}
	io.WriteString(w, "ok")
}

// opHTTP GETs a test module's route, directly or through the server.
func (w *worker) opHTTP(ctx context.Context) {
	s := w.r.web
	path := "/" + w.spec().name
	if w.rng.IntN(3) == 0 {
		path += "?wait=" + strconv.Itoa(w.rng.IntN(300))
	}
	octx, cancel := w.r.opContext(ctx)
	defer cancel()
	aborts := s.aborts.Load()
	var code int
	var body string
	var cut bool
	if w.rng.IntN(2) == 0 {
		code, body, cut = w.httpDirect(octx, path)
	} else {
		code, body, cut = w.httpServer(octx, path)
	}
	switch {
	case cut && octx.Err() != nil:
		w.hung(octx, "http "+path, octx.Err())
		return
	case cut:
		w.outcomes["http/cut"]++
		if s.aborts.Load() == aborts {
			w.r.violate("http", "GET %s: response cut off with no Abort meanwhile", path)
		}
		return
	}
	w.outcomes["http/"+strconv.Itoa(code)]++
	switch {
	case code == http.StatusOK && body != "ok":
		w.r.violate("http", "GET %s: 200 with body %q", path, body)
	case code != http.StatusOK && code != http.StatusNotFound && code != http.StatusServiceUnavailable:
		w.r.violate("http", "GET %s: status %d %q", path, code, body)
	}
}

// httpDirect serves path with the Router called in this goroutine. cut:
// the Router ended the response by http.ErrAbortHandler (an aborted
// request whose handler had written), as a server would recover it.
func (w *worker) httpDirect(ctx context.Context, path string) (code int, body string, cut bool) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", path, nil).WithContext(ctx)
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler { //nolint:errorlint // net/http compares it so too
				panic(p)
			}
			cut = true
		}
	}()
	w.r.web.router.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String(), false
}

// httpServer GETs path from the loopback server. cut: no whole response.
func (w *worker) httpServer(ctx context.Context, path string) (code int, body string, cut bool) {
	req, err := http.NewRequestWithContext(ctx, "GET", w.r.web.url+path, nil)
	if err != nil {
		w.r.violate("panic", "GET %s: %v", path, err)
		return 0, "", false
	}
	resp, err := w.r.web.client.Do(req)
	if err != nil {
		return 0, "", true
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", true
	}
	return resp.StatusCode, string(b), false
}

// abortRequests aborts the requests in flight on module name's routes
// before its forced unload, as the daemon does.
func (w *worker) abortRequests(ctx context.Context, name string) {
	s := w.r.web
	s.aborts.Add(1)
	actx, cancel := context.WithTimeout(ctx, abortGrace)
	defer cancel()
	s.router.Abort(actx, name)
}
