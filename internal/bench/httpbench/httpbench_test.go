package httpbench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/raceless/raceless/internal/bench/httpbench"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The quick run produces every row it claims (rpc_plugin: a go-plugin
// process started from this test binary), each served requests, and the
// swap row fails no request.
func TestQuick(t *testing.T) {
	var out bytes.Buffer
	if err := httpbench.Run(context.Background(), &out, true, httpbench.Quick()); err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	names := map[string]map[string]any{}
	for _, r := range rows {
		names[r["name"].(string)] = r
	}
	for _, n := range []string{"nethttp_native", "module_native", "module_wasm", "wazero_naive", "rpc_plugin", "swap", "swap_back_to_back"} {
		if names[n] == nil {
			t.Fatalf("no %s row: %s", n, out.String())
		}
		if !strings.HasPrefix(n, "swap") {
			if rps, _ := names[n]["rps"].(float64); rps <= 0 {
				t.Errorf("%s: rps %v", n, names[n]["rps"])
			}
		}
	}
	for _, n := range []string{"swap", "swap_back_to_back"} {
		if f := names[n]["failed"].(float64); f != 0 {
			t.Fatalf("%s: %v failed requests", n, f)
		}
		if s := names[n]["swaps"].(float64); s != float64(httpbench.Quick().Swaps) {
			t.Fatalf("%s: %v swaps", n, s)
		}
	}
}
