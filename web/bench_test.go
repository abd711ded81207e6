package web_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/web"
)

var benchBody = []byte("hello from a module\n")

func benchHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(benchBody)
	})
}

type benchRoute struct{}

func (benchRoute) Init(k *raceless.Kernel) error {
	return web.Register(k, "GET /hello", benchHandler())
}
func (benchRoute) Exit() (int, error) { return 0, nil }

// serveParallel runs h on b.N requests from GOMAXPROCS goroutines, each
// with a recorder of its own (no network: the router's own cost).
func serveParallel(b *testing.B, h http.Handler) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		// A context that can be cancelled, as net/http's server gives
		// each request: what a context derived from it costs shows.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := httptest.NewRequest("GET", "/hello", nil).WithContext(ctx)
		for pb.Next() {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				b.Fatalf("status %d", w.Code)
			}
		}
	})
}

// BenchmarkServeMux is the baseline: the same handler on a plain
// http.ServeMux under the same pattern.
func BenchmarkServeMux(b *testing.B) {
	mux := http.NewServeMux()
	mux.Handle("GET /hello", benchHandler())
	serveParallel(b, mux)
}

// BenchmarkRouter is the handler as a native module's route: the mux, the
// route's reference, the request's tracking for rmmod.
func BenchmarkRouter(b *testing.B) {
	ctx := context.Background()
	h := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer h.Shutdown(ctx)
	rt := web.New(h, web.Config{})
	defer rt.Close()
	if _, err := h.Load(ctx, raceless.Native(raceless.Info{Name: "bench", License: "MIT"}, func() raceless.Module { return benchRoute{} }), nil); err != nil {
		b.Fatal(err)
	}
	serveParallel(b, rt)
}
