// Package grace provides read-side critical sections and grace periods
// (SRCU-like). PLACEHOLDER implementation: simple and correct, to be replaced
// by the fast per-P version.
package grace

import (
	"context"
	"sync"
)

// Domain is a set of read-side sections that Synchronize waits for.
type Domain struct {
	mu      sync.Mutex // guards epoch, readers, waiters
	epoch   uint64
	readers [2]int64
	cond    chan struct{}
	syncMu  sync.Mutex
}

// New returns an empty domain.
func New() *Domain { return &Domain{cond: make(chan struct{})} }

// Token identifies an anonymous read section; pass it to Unlock.
type Token struct{ idx uint64 }

// Lock enters an anonymous read section.
func (d *Domain) Lock() Token {
	d.mu.Lock()
	i := d.epoch & 1
	d.readers[i]++
	d.mu.Unlock()
	return Token{i}
}

// Unlock leaves the section entered by the Lock that returned t.
func (d *Domain) Unlock(t Token) {
	d.mu.Lock()
	d.readers[t.idx]--
	if d.readers[t.idx] == 0 {
		close(d.cond)
		d.cond = make(chan struct{})
	}
	d.mu.Unlock()
}

// Reader is a per-goroutine handle: the fast path for request loops.
type Reader struct {
	d   *Domain
	tok Token
}

// Register returns a reader handle for one goroutine.
func (d *Domain) Register() *Reader { return &Reader{d: d} }

// Lock enters a read section.
func (r *Reader) Lock() { r.tok = r.d.Lock() }

// Unlock leaves it.
func (r *Reader) Unlock() { r.d.Unlock(r.tok) }

// Close releases the handle.
func (r *Reader) Close() {}

// Synchronize waits until every read section that began before it has ended.
func (d *Domain) Synchronize(ctx context.Context) error {
	d.syncMu.Lock()
	defer d.syncMu.Unlock()
	for flip := 0; flip < 2; flip++ {
		d.mu.Lock()
		old := d.epoch & 1
		d.epoch++
		d.mu.Unlock()
		for {
			d.mu.Lock()
			n, c := d.readers[old], d.cond
			d.mu.Unlock()
			if n == 0 {
				break
			}
			select {
			case <-c:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}
