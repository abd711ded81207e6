// Package testdeadline gives a test's waits the test binary's own deadline
// instead of a fixed limit: a fixed per-wait limit fails a healthy run on a
// loaded 2-core machine sooner or later, while a wait that ends shortly
// before -timeout still fails a real hang with the test's own message (and
// whatever the test logs) rather than the timeout's panic.
package testdeadline

import (
	"context"
	"testing"
	"time"
)

// Deadline is when the test's waits give up: a twentieth of the time left
// (at most 30 s) before the binary's -timeout. ok is false under -timeout 0:
// wait as long as it takes.
func Deadline(t *testing.T) (deadline time.Time, ok bool) {
	d, ok := t.Deadline()
	if !ok {
		return time.Time{}, false
	}
	margin := time.Until(d) / 20
	if margin > 30*time.Second {
		margin = 30 * time.Second
	}
	return d.Add(-margin), true
}

// Context returns a context that ends at Deadline (never under -timeout 0).
func Context(t *testing.T) (context.Context, context.CancelFunc) {
	if d, ok := Deadline(t); ok {
		return context.WithDeadline(context.Background(), d)
	}
	return context.WithCancel(context.Background())
}
