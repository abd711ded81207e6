package web_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/testdeadline"
	"github.com/raceless/raceless/web"
)

type ctxKey struct{}

// ctxProbe is a route whose handler reports its request's context and
// then waits for its end (or returns at once).
type ctxProbe struct {
	wait    bool
	entered chan context.Context // the handler's context, once inside
	ended   chan error           // its Err once Done closed (wait only)
}

func newCtxProbe(wait bool) *ctxProbe {
	return &ctxProbe{wait: wait, entered: make(chan context.Context, 1), ended: make(chan error, 1)}
}

func (p *ctxProbe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if p.wait {
		// Checked before the test hears of the handler: once it
		// has, it may end the request at any moment.
		if err := ctx.Err(); err != nil {
			p.entered <- ctx
			p.ended <- errors.New("Err set before the request ended: " + err.Error())
			return
		}
	}
	p.entered <- ctx
	if !p.wait {
		return
	}
	<-ctx.Done()
	p.ended <- ctx.Err()
}

// ended waits, with the test's deadline, for the probe's handler to see
// its context end, and returns the context's Err then.
func (p *ctxProbe) endedErr(t *testing.T) error {
	t.Helper()
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	select {
	case err := <-p.ended:
		return err
	case <-ctx.Done():
		t.Fatal("the handler's context did not end")
		return nil
	}
}

// serveDirect runs one GET /probe through the router with parent as the
// request's context, in the background.
func serveDirect(rt http.Handler, parent context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		rt.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/probe", nil).WithContext(parent))
	}()
	return done
}

// The handler's context carries the request's values and deadline, ends
// with the request's context (the client went away), and contexts
// derived from it end with it without a goroutine of their own
// (goleak, in TestMain).
func TestHandlerContextFollowsRequest(t *testing.T) {
	f := newFixture(t, web.Config{})
	p := newCtxProbe(true)
	f.load(t, routeModule("probe", "1", map[string]http.Handler{"GET /probe": p}))
	deadline := time.Now().Add(time.Hour)
	parent, cancel := context.WithDeadline(context.WithValue(context.Background(), ctxKey{}, "v"), deadline)
	defer cancel()
	served := serveDirect(f.rt, parent)
	ctx := <-p.entered
	if v := ctx.Value(ctxKey{}); v != "v" {
		t.Errorf("Value: %v, want the request's", v)
	}
	if d, ok := ctx.Deadline(); !ok || !d.Equal(deadline) {
		t.Errorf("Deadline: %v %v, want the request's %v", d, ok, deadline)
	}
	derived, cancelDerived := context.WithCancel(ctx)
	defer cancelDerived()
	cancel()
	if err := p.endedErr(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("handler's Err after the request's context ended: %v, want context.Canceled", err)
	}
	wctx, wcancel := testdeadline.Context(t)
	defer wcancel()
	select {
	case <-derived.Done():
	case <-wctx.Done():
		t.Fatal("a context derived from the handler's did not end with it")
	}
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Cause: %v, want context.Canceled", err)
	}
	<-served
}

// Abort ends the handler's context (Done closes, Err is Canceled);
// AfterFunc's stop reports whether it stopped the function.
func TestHandlerContextAbort(t *testing.T) {
	f := newFixture(t, web.Config{})
	p := newCtxProbe(true)
	f.load(t, routeModule("probe", "1", map[string]http.Handler{"GET /probe": p}))
	// Cancellable, as net/http's request contexts are: Cause must not
	// find the request's cancelCtx through the handler's context.
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := serveDirect(f.rt, parent)
	ctx := <-p.entered
	if err := context.Cause(ctx); err != nil {
		t.Errorf("Cause before Abort: %v, want nil", err)
	}
	stopped := context.AfterFunc(ctx, func() { t.Error("a stopped AfterFunc ran") })
	if !stopped() {
		t.Fatal("AfterFunc's stop before the end: false, want true")
	}
	ran := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { close(ran) })
	wctx, wcancel := testdeadline.Context(t)
	defer wcancel()
	if n := f.rt.Abort(wctx, "probe"); n != 1 {
		t.Fatalf("Abort: %d, want 1", n)
	}
	if err := p.endedErr(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("handler's Err after Abort: %v, want context.Canceled", err)
	}
	// The request's own context is alive: the handler's cause is its
	// own, not the request's (nil).
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Cause after Abort: %v, want context.Canceled", err)
	}
	select {
	case <-ran:
	case <-wctx.Done():
		t.Fatal("AfterFunc's function did not run when the context ended")
	}
	if stop() {
		t.Error("AfterFunc's stop after the function ran: true, want false")
	}
	<-served
	if err := f.h.Unload(wctx, "probe", raceless.UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A handler that never looked at Done leaves a context that has ended
// once it returns (as a deferred cancel would), for whatever it handed
// the context to.
func TestHandlerContextEndsOnReturn(t *testing.T) {
	f := newFixture(t, web.Config{})
	p := newCtxProbe(false)
	f.load(t, routeModule("probe", "1", map[string]http.Handler{"GET /probe": p}))
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	<-serveDirect(f.rt, parent)
	ctx := <-p.entered
	if err := ctx.Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Err after the handler returned: %v, want context.Canceled", err)
	}
	select {
	case <-ctx.Done():
	default:
		t.Fatal("Done after the handler returned: open, want closed")
	}
	if parent.Err() != nil {
		t.Fatal("the request's own context ended with the handler's")
	}
}

// lateProbe is a route whose handler reports its context, waits until
// the test lets it go on, and only then asks for Done for the first time.
type lateProbe struct {
	entered chan context.Context
	proceed chan struct{}
	result  chan string // "" when Done was closed at once and Err is Canceled
}

func (p *lateProbe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p.entered <- ctx
	<-p.proceed
	p.result <- func() (what string) {
		defer func() {
			if v := recover(); v != nil {
				what = fmt.Sprint("Done panicked: ", v)
			}
		}()
		select {
		case <-ctx.Done():
		default:
			return "Done not closed, though the context had ended"
		}
		if err := ctx.Err(); !errors.Is(err, context.Canceled) {
			return fmt.Sprint("Err: ", err)
		}
		return ""
	}()
}

// A context that ended (the request's ended, or Abort) before the handler
// first asked for Done gives a channel closed already.
func TestHandlerContextDoneAfterEnd(t *testing.T) {
	for _, by := range []string{"request", "abort"} {
		t.Run(by, func(t *testing.T) {
			f := newFixture(t, web.Config{})
			p := &lateProbe{entered: make(chan context.Context, 1), proceed: make(chan struct{}), result: make(chan string, 1)}
			f.load(t, routeModule("late", "1", map[string]http.Handler{"GET /probe": p}))
			parent, cancel := context.WithCancel(context.Background())
			defer cancel()
			served := serveDirect(f.rt, parent)
			ctx := <-p.entered
			wctx, wcancel := testdeadline.Context(t)
			defer wcancel()
			aborted := make(chan int, 1)
			if by == "request" {
				cancel()
			} else {
				go func() { aborted <- f.rt.Abort(wctx, "late") }()
				// Abort has ended the context once Err says so (Err
				// does not make Done's channel).
				for ctx.Err() == nil {
					if wctx.Err() != nil {
						t.Fatal("Abort did not end the handler's context")
					}
					runtime.Gosched()
				}
			}
			close(p.proceed)
			if what := <-p.result; what != "" {
				t.Fatal(what)
			}
			<-served
			if by == "abort" {
				if n := <-aborted; n != 1 {
					t.Fatalf("Abort: %d, want 1", n)
				}
			}
		})
	}
}
