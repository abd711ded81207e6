package torture

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestTortureShort is the suite's torture run: at least 10^5 operations.
func TestTortureShort(t *testing.T) {
	ops := int64(100_000)
	if testing.Short() {
		ops = 10_000
	}
	rep, err := Run(context.Background(), Options{Ops: ops, Duration: 3 * time.Minute, Seed: 1})
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
	rep, err := Run(context.Background(), Options{Ops: 500, Seed: 7})
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
