package fleetbench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/raceless/raceless/internal/testdeadline"
)

// Every host, client and etcd the benchmark starts is gone when it
// returns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The quick run (bench fleet --quick) works and its figures hang
// together: every size converged, traffic counted (at least every host's
// fetch of every module), per-host figures the totals divided, and no
// more per host in the larger fleet.
func TestQuick(t *testing.T) {
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	var out bytes.Buffer
	if err := Run(ctx, &out, true, Quick()); err != nil {
		t.Fatal(err)
	}
	var rows []Row
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	q := Quick()
	if len(rows) != len(q.Hosts) {
		t.Fatalf("%d rows, want %d", len(rows), len(q.Hosts))
	}
	for i, r := range rows {
		if r.Hosts != q.Hosts[i] || r.Modules != q.Modules || r.ConvergeMs <= 0 || r.Requests <= 0 ||
			r.Bytes < int64(r.Hosts*r.Modules*r.ModuleSize) || r.RequestsPerHost != float64(r.Requests)/float64(r.Hosts) {
			t.Errorf("row %+v", r)
		}
	}
	// Linear growth: the traffic per host does not grow with the fleet
	// (traffic, unlike time, barely depends on the machine's load; the
	// margin covers keepalives, which do).
	a, b := rows[0], rows[len(rows)-1]
	if b.RequestsPerHost > 1.5*a.RequestsPerHost || b.BytesPerHost > 1.5*a.BytesPerHost {
		t.Errorf("per host, %d hosts cost more than %d: %+v, %+v", b.Hosts, a.Hosts, b, a)
	}
	out.Reset()
	if err := Run(context.Background(), &out, false, Options{Hosts: []int{1, 2}, Modules: 1, ModuleSize: 100}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "hosts 2 / 1 (2×): time") {
		t.Errorf("table:\n%s", out.String())
	}
}
