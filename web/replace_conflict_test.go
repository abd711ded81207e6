package web_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/web"
)

// A hot swap's replacement is checked against the other modules' routes
// before it goes live: one bringing a pattern that conflicts with
// another module's is refused naming both patterns and both modules, and
// the old instance keeps serving; one that only changes its own patterns
// goes live.
func TestReplaceConflictRefused(t *testing.T) {
	f := newFixture(t, web.Config{})
	f.load(t, routeModule("a", "1", map[string]http.Handler{"GET /a/{x}": text("a")}))
	f.load(t, routeModule("b", "1", map[string]http.Handler{"GET /b": text("b1")}))
	_, err := f.h.Replace(context.Background(), "b", routeModule("b", "2", map[string]http.Handler{"GET /b": text("b2"), "GET /a/{y}": text("b2")}), nil, raceless.ReplaceOptions{})
	if !errors.Is(err, web.ErrConflict) || !errors.Is(err, raceless.ErrExists) ||
		!strings.Contains(err.Error(), "register b:") || !strings.Contains(err.Error(), `"GET /a/{y}" conflicts with "GET /a/{x}" of module a`) {
		t.Fatalf("conflicting replacement: %v", err)
	}
	if code, body := f.get(t, "/b"); code != 200 || body != "b1" {
		t.Fatalf("/b after the refused swap: %d %q, want b1", code, body)
	}
	if code, body := f.get(t, "/a/1"); code != 200 || body != "a" {
		t.Fatalf("/a/1 after the refused swap: %d %q, want a", code, body)
	}
	for _, r := range f.rt.Routes() {
		if r.Err != "" {
			t.Fatalf("a route left out: %+v", r)
		}
	}
	// Its own patterns may change freely: /b/{x} replaces /b.
	if _, err := f.h.Replace(context.Background(), "b", routeModule("b", "3", map[string]http.Handler{"GET /b/{x}": text("b3")}), nil, raceless.ReplaceOptions{}); err != nil {
		t.Fatal(err)
	}
	if code, body := f.get(t, "/b/1"); code != 200 || body != "b3" {
		t.Fatalf("/b/1: %d %q", code, body)
	}
}

// A route registered with Kernel.Register directly passes the same
// check: a value that is not an http.Handler, or an invalid pattern, is
// refused at load.
func TestRouteCheckDirectRegister(t *testing.T) {
	f := newFixture(t, web.Config{})
	for _, tc := range []struct {
		pattern string
		value   any
		want    error
	}{{"GET /x", "not a handler", raceless.ErrInvalid}, {"GET /{", text("x"), web.ErrPattern}} {
		src := raceless.Native(raceless.Info{Name: "direct"}, func() raceless.Module {
			return &initFunc{func(k *raceless.Kernel) error { return k.Register(raceless.KindRoute, tc.pattern, tc.value) }}
		})
		if _, err := f.h.Load(context.Background(), src, nil); !errors.Is(err, tc.want) || !strings.Contains(err.Error(), "direct") {
			t.Fatalf("%q %T: %v, want %v", tc.pattern, tc.value, err, tc.want)
		}
	}
}

type initFunc struct{ f func(*raceless.Kernel) error }

func (m *initFunc) Init(k *raceless.Kernel) error { return m.f(k) }
func (m *initFunc) Exit() (int, error)            { return 0, nil }
