// Package ref provides a module reference count (percpu_ref-like).
// PLACEHOLDER implementation: a mutex-protected counter, to be replaced by the
// per-P version.
package ref

import (
	"context"
	"sync"
)

// Ref is a reference count with a live/dead switch.
type Ref struct {
	mu    sync.Mutex // guards n, dead, zero
	n     int64
	dead  bool
	zero  chan struct{}
	under int64
}

// New returns a Ref with count zero. If dead, TryGet fails until Revive.
func New(dead bool) *Ref { return &Ref{dead: dead} }

// TryGet takes a reference unless the Ref has been killed.
func (r *Ref) TryGet() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead {
		return false
	}
	r.n++
	return true
}

// Get takes a reference even when killed (the owner's own references).
func (r *Ref) Get() {
	r.mu.Lock()
	r.n++
	r.mu.Unlock()
}

// Put drops a reference. It reports false, and leaves the count at zero, for
// a Put without a matching get.
func (r *Ref) Put() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		r.under++
		return false
	}
	r.n--
	if r.n == 0 && r.zero != nil {
		close(r.zero)
		r.zero = nil
	}
	return true
}

// Kill makes further TryGet fail and reports whether the count is zero.
func (r *Ref) Kill() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dead = true
	return r.n == 0
}

// Revive undoes Kill.
func (r *Ref) Revive() {
	r.mu.Lock()
	r.dead = false
	r.mu.Unlock()
}

// Count returns the current count.
func (r *Ref) Count() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// Underflows returns how many Puts had no matching get.
func (r *Ref) Underflows() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.under
}

// WaitZero waits until the count is zero.
func (r *Ref) WaitZero(ctx context.Context) error {
	for {
		r.mu.Lock()
		if r.n == 0 {
			r.mu.Unlock()
			return nil
		}
		if r.zero == nil {
			r.zero = make(chan struct{})
		}
		c := r.zero
		r.mu.Unlock()
		select {
		case <-c:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
