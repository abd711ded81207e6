package wasm_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) {
		if cacheDir != "" {
			_ = os.RemoveAll(cacheDir)
		}
	}))
}

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// env is a host and a loader, closed at the end of the test.
type env struct {
	t    testing.TB
	h    *raceless.Host
	l    *wasm.Loader
	logs *logBuf
}

func newEnv(t testing.TB, cfg wasm.Config) *env {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = sharedCache(t)
	}
	logs := &logBuf{}
	h := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	l, err := wasm.NewLoader(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, h: h, l: l, logs: logs}
	t.Cleanup(func() {
		if forced, err := h.Shutdown(context.Background()); err != nil || len(forced) > 0 {
			t.Errorf("shutdown: forced %v, %v", forced, err)
		}
		if err := l.Close(context.Background()); err != nil {
			t.Errorf("loader close: %v", err)
		}
	})
	return e
}

var (
	cacheOnce sync.Once
	cacheDir  string
)

// sharedCache is one compilation cache directory for the whole test binary,
// so each module is compiled once.
func sharedCache(t testing.TB) string {
	cacheOnce.Do(func() {
		d, err := os.MkdirTemp("", "raceless-wasm-cache-")
		if err != nil {
			t.Fatal(err)
		}
		cacheDir = d
	})
	return cacheDir
}

func (e *env) load(dir string, params map[string]string) (*raceless.Instance, error) {
	e.t.Helper()
	src, err := e.l.Open(wasmtest.Build(e.t, dir))
	if err != nil {
		e.t.Fatal(err)
	}
	return e.h.Load(context.Background(), src, params)
}

func (e *env) mustLoad(dir string, params map[string]string) *raceless.Instance {
	e.t.Helper()
	m, err := e.load(dir, params)
	if err != nil {
		e.t.Fatalf("load %s: %v", dir, err)
	}
	return m
}

// call calls a symbol through the counting path, with a copy of args as
// the stack (the Func may overwrite it): args stay the caller's.
func (e *env) call(name string, args ...uint64) ([]uint64, error) {
	b, err := e.h.Acquire(raceless.KindSymbol, name)
	if err != nil {
		return nil, err
	}
	defer b.Release()
	return b.Value().(raceless.Func)(context.Background(), slices.Clone(args))
}
