package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm/modinfo"
	"github.com/raceless/raceless/web/webtest"
)

// watGuest assembles an http-wasm route guest answering text, with a
// modinfo block naming it watroute and giving its route.
func watGuest(t *testing.T, text string) string {
	t.Helper()
	return watFile(t, fmt.Sprintf(`(module
  (import "http_handler" "write_body" (func $write_body (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) %q)
  (func (export "handle_request") (result i64)
    (call $write_body (i32.const 1) (i32.const 0) (i32.const %d))
    (i64.const 0))
  (func (export "handle_response") (param i32 i32)))`, text, len(text)),
		modinfo.Block{Info: raceless.Info{Name: "watroute", Version: "1"}, Routes: []string{"GET /wat"}, Pool: 2})
}

// watFile assembles wat and appends blk as its modinfo block.
func watFile(t *testing.T, wat string, blk modinfo.Block) string {
	t.Helper()
	tool, err := exec.LookPath("wat2wasm")
	if err != nil {
		t.Skip("wat2wasm is not installed (Debian: apt-get install wabt; .ci/run installs it)")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "g.wat")
	if err := os.WriteFile(src, []byte(wat), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, blk.Name+".wasm")
	if b, err := exec.Command(tool, src, "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	bin, err = modinfo.AppendBlock(bin, blk)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, bin, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// serve --http end to end: the default route module answers /; an
// http-wasm guest loaded with insmod serves its route, replace swaps it
// under load with no failed request, rmmod removes the route.
func TestServeHTTP(t *testing.T) {
	v1, v2 := watGuest(t, "v1"), watGuest(t, "v2")
	d := startDaemon(t, "--http", "127.0.0.1:0")
	var ping struct {
		HTTPAddr string `json:"http_addr"`
	}
	if err := json.Unmarshal([]byte(d.run("ping", "--json").ok(t).stdout), &ping); err != nil || ping.HTTPAddr == "" {
		t.Fatalf("ping --json: no http_addr (%v)", err)
	}
	base := "http://" + ping.HTTPAddr
	client := &http.Client{}
	defer client.CloseIdleConnections()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, "served by the module homepage") {
		t.Fatalf("/: %d %q", code, body)
	}
	d.run("insmod", v1).ok(t)
	if code, body := get("/wat"); code != 200 || body != "v1" {
		t.Fatalf("/wat: %d %q", code, body)
	}

	load := webtest.StartLoad(client, base+"/wat", 2, http.StatusOK)
	defer load.Stop()
	for i := range 10 {
		file := v2
		if i%2 == 1 {
			file = v1
		}
		r := d.run("replace", file)
		if r.code != 0 {
			t.Fatalf("replace %d: exit %d: %s", i, r.code, r.stderr)
		}
	}
	if total, failed, first := load.Stop(); failed != 0 {
		t.Fatalf("%d of %d requests failed during the swaps (first: %v)", failed, total, first)
	}
	if code, body := get("/wat"); code != 200 || body != "v1" {
		t.Fatalf("/wat after the swaps: %d %q", code, body)
	}
	d.run("rmmod", "watroute").ok(t)
	if code, _ := get("/wat"); code != 404 {
		t.Fatalf("/wat after rmmod: %d, want 404", code)
	}
}

// serve --http-middleware: requests fail closed (503) until the
// middleware is loaded, then pass through it (an http-wasm guest adding a
// response header) to the routes.
func TestServeHTTPMiddleware(t *testing.T) {
	mw := watFile(t, `(module
  (import "http_handler" "set_header_value" (func $set (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "X-Mw")
  (data (i32.const 16) "seen")
  (func (export "handle_request") (result i64) (i64.const 1))
  (func (export "handle_response") (param i32 i32)
    (call $set (i32.const 1) (i32.const 0) (i32.const 4) (i32.const 16) (i32.const 4))))`,
		modinfo.Block{Info: raceless.Info{Name: "watmw", Version: "1"}, Middleware: true})
	d := startDaemon(t, "--http", "127.0.0.1:0", "--http-middleware", "watmw")
	var ping struct {
		HTTPAddr string `json:"http_addr"`
	}
	if err := json.Unmarshal([]byte(d.run("ping", "--json").ok(t).stdout), &ping); err != nil || ping.HTTPAddr == "" {
		t.Fatalf("ping --json: no http_addr (%v)", err)
	}
	client := &http.Client{}
	defer client.CloseIdleConnections()
	get := func() *http.Response {
		t.Helper()
		resp, err := client.Get("http://" + ping.HTTPAddr + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if r := get(); r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("without the middleware: %d, want 503", r.StatusCode)
	}
	d.run("insmod", mw).ok(t)
	if r := get(); r.StatusCode != 200 || r.Header.Get("X-Mw") != "seen" {
		t.Fatalf("through the middleware: %d %v", r.StatusCode, r.Header)
	}
}

// The module parameter pool sets an http-wasm route module's pool size
// at load: a size out of range fails the load naming it; given in range,
// the module loads and serves, and modinfo lists the parameter. (The
// size itself is checked in package wasm/httpwasm, TestPoolParam and
// TestLifecycleExportsPerMember.)
func TestServeHTTPPoolParam(t *testing.T) {
	v1 := watGuest(t, "v1")
	d := startDaemon(t, "--http", "127.0.0.1:0")
	r := d.run("insmod", v1, "pool=0")
	if r.code == 0 || !strings.Contains(r.stderr, "pool") {
		t.Fatalf("insmod pool=0: exit %d: %s", r.code, r.stderr)
	}
	d.run("insmod", v1, "pool=3").ok(t)
	var ping struct {
		HTTPAddr string `json:"http_addr"`
	}
	if err := json.Unmarshal([]byte(d.run("ping", "--json").ok(t).stdout), &ping); err != nil || ping.HTTPAddr == "" {
		t.Fatalf("ping --json: no http_addr (%v)", err)
	}
	client := &http.Client{}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + ping.HTTPAddr + "/wat")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "v1" {
		t.Fatalf("/wat with pool=3: %d %q", resp.StatusCode, b)
	}
	out := d.run("modinfo", "watroute").ok(t).stdout
	if !strings.Contains(out, "pool:http-wasm: instances in the pool") {
		t.Fatalf("modinfo watroute lists no pool parameter:\n%s", out)
	}
}
