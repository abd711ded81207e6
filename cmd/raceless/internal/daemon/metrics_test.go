package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/raceless/raceless"
)

// exitProbe is a module whose Exit reports whether the unload metric has
// started timing it, and refuses as often as told.
type exitProbe struct {
	m      *metrics
	self   *raceless.Instance
	refuse int
	timed  []bool // per Exit call: was the unload being timed?
}

func (p *exitProbe) Init(k *raceless.Kernel) error { p.self = k.Instance(); return nil }
func (p *exitProbe) Exit() (int, error) {
	p.m.mu.Lock()
	_, ok := p.m.goingAt[p.self]
	p.m.mu.Unlock()
	p.timed = append(p.timed, ok)
	if p.refuse > 0 {
		p.refuse--
		return 1, nil
	}
	return 0, nil
}

// TestUnloadMetricMeasuresGoingToGone: raceless_module_unload_seconds times
// an unload from going to gone, so Exit runs while it is being timed; an
// unload refused by Exit is not counted.
func TestUnloadMetricMeasuresGoingToGone(t *testing.T) {
	h := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	m := newMetrics()
	defer h.Subscribe(m.observe)()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := &exitProbe{m: m, refuse: 1}
	if _, err := h.Load(ctx, raceless.Native(raceless.Info{Name: "probe"}, func() raceless.Module { return p }), nil); err != nil {
		t.Fatal(err)
	}
	if err := h.Unload(ctx, "probe", raceless.UnloadOptions{}); !errors.Is(err, raceless.ErrBusy) {
		t.Fatalf("refused unload: %v", err)
	}
	m.mu.Lock()
	refusedTimed, refusedCounted := len(m.goingAt), m.unloads["probe"]
	m.mu.Unlock()
	if refusedTimed != 0 || refusedCounted != 0 {
		t.Errorf("after a refused unload: %d timings open, %d unloads counted; want 0, 0", refusedTimed, refusedCounted)
	}
	if err := h.Unload(ctx, "probe", raceless.UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(p.timed) != 2 || !p.timed[0] || !p.timed[1] {
		t.Errorf("Exit ran outside the unload's timing: %v, want [true true]", p.timed)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.unloads["probe"] != 1 || m.unloadSeconds["probe"] <= 0 || len(m.goingAt) != 0 {
		t.Errorf("unloads %d, seconds %g, open timings %d; want 1, > 0, 0", m.unloads["probe"], m.unloadSeconds["probe"], len(m.goingAt))
	}
}
