package wasmcalls

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunTiny(t *testing.T) {
	var buf bytes.Buffer
	if err := Run(context.Background(), &buf, true, Options{Calls: 200, Cycles: 3, Loads: 2}); err != nil {
		t.Fatal(err)
	}
	var res []Result
	if err := json.Unmarshal(buf.Bytes(), &res); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	want := map[string]bool{"raw_wazero_call": false, "protected_call": false, "load_cold": false,
		"load_warm": false, "unload": false, "heap_growth_after_3_cycles": false}
	for _, r := range res {
		if _, ok := want[r.Name]; ok {
			want[r.Name] = true
		}
	}
	for n, ok := range want {
		if !ok {
			t.Errorf("missing %s in %s", n, buf.String())
		}
	}
}

// TestFull runs the full benchmark (1000 cycles), as `raceless bench wasm`
// does, when RACELESS_WASMBENCH_FULL=1:
//
//	RACELESS_WASMBENCH_FULL=1 go test -run TestFull -v -timeout 10m ./internal/bench/wasmcalls
func TestFull(t *testing.T) {
	if os.Getenv("RACELESS_WASMBENCH_FULL") != "1" {
		t.Skip("set RACELESS_WASMBENCH_FULL=1")
	}
	var buf bytes.Buffer
	if err := Run(context.Background(), &buf, false, Options{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", buf.String())
}
