package web

import (
	"context"
	"slices"
	"time"
)

// handlerContext is the context a module's handler (or middleware) runs
// with where the connection's context cannot serve (see request.go): the
// request's own, ending also when Abort ends the request and when the
// handler returns (as context.WithCancel with a deferred cancel would).
// It costs nothing until the handler asks for Done: a context.WithCancel
// registers itself with the request's context and unregisters when
// cancelled, a map insertion and deletion under that context's lock on
// every request.
//
// It lives in its request (requestWithContext.ctx): one allocation. Its
// values are the request's, the request's cancelCtx among them: that is
// safe because package context checks what it finds there against the
// context's own Done (contexts derived from this one go through its
// AfterFunc) and context.Cause asks Err first and falls back to it when
// that cancelCtx has no cause (golang/go#73258, fixed in the Go go.mod
// requires; TestHandlerContextAbort checks Cause after an Abort).
type handlerContext struct {
	parent context.Context // the request's context: its values, end and deadline
	q      *request
}

func (c *handlerContext) Value(key any) any { return c.parent.Value(key) }

func (c *handlerContext) Deadline() (time.Time, bool) { return c.parent.Deadline() }

// Done returns a channel closed when the context ends, made on the first
// call (then the request's context's end is watched, with AfterFunc).
func (c *handlerContext) Done() <-chan struct{} {
	q := c.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.watch == nil {
		q.watch = &ctxWatch{done: make(chan struct{})}
		switch {
		case q.ctxErr != nil: // ended before anyone watched
			close(q.watch.done)
		case c.parent.Err() != nil:
			q.endLocked(c.parent.Err()) // closes watch.done
		default:
			parent := c.parent
			q.watch.stopParent = context.AfterFunc(parent, func() { q.end(parent.Err()) })
		}
	}
	return q.watch.done
}

// Err agrees with Done: nil until the channel Done returned is closed.
func (c *handlerContext) Err() error {
	q := c.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ctxErr == nil && q.watch == nil {
		// Nobody watches the request's context yet: ask it.
		if err := c.parent.Err(); err != nil {
			q.endLocked(err)
		}
	}
	return q.ctxErr
}

// AfterFunc makes contexts derived from this one (context.WithCancel and
// the like) cheap: without it, each would start a goroutine to watch
// Done. Same contract as context.AfterFunc.
func (c *handlerContext) AfterFunc(f func()) (stop func() bool) {
	c.Done() // the request's context's end must reach f too
	q := c.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ctxErr != nil {
		go f()
		return func() bool { return false }
	}
	w := q.watch
	a := &afterFunc{f: f}
	w.afterFuncs = append(w.afterFuncs, a)
	return func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		i := slices.Index(w.afterFuncs, a)
		if i < 0 {
			return false // started, or stopped before
		}
		w.afterFuncs = slices.Delete(w.afterFuncs, i, i+1)
		return true
	}
}

func (c *handlerContext) String() string { return "web.handlerContext" }

type afterFunc struct{ f func() }

// ctxWatch is what watches a handler's context once the handler asked
// for its Done: few handlers do, so it is made then, not with every
// request.
type ctxWatch struct {
	done       chan struct{} // what Done returns
	stopParent func() bool   // stops the AfterFunc on the request's context
	afterFuncs []*afterFunc  // registered with AfterFunc, not run yet
}

// end closes done, stops watching the request's context and starts the
// functions registered with AfterFunc. The request's mu is held.
func (w *ctxWatch) end() {
	close(w.done)
	if w.stopParent != nil {
		w.stopParent()
	}
	for _, a := range w.afterFuncs {
		go a.f()
	}
	w.afterFuncs = nil
}
