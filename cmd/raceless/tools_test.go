package main_test

import (
	"encoding/json"
	"testing"
)

func TestTorture(t *testing.T) {
	r := runCmd(t, "", nil, "raceless", "torture", "--duration", "300ms", "--seed", "42", "--json").ok(t)
	var rep struct {
		Ops        int64 `json:"ops"`
		Violations int64 `json:"violations"`
		Seed       int64 `json:"seed"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if rep.Ops == 0 || rep.Violations != 0 || rep.Seed != 42 {
		t.Fatalf("torture: %+v", rep)
	}
	runCmd(t, "", nil, "raceless", "torture", "--duration", "x").fails(t, 2, `torture: ERROR: bad --duration "x" (usage: torture [--duration D] [--seed S] [--ops N] [--wasm] [--json])`)
}

// TestTortureWasm: --wasm builds the provider example and puts it in the
// mix; its loads and checked calls show in the report.
func TestTortureWasm(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a wasm module")
	}
	r := runCmd(t, "", nil, "raceless", "torture", "--wasm", "--duration", "1s", "--json").ok(t)
	var rep struct {
		Violations int64            `json:"violations"`
		OpCounts   map[string]int64 `json:"op_counts"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if rep.Violations != 0 || rep.OpCounts["wasm-load"] == 0 || rep.OpCounts["wasm-call"] == 0 {
		t.Fatalf("torture --wasm: violations %d, op counts %v", rep.Violations, rep.OpCounts)
	}
}

func TestBench(t *testing.T) {
	runCmd(t, "", nil, "raceless", "bench", "nope").fails(t, 2, `bench: ERROR: unknown benchmark "nope" (calls, wasm or swap) (usage: bench calls|wasm|swap [--json])`)
	if testing.Short() || raceEnabled {
		t.Skip("the benchmarks take seconds; run without -short and -race")
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(runCmd(t, "", nil, "raceless", "bench", "calls", "--json").ok(t).stdout), &rows); err != nil || len(rows) == 0 {
		t.Fatalf("bench calls --json: %v", err)
	}
}
