package httpwasm_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/testdeadline"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm/httpwasm"
	"github.com/raceless/raceless/web"
	"github.com/raceless/raceless/web/webtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// watImports declares the http_handler imports the WAT guests use,
// written from the specification only.
const watImports = `
  (import "http_handler" "get_method" (func $get_method (param i32 i32) (result i32)))
  (import "http_handler" "get_uri" (func $get_uri (param i32 i32) (result i32)))
  (import "http_handler" "get_config" (func $get_config (param i32 i32) (result i32)))
  (import "http_handler" "write_body" (func $write_body (param i32 i32 i32)))
  (import "http_handler" "set_status_code" (func $set_status_code (param i32)))
  (import "http_handler" "set_header_value" (func $set_header_value (param i32 i32 i32 i32 i32)))
  (import "http_handler" "add_header_value" (func $add_header_value (param i32 i32 i32 i32 i32)))
  (import "http_handler" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "wat ")
  (data (i32.const 16) "X-Guest")
  (data (i32.const 32) "wat")
  (data (i32.const 48) " ")
  (data (i32.const 64) "Bad Name")
  (data (i32.const 80) "X-Mw")
  (data (i32.const 96) "seen")
`

// watRoute answers 201 with X-Guest: wat and "wat METHOD URI CONFIG".
const watRoute = `
  (func (export "handle_request") (result i64)
    (local $n i32)
    (call $set_status_code (i32.const 201))
    (call $set_header_value (i32.const 1) (i32.const 16) (i32.const 7) (i32.const 32) (i32.const 3))
    (call $write_body (i32.const 1) (i32.const 0) (i32.const 4))
    (local.set $n (call $get_method (i32.const 1024) (i32.const 1024)))
    (call $write_body (i32.const 1) (i32.const 1024) (local.get $n))
    (call $write_body (i32.const 1) (i32.const 48) (i32.const 1))
    (local.set $n (call $get_uri (i32.const 1024) (i32.const 1024)))
    (call $write_body (i32.const 1) (i32.const 1024) (local.get $n))
    (call $write_body (i32.const 1) (i32.const 48) (i32.const 1))
    (local.set $n (call $get_config (i32.const 1024) (i32.const 1024)))
    (call $write_body (i32.const 1) (i32.const 1024) (local.get $n))
    (i64.const 0))
  (func (export "handle_response") (param i32 i32))
`

