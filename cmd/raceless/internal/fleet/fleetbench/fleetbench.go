// Package fleetbench measures what a fleet costs as it grows: for N
// simulated hosts (real daemons and agents, package fleet's SimHost) in
// this process against one single-node etcd, and M module files, the time
// from fleet set to every host converged (the rollout done: canary, then
// batches of a quarter of the rest), and the etcd traffic it took
// (requests and bytes, counted by a gRPC interceptor on every client), in
// all and per host. Each N runs against a fresh etcd. The CLI's
// "bench fleet" runs Run.
//
// It lives under cmd/raceless/internal (not internal/bench, beside the
// other benchmarks) because package fleet does: Go's internal rule.
package fleetbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/raceless/raceless/cmd/raceless/internal/desired"
	"github.com/raceless/raceless/cmd/raceless/internal/fleet"
)

// Options size the run. Zero values select the defaults.
type Options struct {
	// Hosts are the fleet sizes measured (default 1, 10 and 50).
	Hosts []int
	// Modules is how many module files the desired state names
	// (default 20).
	Modules int
	// ModuleSize is each module file's size in bytes (default 256 KiB).
	ModuleSize int
}

// Quick returns options for a smoke run (the figures mean nothing).
func Quick() Options { return Options{Hosts: []int{1, 3}, Modules: 3, ModuleSize: 4 << 10} }

func (o Options) withDefaults() Options {
	if len(o.Hosts) == 0 {
		o.Hosts = []int{1, 10, 50}
	}
	if o.Modules <= 0 {
		o.Modules = 20
	}
	if o.ModuleSize <= 0 {
		o.ModuleSize = 256 << 10
	}
	return o
}

// Row is one fleet size's figures.
type Row struct {
	Hosts      int `json:"hosts"`
	Modules    int `json:"modules"`
	ModuleSize int `json:"module_size"`
	// Steps is the rollout's steps: the canary, then the batches.
	Steps int `json:"steps"`
	// ConvergeMs is the time from fleet set to every host converged.
	ConvergeMs float64 `json:"converge_ms"`
	// Requests and Bytes are the etcd traffic from fleet set to the end
	// (every client: the operator's and the hosts'), sent and received.
	Requests int64 `json:"requests"`
	Bytes    int64 `json:"bytes"`
	// Per host: Requests/Hosts, Bytes/Hosts.
	RequestsPerHost float64 `json:"requests_per_host"`
	BytesPerHost    float64 `json:"bytes_per_host"`
}

// Measure runs every fleet size.
func Measure(ctx context.Context, opts Options) ([]Row, error) {
	opts = opts.withDefaults()
	var rows []Row
	for _, n := range opts.Hosts {
		r, err := measure(ctx, n, opts)
		if err != nil {
			return rows, fmt.Errorf("%d hosts: %w", n, err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func measure(ctx context.Context, n int, opts Options) (Row, error) {
	row := Row{Hosts: n, Modules: opts.Modules, ModuleSize: opts.ModuleSize}
	dir, err := os.MkdirTemp("", "rlfb")
	if err != nil {
		return row, err
	}
	defer os.RemoveAll(dir)
	srv, err := fleet.StartEtcd(fleet.EtcdConfig{DataDir: filepath.Join(dir, "etcd"), LogLevel: "fatal"})
	if err != nil {
		return row, err
	}
	defer srv.Close()
	var traffic fleet.Traffic
	op, err := fleet.Dial(srv.Endpoint, &traffic)
	if err != nil {
		return row, err
	}
	defer op.Close()
	var hosts []*fleet.SimHost
	var clients []io.Closer
	defer func() { // the hosts leave while their clients still work
		for _, h := range hosts {
			h.Stop()
		}
		for _, c := range clients {
			c.Close()
		}
	}()
	for i := 1; i <= n; i++ {
		cli, err := fleet.Dial(srv.Endpoint, &traffic)
		if err != nil {
			return row, err
		}
		clients = append(clients, cli)
		h, err := fleet.StartSim(fleet.SimConfig{Dir: filepath.Join(dir, "hosts"), Fleet: "bench", Name: fmt.Sprintf("h%03d", i), Client: cli})
		if err != nil {
			return row, err
		}
		hosts = append(hosts, h)
	}
	if _, err := fleet.Wait(ctx, op, "bench", func(st *fleet.Status) bool { return len(st.Hosts) == n }); err != nil {
		return row, err
	}
	st := &desired.State{}
	for i := 0; i < opts.Modules; i++ {
		p := filepath.Join(dir, fmt.Sprintf("mod%02d.sim", i))
		if err := os.WriteFile(p, fleet.SimModule(fmt.Sprintf("benchmod%02d", i), "1.0", false, 0, opts.ModuleSize), 0o600); err != nil {
			return row, err
		}
		st.Modules = append(st.Modules, desired.Module{File: p})
	}
	req0, sent0, recv0 := traffic.Requests.Load(), traffic.Sent.Load(), traffic.Received.Load()
	start := time.Now()
	rs, err := fleet.Set(ctx, op, "bench", st, dir, fleet.SetOptions{Rollout: fleet.RolloutSpec{Timeout: fleet.Duration(5 * time.Minute)}})
	if err != nil {
		return row, err
	}
	row.ConvergeMs = float64(time.Since(start).Microseconds()) / 1000
	if len(rs.Updated) != n {
		return row, fmt.Errorf("the rollout updated %d hosts of %d (lost %v)", len(rs.Updated), n, rs.Lost)
	}
	row.Steps = 1 + rs.Batches
	row.Requests = traffic.Requests.Load() - req0
	row.Bytes = traffic.Sent.Load() - sent0 + traffic.Received.Load() - recv0
	row.RequestsPerHost = float64(row.Requests) / float64(n)
	row.BytesPerHost = float64(row.Bytes) / float64(n)
	return row, nil
}

// Run measures and writes a table (or JSON), then the ratios of the
// largest fleet's figures to the smallest's.
func Run(ctx context.Context, w io.Writer, jsonOut bool, opts Options) error {
	rows, err := Measure(ctx, opts)
	if err != nil {
		return err
	}
	if jsonOut {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "hosts\tmodules\tKiB each\tsteps\tset→converged ms\tetcd requests\tetcd MiB\trequests/host\tKiB/host\tms/host\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%.0f\t%d\t%.1f\t%.1f\t%.0f\t%.1f\t\n", r.Hosts, r.Modules, r.ModuleSize>>10, r.Steps, r.ConvergeMs,
			r.Requests, float64(r.Bytes)/(1<<20), r.RequestsPerHost, r.BytesPerHost/1024, r.ConvergeMs/float64(r.Hosts))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rows) > 1 {
		a, b := rows[0], rows[len(rows)-1]
		k := float64(b.Hosts) / float64(a.Hosts)
		fmt.Fprintf(w, "hosts %d / %d (%.0f×): time %.2f×, requests %.2f×, bytes %.2f×; per host: requests %.2f×, bytes %.2f× (linear: per host ≤ 1×)\n",
			b.Hosts, a.Hosts, k, b.ConvergeMs/a.ConvergeMs, float64(b.Requests)/float64(a.Requests), float64(b.Bytes)/float64(a.Bytes),
			b.RequestsPerHost/a.RequestsPerHost, b.BytesPerHost/a.BytesPerHost)
	}
	return nil
}
