package web

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/raceless/raceless"
)

// A request's handler context, the context Abort must be able to end, is
// one of two:
//
//   - the connection's: on an HTTP/1 connection of a server whose
//     ConnContext is ConnContext, the context of the connection, made
//     by ConnContext, is an ancestor of the request's, and it carries
//     one request at a time. Abort ends it, which ends the request's;
//     the connection is closed after the answer (Connection: close, or
//     cut). The handler gets the server's *http.Request as it is.
//   - its own (handlerContext) everywhere else (HTTP/2, whose streams
//     share the connection's context; a server without ConnContext): the
//     handler gets a copy of the *http.Request with that context, in the
//     same allocation as the record (requestWithContext).
//
// The first spares every request the copy, the larger part of what the
// record costs (bench http's module_native row).
//
// Either way the context ends once the handler has returned, as a
// context.WithCancel with a deferred cancel would: net/http ends the
// request's when the handler returns, and finish (or end) ends a
// handlerContext.

// connState is a connection's, made by ConnContext.
type connState struct {
	conn net.Conn
	// cancel ends the connection's context, an ancestor of the context
	// of every request on it; nil when the server's base context can be
	// cancelled (a context under it would be registered there until the
	// server's ends), and then requests get a context of their own.
	cancel  context.CancelCauseFunc
	aborted atomic.Bool // cancel was called: the connection must close
}

// ConnContext is for http.Server.ConnContext. It lets Abort end a request
// on an HTTP/1 connection by ending the connection's context (sparing
// each request a copy of its *http.Request), and close the connection of
// a request whose handler outlives Abort's deadline.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	cs := &connState{conn: c}
	if ctx.Done() == nil {
		// Never cancelled: the cancelCtx registers nowhere, and is
		// collected with the connection without a cancel.
		ctx, cs.cancel = context.WithCancelCause(ctx)
	}
	return context.WithValue(ctx, connKey, cs)
}

// errAborted is the cause of a connection's context ended by Abort, and
// what an aborted request's writes return.
var errAborted = errors.New("request aborted: its module is being unloaded by force")

// request is one request in flight on a module route (or inside a
// module's middleware): the ResponseWriter the module writes through,
// which Abort can cut off.
type request struct {
	mu     sync.Mutex // guards status, dead, ctxErr and watch
	w      http.ResponseWriter
	status int32 // written status, 0 before WriteHeader
	dead   bool  // aborted: writes are discarded
	// ownCtx: the handler's context is a handlerContext
	// (requestWithContext), not the connection's.
	ownCtx bool
	// The handler's context: ended (ctxErr non-nil) once the handler
	// returned or Abort ended it; for a handlerContext, also when the
	// request's context ended, and what watches it, made on first use.
	ctxErr error
	watch  *ctxWatch

	conn *connState // from ConnContext; nil if the server has none

	// What the request is on: a route's pattern, or a middleware's
	// name (middleware set).
	what       string
	middleware bool

	// In Router.inflight: the module owning the route or middleware,
	// and (guarded by shard.mu) the list links and the channel closed
	// when the request leaves (made by Abort).
	owner      *raceless.Instance
	shard      *inflightShard
	prev, next *request
	done       chan struct{}
}

// requestWithContext is a request whose handler's context is its own: a
// copy of the *http.Request with that context, in one allocation with
// the record.
type requestWithContext struct {
	request
	ctx handlerContext
	r   http.Request
}

// newRequest makes the record of a request on a module route or
// middleware, and the *http.Request its handler gets. It returns a nil
// record for a request on a connection whose context an earlier Abort
// ended (its answer lost the Connection: close that retires it, in a
// middleware's writer): that request is answered by refuseOnAborted.
func newRequest(w http.ResponseWriter, r *http.Request, what string, middleware bool) (*request, *http.Request) {
	cs, _ := r.Context().Value(connKey).(*connState)
	if cs != nil && cs.cancel != nil && r.ProtoMajor == 1 {
		if cs.aborted.Load() {
			return nil, nil
		}
		return &request{w: w, what: what, middleware: middleware, conn: cs}, r
	}
	q := &requestWithContext{request: request{w: w, what: what, middleware: middleware, ownCtx: true, conn: cs}}
	q.ctx = handlerContext{parent: r.Context(), q: &q.request}
	// WithContext's own copy does not escape: it is made on the stack.
	q.r = *r.WithContext(&q.ctx)
	return &q.request, &q.r
}

