package torture

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/raceless/raceless"
)

// TestForcedPastKeptTaints force-unloads an instance whose kept taint
// reasons are already full (as the hooks' panics fill them in a long run)
// while a mount of its filesystem holds a reference: the unload's own
// reason is not kept, yet Stop, Exit and the filesystem calls after them
// must see the unload as forced, not report a violation.
func TestForcedPastKeptTaints(t *testing.T) {
	r := &runner{seed: 1, stop: make(chan struct{}), byKind: map[string]int64{},
		opCounts: map[string]int64{}, outcomes: map[string]int64{}, events: map[string]int64{},
		nextReap: minReap, opts: Options{OpTimeout: 10 * time.Second}}
	r.specs = []*modSpec{r.newSpec(0)}
	r.host = raceless.New(raceless.WithLogger(slog.New(slog.DiscardHandler)), raceless.WithResolver(resolver{r}))
	if err := r.setupFS(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := r.specs[0]
	// Init fails now and then, as the instance's generator (seeded) says.
	var inst *raceless.Instance
	for i := 0; inst == nil; i++ {
		if i == 50 {
			t.Fatal("no load of t0 succeeded")
		}
		inst, _ = r.host.Load(ctx, s.src, nil)
	}
	for i := range 40 {
		inst.Taint(raceless.TaintDied, fmt.Sprintf("panic in hook %d", i))
	}
	mp := mountPoint(0)
	if err := r.ns.Mount(ctx, "none", mp, fstype(s), ""); err != nil {
		t.Fatal(err)
	}
	if err := r.host.Unload(ctx, s.name, raceless.UnloadOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	// The mount outlives the forced unload: a call (stale if Exit agreed),
	// then the superblock's release.
	if _, err := r.ns.Stat(mp + "/f"); err != nil {
		t.Fatal(err)
	}
	if err := r.ns.Unmount(mp, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := r.host.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.byKind) != 0 {
		t.Fatalf("violations %v: %q", r.byKind, r.details)
	}
}
