package daemon_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
	"github.com/raceless/raceless/internal/testdeadline"
	"github.com/raceless/raceless/web"
)

// passMiddleware is a native middleware module that passes every request
// on.
type passMiddleware struct{}

func (passMiddleware) Init(k *raceless.Kernel) error {
	return web.RegisterMiddleware(k, passFunc(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		next.ServeHTTP(w, r)
	}))
}
func (passMiddleware) Exit() (int, error) { return 0, nil }

type passFunc func(http.ResponseWriter, *http.Request, http.Handler)

func (f passFunc) ServeHTTPNext(w http.ResponseWriter, r *http.Request, next http.Handler) {
	f(w, r, next)
}

// rmmod of a middleware module with a request inside it refuses naming
// it ("middleware mw (1)"), and rmmod -f aborts that request (503); the
// chain then fails closed without it.
func TestDaemonMiddlewareInFlight(t *testing.T) {
	slow := &slowRoute{entered: make(chan struct{}, 1), release: make(chan struct{})}
	sock := filepath.Join(t.TempDir(), "sock")
	d := runDaemon(t, daemon.Config{
		Socket:         sock,
		HTTPAddr:       "127.0.0.1:0",
		HTTPMiddleware: []string{"mw"},
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		Builtins: func(h *raceless.Host) []raceless.Source {
			return []raceless.Source{slow.source(), raceless.Native(raceless.Info{Name: "mw"}, func() raceless.Module { return passMiddleware{} })}
		},
		Boot: []string{"slow", "mw"},
	})
	base := "http://" + d.HTTPAddr()
	client := &http.Client{}
	defer client.CloseIdleConnections()
	res := make(chan int, 1)
	go func() {
		resp, err := client.Get(base + "/slow")
		if err != nil {
			res <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		res <- resp.StatusCode
	}()
	<-slow.entered
	_, err := control.Call(context.Background(), sock, &control.Request{Op: "unload", Name: "mw"}, nil)
	var we *control.Error
	if !errors.Is(err, raceless.ErrBusy) || !errors.As(err, &we) || len(we.Routes) != 1 || we.Routes[0] != "middleware mw (1)" ||
		!strings.Contains(err.Error(), "requests in flight on routes: middleware mw (1)") {
		t.Fatalf("rmmod mw with a request inside it: %v", err)
	}
	wctx, wcancel := testdeadline.Context(t)
	defer wcancel()
	if _, err := control.Call(wctx, sock, &control.Request{Op: "unload", Name: "mw", Force: true}, nil); err != nil {
		t.Fatalf("rmmod -f mw: %v", err)
	}
	if code := <-res; code != http.StatusServiceUnavailable {
		t.Fatalf("request aborted by rmmod -f of its middleware: %d, want 503", code)
	}
	if code, _ := get0(t, client, base+"/slow"); code != http.StatusServiceUnavailable {
		t.Fatalf("/slow without its middleware: %d, want 503 (fails closed)", code)
	}
}
