package web

import (
	"context"
	"slices"
	"time"
)

// handlerContext is the context a module's handler (or middleware) runs
// with: the request's own, ending also when Abort ends the request and
// when the handler returns (as context.WithCancel with a deferred cancel
// would). It is made for every request, so it costs nothing until the
// handler asks for Done: a context.WithCancel registers itself with the
// request's context and unregisters when cancelled, a map insertion and
// deletion under that context's lock on every request, which was the
// largest part of what a route added to a request (bench http's
// module_native row).
//
// It lives in its request (request.ctx), one allocation for both. Its
// values are the request's, through context.WithoutCancel, so that
// context.Cause and contexts derived from it go through its own Done,
// Err and AfterFunc instead of finding the request's cancelCtx.
type handlerContext struct {
	context.Context                 // context.WithoutCancel(parent): the values
	parent          context.Context // the request's context: its end and deadline
	q               *request
}

func (c *handlerContext) Deadline() (time.Time, bool) { return c.parent.Deadline() }

// Done returns a channel closed when the context ends, made on the first
// call (then the request's context's end is watched, with AfterFunc).
func (c *handlerContext) Done() <-chan struct{} {
	q := c.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ctxDone == nil {
		q.ctxDone = make(chan struct{})
		switch {
		case q.ctxErr != nil: // ended before anyone watched
			close(q.ctxDone)
		case c.parent.Err() != nil:
			q.endLocked(c.parent.Err()) // closes ctxDone
		default:
			parent := c.parent
			q.stopParent = context.AfterFunc(parent, func() { q.end(parent.Err()) })
		}
	}
	return q.ctxDone
}

// Err agrees with Done: nil until the channel Done returned is closed.
func (c *handlerContext) Err() error {
	q := c.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ctxErr == nil && q.ctxDone == nil {
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
	a := &afterFunc{f: f}
	q.afterFuncs = append(q.afterFuncs, a)
	return func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		i := slices.Index(q.afterFuncs, a)
		if i < 0 {
			return false // started, or stopped before
		}
		q.afterFuncs = slices.Delete(q.afterFuncs, i, i+1)
		return true
	}
}

func (c *handlerContext) String() string { return "web.handlerContext" }

type afterFunc struct{ f func() }

// end ends the handler's context with err, if it has not ended.
func (q *request) end(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.endLocked(err)
}

// endLocked is end with q.mu held.
func (q *request) endLocked(err error) {
	if q.ctxErr != nil {
		return
	}
	q.ctxErr = err
	if q.ctxDone != nil {
		close(q.ctxDone)
	}
	if q.stopParent != nil {
		q.stopParent()
	}
	for _, a := range q.afterFuncs {
		go a.f()
	}
	q.afterFuncs = nil
}
