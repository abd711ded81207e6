package web_test

import (
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/web"
)

// SetMiddleware replaces the chain for the requests that begin after it;
// a request in flight finishes with the chain it began with; the caller's
// slice is copied.
func TestSetMiddleware(t *testing.T) {
	f := newFixture(t, web.Config{Middleware: []string{"mwa"}})
	f.load(t, routeModule("r", "1", map[string]http.Handler{"/r": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Join(r.Header.Values("X-Order"), ","))
	})}))
	for _, n := range []string{"mwa", "mwb"} {
		f.load(t, raceless.Native(raceless.Info{Name: n}, func() raceless.Module { return mwModule{} }))
	}
	entered, release := make(chan struct{}), make(chan struct{})
	f.load(t, raceless.Native(raceless.Info{Name: "mwblock"}, func() raceless.Module { return blockMW{entered, release} }))
	check := func(want string) {
		t.Helper()
		if code, body := f.get(t, "/r"); code != 200 || body != want {
			t.Fatalf("got %d %q, want 200 %q", code, body, want)
		}
	}
	check("mwa")
	names := []string{"mwb", "mwa"}
	f.rt.SetMiddleware(names)
	names[0] = "mwblock" // the router holds its own copy
	check("mwb,mwa")
	if got := f.rt.Middleware(); !reflect.DeepEqual(got, []string{"mwb", "mwa"}) {
		t.Fatalf("Middleware() = %q", got)
	}
	f.rt.SetMiddleware(nil)
	check("")

	// A request in flight keeps its chain across a change.
	f.rt.SetMiddleware([]string{"mwblock", "mwa"})
	type answer struct {
		code int
		body string
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := f.srv.Client().Get(f.srv.URL + "/r")
		if err != nil {
			done <- answer{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- answer{resp.StatusCode, string(b)}
	}()
	<-entered
	f.rt.SetMiddleware([]string{"mwb"})
	check("mwb") // new requests: the new chain, while the first is held
	close(release)
	if a := <-done; a.code != 200 || a.body != "mwblock,mwa" {
		t.Fatalf("request in flight: %d %q, want 200 \"mwblock,mwa\"", a.code, a.body)
	}
}

// blockMW is middleware that signals entry and waits for release.
type blockMW struct{ entered, release chan struct{} }

func (b blockMW) Init(k *raceless.Kernel) error {
	name := k.Name()
	return web.RegisterMiddleware(k, mwFunc(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		r.Header.Add("X-Order", name)
		b.entered <- struct{}{}
		<-b.release
		next.ServeHTTP(w, r)
	}))
}
func (blockMW) Exit() (int, error) { return 0, nil }
