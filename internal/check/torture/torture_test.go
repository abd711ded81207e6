package torture

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestTortureShort is the suite's torture run: 1.5*10^5 operations with
// the VFS (about 20 s under -race on 2 cores). The seed comes from the
// clock unless RACELESS_TORTURE_SEED is set; a failure prints it.
func TestTortureShort(t *testing.T) {
	runShort(t, 150_000, Options{})
}

// TestTortureNoFS runs 10^5 operations without the VFS: no mount holds a
// reference indefinitely, so every waiting unload runs under the watchdog.
func TestTortureNoFS(t *testing.T) {
	runShort(t, 100_000, Options{NoFS: true})
}

func runShort(t *testing.T, ops int64, opts Options) {
	if testing.Short() {
		ops = 10_000
	}
	opts.Ops, opts.Duration, opts.Seed = ops, 3*time.Minute, envSeed(t)
	rep, err := Run(context.Background(), opts)
	var buf bytes.Buffer
	_ = rep.WriteText(&buf)
	t.Log(buf.String())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ops < ops {
		t.Errorf("only %d operations ran, want %d", rep.Ops, ops)
	}
	if rep.Violations != 0 {
		t.Errorf("%d violations (seed %d): %v", rep.Violations, rep.Seed, rep.ByKind)
	}
}

func TestReportJSON(t *testing.T) {
	// The format only: no hot swaps, whose core bugs would stall it.
	rep, err := Run(context.Background(), Options{Ops: 500, Seed: 7, NoReplace: true})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ops", "violations", "by_kind", "seed", "ops_per_sec"} {
		if _, ok := got[k]; !ok {
			t.Errorf("JSON report lacks %q: %s", k, buf.String())
		}
	}
	if got["seed"].(float64) != 7 {
		t.Errorf("seed = %v, want 7", got["seed"])
	}
}

// TestTortureLong is the long run of docs/torture.md, off by default:
//
//	RACELESS_TORTURE_DURATION=60s go test -run TestTortureLong -v ./internal/check/torture
//
// RACELESS_TORTURE_SEED picks the seed (default: from the clock);
// RACELESS_TORTURE_NOFS=1 leaves the VFS operations out.
func TestTortureLong(t *testing.T) {
	v := os.Getenv("RACELESS_TORTURE_DURATION")
	if v == "" {
		t.Skip("set RACELESS_TORTURE_DURATION to run")
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatal(err)
	}
	runFor(t, d, Options{NoFS: os.Getenv("RACELESS_TORTURE_NOFS") != ""})
}

// envSeed returns RACELESS_TORTURE_SEED, or 0 (a seed from the clock).
func envSeed(t *testing.T) int64 {
	var seed int64
	if s := os.Getenv("RACELESS_TORTURE_SEED"); s != "" {
		if _, err := fmt.Sscan(s, &seed); err != nil {
			t.Fatalf("RACELESS_TORTURE_SEED: %v", err)
		}
	}
	return seed
}

// TestTortureWasm adds a WebAssembly module (examples/wasm/provider,
// exporting add and mul) to a short run: loads, plain and forced unloads,
// and calls through Bindings, kept across operations, that must return
// the right result or, after a forced unload, fail cleanly. It runs under
// -race too (shorter), so that CI runs it.
func TestTortureWasm(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a wasm module")
	}
	d := 10 * time.Second
	if raceEnabled {
		d = 3 * time.Second // ~20 s in all under -race (a cold compile); dozens of loads and calls
	}
	m, closeLoader, err := ProviderModule(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := closeLoader(); err != nil {
			t.Error(err)
		}
	}()
	runFor(t, d, Options{Wasm: []WasmModule{m}})
}

// runFor runs for d, logs the report (text and JSON) and fails on any
// violation.
func runFor(t *testing.T, d time.Duration, opts Options) {
	opts.Duration, opts.Seed = d, envSeed(t)
	rep, err := Run(context.Background(), opts)
	var buf bytes.Buffer
	_ = rep.WriteText(&buf)
	_ = rep.WriteJSON(&buf)
	t.Log(buf.String())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Violations != 0 {
		t.Errorf("%d violations (seed %d): %v", rep.Violations, rep.Seed, rep.ByKind)
	}
}

// TestTortureMemoryFlat checks that a run keeps only the instances it
// cannot check yet, not every instance it made: the most it held at once
// does not grow with the number of operations. Before instances were
// checked as they went, a run held every one until its final checks (the
// peak was Report.Instances, 4 times as many for 4 times the operations).
// The counts are the run's own, not the heap's: they do not depend on the
// load of the machine. Every instance is checked exactly once: during the
// run or at the end.
func TestTortureMemoryFlat(t *testing.T) {
	n := int64(16_000) // about 2 s; the larger run makes 2·10³ to 4·10³ instances
	switch {
	case testing.Short():
		n = 4_000
	case raceEnabled:
		n = 8_000 // about 8 s under -race on 2 cores
	}
	run := func(t *testing.T, ops int64, opts Options) Report {
		t.Helper()
		opts.Ops, opts.Duration, opts.Seed = ops, 3*time.Minute, 20261201
		rep, err := Run(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Violations != 0 {
			t.Fatalf("%d violations (seed %d): %v %v", rep.Violations, rep.Seed, rep.ByKind, rep.Details)
		}
		if rep.Checked+rep.RetainedEnd != rep.Instances {
			t.Errorf("%d ops: %d instances checked during the run + %d at the end, %d made",
				ops, rep.Checked, rep.RetainedEnd, rep.Instances)
		}
		if rep.HeapStart == 0 || rep.HeapEnd == 0 || rep.HeapPeak < max(rep.HeapStart, rep.HeapEnd) {
			t.Errorf("%d ops: heap start %d, end %d, peak %d", ops, rep.HeapStart, rep.HeapEnd, rep.HeapPeak)
		}
		t.Logf("%d ops: %d instances, %d checked during the run, %d at the end, at most %d held; heap %d → %d bytes",
			rep.Ops, rep.Instances, rep.Checked, rep.RetainedEnd, rep.RetainedPeak, rep.HeapStart, rep.HeapEnd)
		return rep
	}
	for _, tc := range []struct {
		name string
		opts Options
	}{{"nofs", Options{NoFS: true}}, {"fs", Options{}}} {
		t.Run(tc.name, func(t *testing.T) {
			small, large := run(t, n, tc.opts), run(t, 4*n, tc.opts)
			if large.Instances < 2*small.Instances {
				t.Fatalf("%d instances for %d ops, %d for %d: the runs are not comparable",
					small.Instances, n, large.Instances, 4*n)
			}
			// The bound: twice the small run's peak, or 256; the large
			// run makes 10³ and more instances (5·10² with the VFS and
			// -short), all held at once when none is let go.
			if bound := max(2*small.RetainedPeak, 256); large.RetainedPeak > bound {
				t.Errorf("held up to %d instances over %d ops, %d over %d (bound %d): retention grows with the run",
					large.RetainedPeak, 4*n, small.RetainedPeak, n, bound)
			}
			if large.RetainedPeak*2 > large.Instances {
				t.Errorf("held up to %d of %d instances at once", large.RetainedPeak, large.Instances)
			}
		})
	}
}
