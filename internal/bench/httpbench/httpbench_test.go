package httpbench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"go.uber.org/goleak"

	"github.com/raceless/raceless/internal/bench/httpbench"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The quick run produces every row it claims, and the swap row fails no
// request.
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
	for _, n := range []string{"nethttp_native", "module_native", "module_wasm", "wazero_naive", "swap"} {
		if names[n] == nil {
			t.Fatalf("no %s row: %s", n, out.String())
		}
	}
	if f := names["swap"]["failed"].(float64); f != 0 {
		t.Fatalf("swap: %v failed requests", f)
	}
}
