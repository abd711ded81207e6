package calls

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quick = Quick()

// TestCallsJSON runs the CLI's benchmark with a tiny budget and checks that
// the JSON parses and names every benchmark at every goroutine count.
func TestCallsJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := Run(&buf, true, quick); err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rows); err != nil {
		t.Fatalf("output is not a JSON list: %v\n%s", err, buf.String())
	}
	seen := map[string]int{}
	syncs := 0
	for _, r := range rows {
		name, _ := r["name"].(string)
		if name == "load_native" || name == "unload_idle_native" {
			seen[name]++
			if p50, _ := r["p50_ns"].(float64); p50 <= 0 {
				t.Errorf("bad lifecycle row %v", r)
			}
			continue
		}
		if name == "synchronize" {
			syncs++
			for _, k := range []string{"readers", "p50_ns", "p99_ns"} {
				if _, ok := r[k].(float64); !ok {
					t.Errorf("synchronize row lacks %s: %v", k, r)
				}
			}
			continue
		}
		g, _ := r["goroutines"].(float64)
		ns, _ := r["ns_per_op"].(float64)
		if g < 1 || ns <= 0 {
			t.Errorf("bad row %v", r)
		}
		seen[name]++
	}
	for _, n := range Names {
		if seen[n] != quick.MaxGoroutines {
			t.Errorf("%s: %d rows, want %d", n, seen[n], quick.MaxGoroutines)
		}
	}
	if seen["load_native"] != 1 || seen["unload_idle_native"] != 1 {
		t.Errorf("lifecycle rows: %v", seen)
	}
	if syncs != 2 {
		t.Errorf("%d synchronize rows, want 2", syncs)
	}
}

func TestCallsTable(t *testing.T) {
	var buf bytes.Buffer
	if err := Run(&buf, false, quick); err != nil {
		t.Fatal(err)
	}
	for _, n := range append(Names, "Synchronize", "p99", "unload_idle_native") {
		if !strings.Contains(buf.String(), n) {
			t.Errorf("table lacks %q:\n%s", n, buf.String())
		}
	}
}
