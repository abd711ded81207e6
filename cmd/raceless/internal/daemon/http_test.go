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
	"github.com/raceless/raceless/cmd/raceless/internal/defaults"
	"github.com/raceless/raceless/internal/testdeadline"
	"github.com/raceless/raceless/web"
)

// slowRoute is a native module serving GET /slow: it signals entry and
// holds the request until release is closed or the request's context ends.
type slowRoute struct{ entered, release chan struct{} }

func (s *slowRoute) source() raceless.Source {
	return raceless.Native(raceless.Info{Name: "slow"}, func() raceless.Module { return s })
}

func (s *slowRoute) Init(k *raceless.Kernel) error {
	return web.Register(k, "GET /slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.entered <- struct{}{}
		select {
		case <-s.release:
			io.WriteString(w, "done")
		case <-r.Context().Done():
		}
	}))
}
func (s *slowRoute) Exit() (int, error) { return 0, nil }

// The daemon serves the default route module at / on its HTTP address; a
// request in flight makes rmmod refuse naming the route; rmmod -f answers
// the request 503; / vanishes with homepage.
func TestDaemonHTTP(t *testing.T) {
	slow := &slowRoute{entered: make(chan struct{}, 1), release: make(chan struct{})}
	sock := filepath.Join(t.TempDir(), "sock")
	d := runDaemon(t, daemon.Config{
		Socket:      sock,
		HTTPAddr:    "127.0.0.1:0",
		MetricsAddr: "127.0.0.1:0",
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Builtins: func(h *raceless.Host) []raceless.Source {
			return append(defaults.Sources(h), slow.source())
		},
		Boot:   append(append(defaults.Boot(), defaults.HTTPBoot()...), "slow"),
		Mounts: defaults.Mounts(),
	})
	base := "http://" + d.HTTPAddr()
	client := &http.Client{}
	defer client.CloseIdleConnections()
	get := func(path string) (int, string) {
		t.Helper()
		return get0(t, client, base+path)
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, "served by the module homepage") || !strings.Contains(body, "GET /slow") {
		t.Fatalf("/: %d %q", code, body)
	}
	call := func(req *control.Request) error {
		_, err := control.Call(context.Background(), sock, req, nil)
		return err
	}

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
	err := call(&control.Request{Op: "unload", Name: "slow"})
	var we *control.Error
	if !errors.Is(err, raceless.ErrBusy) || !errors.As(err, &we) || len(we.Routes) != 1 || we.Routes[0] != "GET /slow (1)" || !strings.Contains(err.Error(), "requests in flight on routes: GET /slow (1)") {
		t.Fatalf("rmmod with a request in flight: %v", err)
	}
	wctx, wcancel := testdeadline.Context(t)
	defer wcancel()
	if _, err := control.Call(wctx, sock, &control.Request{Op: "unload", Name: "slow", Force: true}, nil); err != nil {
		t.Fatalf("rmmod -f: %v", err)
	}
	if code := <-res; code != http.StatusServiceUnavailable {
		t.Fatalf("request aborted by rmmod -f: %d, want 503", code)
	}
	if code, _ := get("/slow"); code != http.StatusNotFound {
		t.Fatalf("/slow after rmmod -f: %d, want 404", code)
	}
	_, metrics := get0(t, client, "http://"+d.MetricsAddr()+"/metrics")
	for _, want := range []string{
		`raceless_http_requests_total{code="200",module="homepage",route="GET /{$}"} 1`,
		`raceless_http_requests_total{code="0",module="slow",route="GET /slow"} 1`, // aborted by rmmod -f
		`raceless_http_request_duration_seconds_count{module="homepage",route="GET /{$}"} 1`,
		`raceless_module_references{module="homepage",state="live"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, metrics)
		}
	}
	if err := call(&control.Request{Op: "unload", Name: "homepage"}); err != nil {
		t.Fatal(err)
	}
	if code, _ := get("/"); code != http.StatusNotFound {
		t.Fatalf("/ after rmmod homepage: %d, want 404", code)
	}
}

func get0(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
