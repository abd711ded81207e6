package web_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/testdeadline"
	"github.com/raceless/raceless/web"
)

// A request inside a middleware module is in flight on it: a plain
// unload of the middleware refuses and InFlight names it ("middleware
// NAME"); Abort of the middleware cancels the request (the route behind
// it sees its context end) and the client gets 503 (nothing written) or
// a closed connection (a response begun), never a hang.
func TestMiddlewareInFlightAndAbort(t *testing.T) {
	for _, mode := range serverModes {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/stream=%v", mode.name, stream), func(t *testing.T) {
				testMiddlewareInFlightAndAbort(t, mode.connContext, stream)
			})
		}
	}
}

func testMiddlewareInFlightAndAbort(t *testing.T, connContext, stream bool) {
	f := newServerFixture(t, web.Config{Middleware: []string{"mw"}}, connContext)
	b := newBlocker(stream)
	f.load(t, routeModule("slow", "1", map[string]http.Handler{"GET /slow": b}))
	f.load(t, raceless.Native(raceless.Info{Name: "mw"}, func() raceless.Module { return mwModule{} }))
	done := f.getInBackground("/slow")
	<-b.entered
	if got := f.rt.InFlight("mw"); len(got) != 1 || got[0] != "middleware mw (1)" {
		t.Fatalf("InFlight(mw): %q", got)
	}
	if got := f.rt.InFlight("slow"); len(got) != 1 || got[0] != "GET /slow (1)" {
		t.Fatalf("InFlight(slow): %q", got)
	}
	if err := f.h.Unload(context.Background(), "mw", raceless.UnloadOptions{}); !errors.Is(err, raceless.ErrBusy) {
		t.Fatalf("unload of the middleware with a request inside: %v, want ErrBusy", err)
	}
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	if n := f.rt.Abort(ctx, "mw"); n != 1 {
		t.Fatalf("Abort(mw): %d, want 1", n)
	}
	if !b.ctxDone.Load() {
		t.Fatal("the route behind the middleware did not see its context cancelled")
	}
	if err := f.h.Unload(ctx, "mw", raceless.UnloadOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	checkAborted(t, <-done, stream)
	if got := f.rt.InFlight("mw"); len(got) != 0 {
		t.Fatalf("InFlight(mw) after: %q", got)
	}
}
