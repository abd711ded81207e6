package hotswap

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var buf bytes.Buffer
	if err := Run(ctx, &buf, true, Options{Goroutines: 2, Phase: 100 * time.Millisecond, Swaps: 10}); err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		Name  string
		Value float64
	}
	if err := json.Unmarshal(buf.Bytes(), &rows); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	got := map[string]float64{}
	for _, r := range rows {
		got[r.Name] = r.Value
	}
	if got["failed_calls"] != 0 {
		t.Fatalf("%v failed calls during swaps", got["failed_calls"])
	}
	if got["calls"] == 0 || got["swap_p99"] == 0 || got["steady_p99"] == 0 {
		t.Fatalf("missing measurements: %v", got)
	}
}
