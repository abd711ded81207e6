package raceless

import (
	"fmt"
	"sync"
)

// taintsKept is how many taint reasons a host or an instance keeps. The
// kernel keeps only flags; we keep reasons, because "why" is what an
// operator asks, but a daemon that force-unloads for months (or a module
// whose hook panics on every call) must not grow without bound. The first
// reasons are kept: they say how the taint began.
const taintsKept = 32

// taintLog records why something was tainted: the first taintsKept
// reasons and how many more there were.
type taintLog struct {
	mu      sync.Mutex // guards reasons and dropped; a leaf
	reasons []string
	dropped int
}

func (t *taintLog) add(reason string) {
	t.mu.Lock()
	if len(t.reasons) < taintsKept {
		t.reasons = append(t.reasons, reason)
	} else {
		t.dropped++
	}
	t.mu.Unlock()
}

// list returns the kept reasons, oldest first, followed, if any were not
// kept, by one line "and N more".
func (t *taintLog) list() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := append([]string(nil), t.reasons...)
	if t.dropped > 0 {
		out = append(out, fmt.Sprintf(TaintsMoreFormat, t.dropped))
	}
	return out
}

// TaintsMoreFormat is the format of the last line of Host.Taints and
// Instance.Taints when more reasons were recorded than kept (32): the
// number is how many more.
const TaintsMoreFormat = "and %d more"
