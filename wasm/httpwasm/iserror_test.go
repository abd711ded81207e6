package httpwasm_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/raceless/raceless/wasm/httpwasm"
)

// errGuest is middleware whose handle_response records is_error in the
// response header X-Err ("0" or "1").
const errGuest = `
  (data (i32.const 300) "X-Err")
  (data (i32.const 310) "01")
  (func (export "handle_request") (result i64) (i64.const 1))
  (func (export "handle_response") (param $ctx i32) (param $err i32)
    (call $set_header_value (i32.const 1) (i32.const 300) (i32.const 5)
      (i32.add (i32.const 310) (local.get $err)) (i32.const 1)))
`

// handle_response's is_error is 1 when the next handler failed: it
// panicked (the client then gets a generic 500), answered a 5xx, or is a
// wasm route that trapped; 0 when it answered.
func TestHandleResponseIsError(t *testing.T) {
	f := newFixture(t)
	bin := wat(t, errGuest)
	for _, tc := range []struct {
		name     string
		next     http.Handler
		code     int
		body     string
		isErrHdr string
	}{
		{"ok", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "fine") }), 200, "fine", "0"},
		{"notfound", http.NotFoundHandler(), 404, "404 page not found\n", "0"},
		{"status500", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "inner failure", http.StatusInternalServerError)
		}), 500, "inner failure\n", "1"},
		{"panic", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "partial")
			panic("inner route broke")
		}), 500, "internal server error\n", "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.load(t, f.source(t, "mw_"+tc.name, "1", bin, httpwasm.Options{Patterns: []string{"/" + tc.name}, PoolSize: 1, Next: tc.next}))
			r := f.get(t, "/"+tc.name)
			if r.code != tc.code || r.body != tc.body || r.header.Get("X-Err") != tc.isErrHdr {
				t.Fatalf("%d %q X-Err=%q, want %d %q X-Err=%q", r.code, r.body, r.header.Get("X-Err"), tc.code, tc.body, tc.isErrHdr)
			}
		})
	}
}

// A next handler that cuts its response (http.ErrAbortHandler, as the
// router does for a route aborted after it began answering) still closes
// the client's connection after handle_response ran: no response.
func TestNextAbortClosesConnection(t *testing.T) {
	f := newFixture(t)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		panic(http.ErrAbortHandler)
	})
	f.load(t, f.source(t, "mw_abort", "1", wat(t, errGuest), httpwasm.Options{Patterns: []string{"/abort"}, PoolSize: 1, Next: next}))
	resp, err := f.srv.Client().Get(f.srv.URL + "/abort")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got a response (%d %v), want the connection closed", resp.StatusCode, resp.Header)
	}
	// The member went back to the pool: the module still serves.
	f.load(t, f.source(t, "mw_ok", "1", wat(t, errGuest), httpwasm.Options{Patterns: []string{"/ok"}, PoolSize: 1, Next: text200{}}))
	if r := f.get(t, "/ok"); r.code != 200 || r.header.Get("X-Err") != "0" {
		t.Fatalf("/ok: %d %q", r.code, r.header.Get("X-Err"))
	}
	if p := f.rt.Pools(); len(p) != 2 || p[0].Busy != 0 || p[1].Busy != 0 {
		t.Fatalf("Pools after the abort: %+v, want no busy member", p)
	}
}

type text200 struct{}

func (text200) ServeHTTP(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }

// In the router's chain, a wasm route that traps behind wasm middleware
// makes is_error 1 (the route's 500), and one that answers makes it 0.
func TestMiddlewareIsErrorInChain(t *testing.T) {
	f := newFixtureWith(t, nil, []string{"mw"})
	f.load(t, f.source(t, "mw", "1", wat(t, errGuest), httpwasm.Options{Middleware: true, PoolSize: 1}))
	trap := wat(t, `(func (export "handle_request") (result i64) unreachable) (func (export "handle_response") (param i32 i32))`)
	f.load(t, f.source(t, "trapper", "1", trap, httpwasm.Options{Patterns: []string{"/trap"}, PoolSize: 1}))
	f.load(t, f.source(t, "route", "1", wat(t, watRoute), httpwasm.Options{Patterns: []string{"/w"}, PoolSize: 1}))
	if r := f.get(t, "/trap"); r.code != 500 || r.header.Get("X-Err") != "1" {
		t.Fatalf("trapping route: %d %q X-Err=%q, want 500 and 1", r.code, r.body, r.header.Get("X-Err"))
	}
	if r := f.get(t, "/w"); r.code != 201 || r.header.Get("X-Err") != "0" {
		t.Fatalf("answering route: %d %q X-Err=%q, want 201 and 0", r.code, r.body, r.header.Get("X-Err"))
	}
}
