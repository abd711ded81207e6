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
	runCmd(t, "", nil, "raceless", "torture", "--duration", "x").fails(t, 2, `torture: ERROR: bad --duration "x" (usage: torture [--duration D] [--seed S] [--ops N] [--json])`)
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