// wat assembles a module from its functions with wat2wasm.
func wat(t *testing.T, funcs string) []byte {
	t.Helper()
	tool, err := exec.LookPath("wat2wasm")
	if err != nil {
		t.Skip("wat2wasm is not installed (Debian: apt-get install wabt; .ci/run installs it)")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "g.wat")
	if err := os.WriteFile(src, []byte("(module"+watImports+funcs+")"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "g.wasm")
	if b, err := exec.Command(tool, src, "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

type fixture struct {
	h   *raceless.Host
	rt  *httpwasm.Runtime
	srv *httptest.Server
}

func newFixture(t *testing.T) *fixture { return newFixtureWith(t, nil, nil) }

// newFixtureWith is newFixture with the host logging to hostLog (nil:
// nowhere) and the router's middleware chain set to middleware.
func newFixtureWith(t *testing.T, hostLog *slog.Logger, middleware []string) *fixture {
	t.Helper()
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	if hostLog == nil {
		hostLog = discard
	}
	h := raceless.New(raceless.WithLogger(hostLog))
	router := web.New(h, web.Config{Logger: discard, Middleware: middleware})
	rt, err := httpwasm.NewRuntime(context.Background(), httpwasm.Config{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(router)
	srv.Config.ConnContext = web.ConnContext
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		router.Close()
		ctx, cancel := testdeadline.Context(t)
		defer cancel()
		if _, err := h.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		rt.Close(ctx)
	})
	return &fixture{h: h, rt: rt, srv: srv}
}

func (f *fixture) source(t *testing.T, name, version string, bin []byte, o httpwasm.Options) raceless.Source {
	t.Helper()
	src, err := f.rt.Source(context.Background(), raceless.Info{Name: name, Version: version}, bin, o)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func (f *fixture) load(t *testing.T, src raceless.Source) {
	t.Helper()
	if _, err := f.h.Load(context.Background(), src, nil); err != nil {
		t.Fatal(err)
	}
}

type reply struct {
	code   int
	header http.Header
	body   string
}

func (f *fixture) get(t *testing.T, path string) reply {
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
	return reply{resp.StatusCode, resp.Header, string(b)}
}

// A guest written in WAT from the specification alone serves a route:
// status, response header, body, method, URI and configuration.
func TestWATRoute(t *testing.T) {
	f := newFixture(t)
	src := f.source(t, "watroute", "1", wat(t, watRoute), httpwasm.Options{Patterns: []string{"GET /w"}, Config: []byte("cfg"), PoolSize: 2})
	f.load(t, src)
	if p := f.rt.Pools(); len(p) != 1 || p[0].Module != "watroute" || p[0].Size != 1 || p[0].Max != 2 || p[0].Busy != 0 {
		t.Fatalf("Pools: %+v", p)
	}
	r := f.get(t, "/w?q=1")
	if r.code != 201 || r.header.Get("X-Guest") != "wat" || r.body != "wat GET /w?q=1 cfg" {
		t.Fatalf("got %d %v %q", r.code, r.header, r.body)
	}
	if err := f.h.Unload(context.Background(), "watroute", raceless.UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := f.get(t, "/w"); r.code != 404 {
		t.Fatalf("after unload: %d, want 404", r.code)
	}
	if p := f.rt.Pools(); len(p) != 0 {
		t.Fatalf("Pools after unload: %+v", p)
	}
	// The same source again: its compiled code was freed with the last
	// instance, and is compiled anew.
	f.load(t, src)
	if r := f.get(t, "/w"); r.code != 201 {
		t.Fatalf("reloaded: %d", r.code)
	}
}

// A guest in plain Go (go:wasmexport, package guest) serves a route from
// a pool; each member keeps its own state; a panicking request fails 500,
// taints the module, and the pool keeps serving.
func TestGoRoute(t *testing.T) {
	bin, err := os.ReadFile(wasmtest.Build(t, "examples/wasm/httphello"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	f.load(t, f.source(t, "httphello", "1", bin, httpwasm.Options{Patterns: []string{"/hello", "/panic"}, Config: []byte("c"), PoolSize: 1}))
	for i := 1; i <= 2; i++ {
		r := f.get(t, "/hello")
		want := fmt.Sprintf("hello from go: GET /hello config=c served=%d agent=Go-http-client/1.1", i)
		if r.code != 200 || r.body != want || r.header.Get("X-Guest") != "go" {
			t.Fatalf("request %d: %d %q, want %q", i, r.code, r.body, want)
		}
	}
	if r := f.get(t, "/panic"); r.code != 500 || strings.Contains(r.body, "asked to") {
		t.Fatalf("panic: %d %q, want 500 with a generic body", r.code, r.body)
	}
	m, _ := f.h.Module("httphello")
	if len(m.Taints()) == 0 {
		t.Fatal("module not tainted")
	}
	// The one member was replaced: a fresh instance, its count from 1.
	if r := f.get(t, "/hello"); r.code != 200 || !strings.Contains(r.body, "served=1 ") {
		t.Fatalf("after the panic: %d %q", r.code, r.body)
	}
}

// Guests that break the ABI or their limits fail their request only.
func TestBadGuests(t *testing.T) {
	ok := wat(t, watRoute)
	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"status", `(call $set_status_code (i32.const 42)) (i64.const 0)`, 500},
		{"header", `(call $set_header_value (i32.const 1) (i32.const 64) (i32.const 8) (i32.const 32) (i32.const 3)) (i64.const 0)`, 500},
		{"trap", `unreachable`, 500},
		{"loop", `(loop $l (br $l)) (i64.const 0)`, 504},
		{"outofrange", `(call $write_body (i32.const 1) (i32.const 65530) (i32.const 100)) (i64.const 0)`, 500},
		// memory.grow past the member's limit returns -1: the guest sees it.
		{"memory", `(if (i32.eq (memory.grow (i32.const 100000)) (i32.const -1)) (then (call $set_status_code (i32.const 507)))) (i64.const 0)`, 507},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			bin := wat(t, `(func (export "handle_request") (result i64) `+tc.body+`) (func (export "handle_response") (param i32 i32))`)
			f.load(t, f.source(t, "bad", "1", bin, httpwasm.Options{Patterns: []string{"/bad"}, PoolSize: 1, Timeout: 200 * time.Millisecond}))
			f.load(t, f.source(t, "good", "1", ok, httpwasm.Options{Patterns: []string{"/good"}, PoolSize: 1}))
			for range 2 { // the member is replaced after a failure: the second fails alike
				if r := f.get(t, "/bad"); r.code != tc.want {
					t.Fatalf("%d %q, want %d", r.code, r.body, tc.want)
				}
			}
			if r := f.get(t, "/good"); r.code != 201 {
				t.Fatalf("the other module: %d", r.code)
			}
		})
	}
}

// A guest returning next=1 is middleware: the next handler answers, and
// handle_response (given the request context) changes its response.
func TestMiddleware(t *testing.T) {
	f := newFixture(t)
	bin := wat(t, `
  (func (export "handle_request") (result i64) (i64.const 0x700000001))
  (func (export "handle_response") (param $ctx i32) (param $err i32)
    (if (i32.eq (local.get $ctx) (i32.const 7))
      (then (call $add_header_value (i32.const 1) (i32.const 80) (i32.const 4) (i32.const 96) (i32.const 4)))))`)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "inner") })
	f.load(t, f.source(t, "mw", "1", bin, httpwasm.Options{Patterns: []string{"/mw/"}, Next: next}))
	if r := f.get(t, "/mw/x"); r.code != 200 || r.body != "inner" || r.header.Get("X-Mw") != "seen" {
		t.Fatalf("%d %v %q", r.code, r.header, r.body)
	}
}

