package httpwasm_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm/httpwasm"
)

// logRecorder keeps the messages logged through it.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Message)
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// count returns how many messages were exactly msg.
func (l *logRecorder) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// lifeGuest exports raceless's lifecycle functions, each logging its
// name; raceless_init sets a global to 1 and raceless_start adds 1, and
// handle_request passes to next only when the global is 2 (both ran on
// this member), else answers 500. raceless_init returns INIT.
const lifeGuest = `
  (global $state (mut i32) (i32.const 0))
  (data (i32.const 200) "init")
  (data (i32.const 208) "start")
  (data (i32.const 216) "stop")
  (data (i32.const 224) "exit")
  (func (export "raceless_init") (result i32)
    (global.set $state (i32.const 1))
    (call $log (i32.const 0) (i32.const 200) (i32.const 4))
    (i32.const INIT))
  (func (export "raceless_start")
    (global.set $state (i32.add (global.get $state) (i32.const 1)))
    (call $log (i32.const 0) (i32.const 208) (i32.const 5)))
  (func (export "raceless_stop")
    (call $log (i32.const 0) (i32.const 216) (i32.const 4)))
  (func (export "raceless_exit") (result i32)
    (call $log (i32.const 0) (i32.const 224) (i32.const 4))
    (i32.const 0))
  (func (export "handle_request") (result i64)
    (if (result i64) (i32.eq (global.get $state) (i32.const 2))
      (then (i64.const 1))
      (else (call $set_status_code (i32.const 500)) (i64.const 0))))
  (func (export "handle_response") (param i32 i32))
`

func newLogFixture(t *testing.T) (*fixture, *logRecorder) {
	t.Helper()
	rec := &logRecorder{}
	return newFixtureWith(t, slog.New(rec), nil), rec
}

// raceless_init and raceless_start run on every pool member as it starts
// (the pool grows one member at a time while requests find all busy, up
// to pool=N given at load), raceless_stop and raceless_exit on every
// member when the module is unloaded.
func TestLifecycleExportsPerMember(t *testing.T) {
	f, logs := newLogFixture(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
			<-release
		case <-release: // the fourth request, after the release
		}
		io.WriteString(w, "inner")
	})
	src := f.source(t, "life", "1", wat(t, strings.Replace(lifeGuest, "INIT", "0", 1)),
		httpwasm.Options{Patterns: []string{"/life"}, PoolSize: 1, Next: next})
	if _, err := f.h.Load(context.Background(), src, map[string]string{"pool": "3"}); err != nil {
		t.Fatal(err)
	}
	if p := f.rt.Pools(); len(p) != 1 || p[0].Size != 1 || p[0].Max != 3 {
		t.Fatalf("after load: %+v, want 1 member of at most 3", p)
	}
	if i, s := logs.count("http-wasm guest: init"), logs.count("http-wasm guest: start"); i != 1 || s != 1 {
		t.Fatalf("after load: %d inits, %d starts, want 1 and 1", i, s)
	}
	// Three requests held in the next handler hold three members: the
	// pool grows to its size, each new member initialised and started.
	codes := make(chan int, 4)
	get := func() {
		resp, err := f.srv.Client().Get(f.srv.URL + "/life")
		if err != nil {
			codes <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes <- resp.StatusCode
	}
	for range 3 {
		go get()
	}
	for range 3 {
		<-entered
	}
	if p := f.rt.Pools(); p[0].Size != 3 || p[0].Busy != 3 {
		t.Fatalf("three requests in flight: %+v, want 3 members, 3 busy", p)
	}
	if i, s := logs.count("http-wasm guest: init"), logs.count("http-wasm guest: start"); i != 3 || s != 3 {
		t.Fatalf("3 members: %d inits, %d starts", i, s)
	}
	// A fourth waits for a member: the pool does not grow past 3.
	go get()
	close(release)
	for range 4 {
		if c := <-codes; c != 200 {
			t.Fatalf("request: %d, want 200 (the member ran init and start)", c)
		}
	}
	if p := f.rt.Pools(); p[0].Size != 3 {
		t.Fatalf("pool grew past pool=3: %+v", p)
	}
	if n := logs.count("http-wasm guest: exit"); n != 0 {
		t.Fatalf("%d exits before unload", n)
	}
	if err := f.h.Unload(context.Background(), "life", raceless.UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if st, ex := logs.count("http-wasm guest: stop"), logs.count("http-wasm guest: exit"); st != 3 || ex != 3 {
		t.Fatalf("after unload: %d stops, %d exits, want 3 and 3", st, ex)
	}
}

// A raceless_init that refuses fails the load, with the error its code
// stands for (-16: raceless.ErrBusy), naming the module.
func TestLifecycleInitRefuses(t *testing.T) {
	f, _ := newLogFixture(t)
	src := f.source(t, "refuser", "1", wat(t, strings.Replace(lifeGuest, "INIT", "-16", 1)),
		httpwasm.Options{Patterns: []string{"/r"}, PoolSize: 2})
	_, err := f.h.Load(context.Background(), src, nil)
	if !errors.Is(err, raceless.ErrBusy) || !strings.Contains(err.Error(), "refuser") || !strings.Contains(err.Error(), "raceless_init") {
		t.Fatalf("load: %v, want ErrBusy naming refuser and raceless_init", err)
	}
	if _, ok := f.h.Module("refuser"); ok {
		t.Fatal("the refused module is loaded")
	}
}

// pool=N is checked (1 to MaxPool) and is not part of get_config's
// parameters; a lifecycle export of the wrong type is refused.
func TestPoolParam(t *testing.T) {
	f := newFixture(t)
	src := f.source(t, "cfg", "1", wat(t, watRoute), httpwasm.Options{Patterns: []string{"/c"}, PoolSize: 1})
	for _, bad := range []string{"0", "1025", "x"} {
		if _, err := f.h.Load(context.Background(), src, map[string]string{"pool": bad}); !errors.Is(err, raceless.ErrInvalid) {
			t.Fatalf("pool=%s: %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := f.h.Load(context.Background(), src, map[string]string{"pool": "2"}); err != nil {
		t.Fatal(err)
	}
	if p := f.rt.Pools(); len(p) != 1 || p[0].Max != 2 {
		t.Fatalf("pool=2: %+v", p)
	}
	if r := f.get(t, "/c"); r.code != 201 || r.body != "wat GET /c " {
		t.Fatalf("get_config with only pool given: %d %q, want an empty configuration", r.code, r.body)
	}
	_, err := f.rt.Source(context.Background(), raceless.Info{Name: "badexit"}, wat(t, `
  (func (export "raceless_exit"))
  (func (export "handle_request") (result i64) (i64.const 0))
  (func (export "handle_response") (param i32 i32))`), httpwasm.Options{Patterns: []string{"/b"}})
	if err == nil || !strings.Contains(err.Error(), "raceless_exit") {
		t.Fatalf("raceless_exit without a result: %v, want refused", err)
	}
}
