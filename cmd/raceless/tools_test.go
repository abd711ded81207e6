package main_test

import (
	"encoding/json"
	"fmt"
	"strings"
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

// TestBench runs each benchmark in its quick mode (a tiny budget: the
// figures mean nothing) so that CI, under -race too, checks that every
// benchmark still runs and prints what it should. The wasm benchmark
// builds a wasm module: not under -short, and through the CLI only
// without -race (see there).
func TestBench(t *testing.T) {
	runCmd(t, "", nil, "raceless", "bench", "nope").fails(t, 2, `bench: ERROR: unknown benchmark "nope" (calls, wasm, swap, scale, http or fleet) (usage: bench calls|wasm|swap|scale|http|fleet [--quick] [--json])`)
	type row = map[string]any
	rows := func(t *testing.T, which string) []row {
		t.Helper()
		var rs []row
		out := runCmd(t, "", nil, "raceless", "bench", which, "--quick", "--json").ok(t).stdout
		if err := json.Unmarshal([]byte(out), &rs); err != nil || len(rs) == 0 {
			t.Fatalf("bench %s --quick --json: %v\n%s", which, err, out)
		}
		return rs
	}
	byName := func(rs []row) map[string]row {
		m := map[string]row{}
		for _, r := range rs {
			m[r["name"].(string)] = r
		}
		return m
	}
	t.Run("calls", func(t *testing.T) {
		m := byName(rows(t, "calls"))
		for _, n := range []string{"synchronize", "load_native", "unload_idle_native"} {
			if _, ok := m[n]; !ok {
				t.Errorf("bench calls: no %s row in %v", n, m)
			}
		}
		if out := runCmd(t, "", nil, "raceless", "bench", "calls", "--quick").ok(t).stdout; !strings.Contains(out, "Synchronize") {
			t.Errorf("bench calls --quick table:\n%s", out)
		}
	})
	t.Run("swap", func(t *testing.T) {
		m := byName(rows(t, "swap"))
		if c, _ := m["calls"]["value"].(float64); c <= 0 {
			t.Errorf("bench swap: calls %v", m["calls"])
		}
		if f, ok := m["failed_calls"]["value"].(float64); !ok || f != 0 {
			t.Errorf("bench swap: failed calls %v (a hot swap must fail no call)", m["failed_calls"])
		}
	})
	t.Run("scale", func(t *testing.T) {
		var kinds []string
		for _, r := range rows(t, "scale") {
			kinds = append(kinds, fmt.Sprint(r["kind"], " ", r["n"]))
			if l, _ := r["list_us_per_item"].(float64); l <= 0 && r["kind"] != "heap-control" {
				t.Errorf("bench scale: row %v lists in %v µs per item", r, r["list_us_per_item"])
			}
		}
		if got := strings.Join(kinds, ", "); got != "modules 10, modules 100, heap-control 100, mounts 10, mounts 100" {
			t.Errorf("bench scale rows: %s", got)
		}
	})
	t.Run("http", func(t *testing.T) {
		if testing.Short() {
			t.Skip("builds a wasm module")
		}
		if raceEnabled {
			// As bench wasm below: the same run (httpbench.Quick) is
			// internal/bench/httpbench's TestQuick, under -race there.
			t.Skip("bench http under -race: see internal/bench/httpbench TestQuick; this runs without -race")
		}
		m := byName(rows(t, "http"))
		for _, n := range []string{"nethttp_native", "module_native", "module_wasm", "wazero_naive"} {
			if v, ok := m[n]["rps"].(float64); !ok || v <= 0 {
				t.Errorf("bench http: %s = %v", n, m[n])
			}
		}
		if f, ok := m["swap"]["failed"].(float64); !ok || f != 0 {
			t.Errorf("bench http: swap %v (a swap must fail no request)", m["swap"])
		}
	})
	t.Run("wasm", func(t *testing.T) {
		if testing.Short() {
			t.Skip("builds a wasm module")
		}
		if raceEnabled {
			// Compiling the module three times (two raw runtimes, the
			// loader) under the race detector takes minutes on a loaded
			// 2-core machine. The same measurement with the same options
			// (wasmbench.Quick: Calls 200, Cycles 3, Loads 2) runs under
			// -race in internal/bench/wasmcalls's TestRunTiny, and --quick's
			// wiring in the CLI under -race in calls and swap above.
			t.Skip("bench wasm under -race: see internal/bench/wasmcalls TestRunTiny; this runs without -race")
		}
		m := byName(rows(t, "wasm"))
		for _, n := range []string{"protected_call", "load_warm", "unload"} {
			if v, ok := m[n]["value"].(float64); !ok || v <= 0 {
				t.Errorf("bench wasm: %s = %v", n, m[n])
			}
		}
	})
}
