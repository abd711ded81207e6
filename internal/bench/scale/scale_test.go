package scale

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestQuick runs the benchmark with its smoke options: every row comes
// out with every figure measured, and the table prints the ratios.
func TestQuick(t *testing.T) {
	var buf bytes.Buffer
	if err := Run(context.Background(), &buf, true, Quick()); err != nil {
		t.Fatal(err)
	}
	var rows []Row
	if err := json.Unmarshal(buf.Bytes(), &rows); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if len(rows) != 5 {
		t.Fatalf("%d rows, want 5: %+v", len(rows), rows)
	}
	for _, r := range rows {
		ok := r.ListUsPerItem > 0
		switch r.Kind {
		case "heap-control":
			ok = r.N == 100 && r.LoadP50Us > 0 && r.UnloadP50Us > 0
		case "modules":
			// The heap of 10 modules is within the collector's noise.
			ok = ok && r.LoadP50Us > 0 && r.UnloadP50Us > 0 && r.AcquireNs > 0 && r.AcquireSpreadNs > 0 && (r.N < 100 || r.HeapKBPerModule > 0)
		case "mounts":
			ok = ok && r.MountP50Us > 0 && r.UmountP50Us > 0 && r.LookupNs > 0 && r.LookupSpreadNs > 0
		default:
			ok = false
		}
		if !ok {
			t.Errorf("row with a figure missing: %+v", r)
		}
	}
	buf.Reset()
	if err := Run(context.Background(), &buf, false, Quick()); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "modules 100 / 10: load") || !strings.Contains(out, "mounts 100 / 10: mount") || !strings.Contains(out, "heap control: 10 modules beside 100") {
		t.Fatalf("table:\n%s", out)
	}
}