// Host.Replace of a wasm route module under concurrent load: 100 swaps,
// no failed request, and each swap's next request is served by the new
// version.
func TestWasmSwapUnderLoad(t *testing.T) {
	f := newFixture(t)
	version := func(i int) raceless.Source {
		return f.source(t, "svc", fmt.Sprint(i), wat(t, watRoute), httpwasm.Options{Patterns: []string{"GET /v"}, Config: []byte(fmt.Sprint(i)), PoolSize: 2})
	}
	f.load(t, version(0))
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	load := webtest.StartLoad(f.srv.Client(), f.srv.URL+"/v", 4, 201)
	defer load.Stop()
	for i := 1; i <= 100; i++ {
		if _, err := f.h.Replace(ctx, "svc", version(i), nil, raceless.ReplaceOptions{}); err != nil {
			t.Fatalf("swap %d: %v", i, err)
		}
		if r := f.get(t, "/v"); r.code != 201 || !strings.HasSuffix(r.body, " "+fmt.Sprint(i)) {
			t.Fatalf("after swap %d: %d %q", i, r.code, r.body)
		}
	}
	if total, failed, first := load.Stop(); failed != 0 {
		t.Fatalf("%d of %d requests failed (first: %v)", failed, total, first)
	}
}

// Without Options.Config, get_config returns the module's parameters as
// a JSON object.
func TestConfigFromParams(t *testing.T) {
	f := newFixture(t)
	src, err := f.rt.Source(context.Background(), raceless.Info{Name: "cfg", Params: []raceless.ParamSpec{
		{Name: "greeting", Type: raceless.ParamString, Default: "hi"}}}, wat(t, watRoute), httpwasm.Options{Patterns: []string{"/c"}, PoolSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.h.Load(context.Background(), src, map[string]string{"greeting": "salut"}); err != nil {
		t.Fatal(err)
	}
	if r := f.get(t, "/c"); r.code != 201 || r.body != `wat GET /c {"greeting":"salut"}` {
		t.Fatalf("%d %q", r.code, r.body)
	}
}

// A wasm middleware module in the router's chain: the route behind it
// answers, and its handle_response changes the response.
func TestMiddlewareInChain(t *testing.T) {
	f := newFixtureWith(t, nil, []string{"mw"})
	bin := wat(t, `
  (func (export "handle_request") (result i64) (i64.const 0x700000001))
  (func (export "handle_response") (param $ctx i32) (param $err i32)
    (if (i32.eq (local.get $ctx) (i32.const 7))
      (then (call $add_header_value (i32.const 1) (i32.const 80) (i32.const 4) (i32.const 96) (i32.const 4)))))`)
	f.load(t, f.source(t, "mw", "1", bin, httpwasm.Options{Middleware: true, PoolSize: 1}))
	f.load(t, f.source(t, "route", "1", wat(t, watRoute), httpwasm.Options{Patterns: []string{"/w"}, PoolSize: 1}))
	if r := f.get(t, "/w"); r.code != 201 || r.body != "wat GET /w " || r.header.Get("X-Mw") != "seen" || r.header.Get("X-Guest") != "wat" {
		t.Fatalf("%d %v %q", r.code, r.header, r.body)
	}
}