// begin makes the record of a request on a route or middleware of owner
// and lists it in flight. On a connection whose context an earlier Abort
// ended it answers the request itself and returns nil.
func (rt *Router) begin(w http.ResponseWriter, r *http.Request, owner *raceless.Instance, what string, middleware bool) (*request, *http.Request) {
	req, hr := newRequest(w, r, what, middleware)
	if req == nil {
		refuseOnAborted(w)
		return nil, nil
	}
	rt.inflight.add(owner, req)
	return req, hr
}

// leave takes req off the requests in flight (Abort waits for that) and
// ends its handler's context, if finish has not (a panic).
func (rt *Router) leave(req *request) {
	rt.inflight.remove(req)
	req.end(context.Canceled)
}

// refuseOnAborted answers a request that came on a connection whose
// context Abort ended, and closes the connection.
func refuseOnAborted(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	w.Header().Set("Retry-After", "1")
	http.Error(w, "service unavailable: this connection was cut by a forced unload, retry on another", http.StatusServiceUnavailable)
}

func (q *request) Header() http.Header { return q.w.Header() }

func (q *request) WriteHeader(code int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.dead || q.status != 0 {
		return
	}
	if code < 100 || code > 999 {
		// net/http panics on these; a module's bad status is a 500.
		code = http.StatusInternalServerError
	}
	if code >= 200 {
		q.status = int32(code)
	}
	q.w.WriteHeader(code)
}

func (q *request) Write(p []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.dead {
		return 0, errAborted
	}
	if q.status == 0 {
		q.status = http.StatusOK
	}
	return q.w.Write(p)
}

// Flush sends what was written so far (streaming responses).
func (q *request) Flush() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.dead {
		return
	}
	if q.status == 0 {
		q.status = http.StatusOK
	}
	if f, ok := q.w.(http.Flusher); ok {
		f.Flush()
	}
}

func (q *request) statusCode() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.dead {
		return 0
	}
	return int(q.status)
}

// end ends the handler's context with err, if it has not ended.
func (q *request) end(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.endLocked(err)
}

// endLocked is end with q.mu held. Once it has run, Abort no longer ends
// the connection's context: the handler has returned, and what comes
// next on the connection is not this request.
func (q *request) endLocked(err error) {
	if q.ctxErr != nil {
		return
	}
	q.ctxErr = err
	if w := q.watch; w != nil {
		w.end()
	}
}

// internalError answers 500 if nothing was written yet, reporting whether
// it did. The handler has returned (panicked): its context ends.
func (q *request) internalError() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.endLocked(context.Canceled)
	if q.dead || q.status != 0 {
		return false
	}
	q.status = http.StatusInternalServerError
	q.w.Header().Del("Content-Length")
	http.Error(q.w, "internal server error", http.StatusInternalServerError)
	return true
}

// abort ends the request's context and marks it aborted: from then on its
// writes are discarded. The request's own goroutine answers once the
// handler returns (finish); closeConn is for a handler that does not.
func (q *request) abort() {
	// Dead first: a handler that returns as soon as its context ends
	// must find its request aborted (503), not answer 200 with nothing.
	q.mu.Lock()
	q.dead = true
	switch {
	case q.ownCtx:
		q.endLocked(context.Canceled)
	case q.ctxErr == nil:
		// The handler has not returned, so the connection still
		// carries this request: ending the connection's context ends
		// its. The answer (finish) closes the connection.
		q.conn.aborted.Store(true)
		q.conn.cancel(errAborted)
	}
	q.mu.Unlock()
	if testHookAborted != nil {
		testHookAborted()
	}
}

// Test hooks (set by export_test.go; nil otherwise): testHookFinished
// runs once a route's handler returned and finish answered, before the
// request leaves the requests in flight; testHookAborted once abort
// marked a request.
var testHookFinished, testHookAborted func()

// closeConn closes the request's connection: the client sees a closed
// response instead of waiting for a handler that ignores its context.
func (q *request) closeConn() {
	if q.conn != nil {
		q.conn.conn.Close()
	}
}

// finish is run by the request's goroutine after the handler returned:
// the handler's context ends; an aborted request that wrote nothing is
// answered 503; one whose response had begun is cut (http.ErrAbortHandler
// closes the connection without ending the response, so the client sees
// it truncated).
func (q *request) finish() {
	q.mu.Lock()
	q.endLocked(context.Canceled)
	dead, status := q.dead, q.status
	if dead && status == 0 {
		q.status = http.StatusServiceUnavailable
	}
	q.mu.Unlock()
	if !dead {
		return
	}
	if status != 0 {
		panic(http.ErrAbortHandler)
	}
	h := q.w.Header()
	for k := range h {
		delete(h, k)
	}
	h.Set("Connection", "close")
	http.Error(q.w, "service unavailable: the module serving this route was unloaded", http.StatusServiceUnavailable)
}
