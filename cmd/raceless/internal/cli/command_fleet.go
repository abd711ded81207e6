package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
	"github.com/raceless/raceless/cmd/raceless/internal/desired"
	"github.com/raceless/raceless/cmd/raceless/internal/fleet"
)

// The fleet commands (docs/fleet.md): fleet set, status, drain, undrain
// talk to etcd, not to the daemon; fleet etcd runs a single-node etcd for
// trying a fleet on one machine.

var fleetFlags = []flagSpec{
	{long: "etcd", kind: requiredValue, arg: "ENDPOINTS", help: "etcd's client URLs, comma-separated (default $RACELESS_ETCD, else http://127.0.0.1:2379)"},
	{long: "fleet", kind: requiredValue, arg: "NAME", help: "the fleet (default $RACELESS_FLEET, else default)"},
	{long: "canary", kind: requiredValue, arg: "HOST", help: "set: the host that takes the new generation first (default: the first live host by name)"},
	{long: "canary-percent", kind: requiredValue, arg: "P", help: "set: the first P percent of the live hosts by name (at least one) are the canaries, unless --canary names one"},
	{long: "batch", kind: requiredValue, arg: "N", help: "set: how many hosts take it at once after the canary (default: a quarter of the rest, at least 1)"},
	{long: "health", kind: requiredValue, arg: "PATH", help: "set: ask every updated host GET PATH on its HTTP address; failures fail the rollout"},
	{long: "requests", kind: requiredValue, arg: "N", help: "set: health requests per host (default 10)"},
	{long: "max-error-rate", kind: requiredValue, arg: "R", help: "set: the share of health requests (0 to 1) that may fail (default 0)"},
	{long: "timeout", kind: requiredValue, arg: "D", help: "set: how long a step waits for its hosts to converge; drain: how long to wait for the host to drain (default 1m)"},
	{long: "data-dir", kind: requiredValue, arg: "DIR", help: "etcd: the member's data directory"},
	{long: "listen", kind: requiredValue, arg: "HOST:PORT", help: "etcd: where clients connect, or an absolute PATH: a unix socket (default 127.0.0.1:2379)"},
}

// fleetEndpoints is --etcd or its default.
func fleetEndpoints(e *env) string {
	if v := e.args.val("etcd"); v != "" {
		return v
	}
	if v := os.Getenv("RACELESS_ETCD"); v != "" {
		return v
	}
	return "http://127.0.0.1:2379"
}

// fleetName is --fleet or its default.
func fleetName(e *env) string {
	if v := e.args.val("fleet"); v != "" {
		return v
	}
	if v := os.Getenv("RACELESS_FLEET"); v != "" {
		return v
	}
	return "default"
}

// fleetReach is how long a fleet command waits for etcd to answer at all.
const fleetReach = 10 * time.Second

// dialFleet connects to etcd and checks that it answers.
func dialFleet(e *env) (*clientv3.Client, error) {
	eps := fleetEndpoints(e)
	cli, err := fleet.Dial(eps, nil)
	if err != nil {
		return nil, e.fail(err, "%v", err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, fleetReach)
	defer cancel()
	if _, err := cli.Get(ctx, fleet.Prefix, clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, e.fail(errors.Join(fleet.ErrUnreachable, err), "cannot reach etcd at %s: %v (is it running? see --etcd, RACELESS_ETCD)", eps, err)
	}
	return cli, nil
}

func runFleet(e *env) error {
	if len(e.args.pos) == 0 {
		return usageErrorf("want set, status, drain, undrain or etcd")
	}
	sub, args := e.args.pos[0], e.args.pos[1:]
	switch sub {
	case "set":
		if len(args) != 1 {
			return usageErrorf("fleet set takes one desired state FILE (or directory)")
		}
		return runFleetSet(e, args[0])
	case "status":
		if len(args) != 0 {
			return usageErrorf("unexpected argument %q", args[0])
		}
		return runFleetStatus(e)
	case "drain", "undrain":
		if len(args) != 1 {
			return usageErrorf("fleet %s takes one HOST", sub)
		}
		timeout := time.Minute
		if v := e.args.val("timeout"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return usageErrorf("bad --timeout %q", v)
			}
			timeout = d
		}
		cli, err := dialFleet(e)
		if err != nil {
			return err
		}
		defer cli.Close()
		name, host := fleetName(e), args[0]
		if err := fleet.Drain(e.ctx, cli, name, host, sub == "drain"); err != nil {
			return e.fail(err, "%v", err)
		}
		if sub == "undrain" {
			return nil
		}
		// Wait for a live host to have unloaded what the fleet loaded
		// (a host not in the fleet now drains when it comes).
		ctx, cancel := context.WithTimeout(e.ctx, timeout)
		defer cancel()
		var last fleet.HostStatus
		st, err := fleet.Wait(ctx, cli, name, func(st *fleet.Status) bool {
			for _, h := range st.Hosts {
				if h.Host == host {
					last = h
					return h.Draining && h.Target < 0 && h.Converged
				}
			}
			return true // not live
		})
		if err != nil {
			why := ""
			if last.Error != "" {
				why = ": " + oneLine(last.Error)
			}
			return e.fail(errors.Join(raceless.ErrBusy, err), "host %s has not drained within %s%s", host, timeout, why)
		}
		for _, h := range st.Hosts {
			if h.Host == host {
				fmt.Fprintf(e.stdout, "fleet %s: %s drained\n", name, host)
				return nil
			}
		}
		fmt.Fprintf(e.stdout, "fleet %s: %s is not live: it drains when it joins\n", name, host)
		return nil
	case "etcd":
		if len(args) != 0 {
			return usageErrorf("unexpected argument %q", args[0])
		}
		return runFleetEtcd(e)
	}
	return usageErrorf("unknown fleet command %q (set, status, drain, undrain or etcd)", sub)
}

// rolloutSpec reads set's rollout flags.
func rolloutSpec(e *env) (fleet.RolloutSpec, error) {
	var s fleet.RolloutSpec
	s.Canary, s.Health = e.args.val("canary"), e.args.val("health")
	if s.Health != "" && !strings.HasPrefix(s.Health, "/") {
		return s, usageErrorf("bad --health %q: a path starting with /", s.Health)
	}
	for _, f := range []struct {
		name string
		to   *int
	}{{"batch", &s.Batch}, {"requests", &s.Requests}} {
		if v := e.args.val(f.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return s, usageErrorf("bad --%s %q", f.name, v)
			}
			*f.to = n
		}
	}
	if v := e.args.val("canary-percent"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p <= 0 || p > 100 {
			return s, usageErrorf("bad --canary-percent %q (1 to 100)", v)
		}
		s.CanaryPercent = p
	}
	if v := e.args.val("max-error-rate"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r < 0 || r > 1 {
			return s, usageErrorf("bad --max-error-rate %q (0 to 1)", v)
		}
		s.MaxErrorRate = r
	}
	if v := e.args.val("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return s, usageErrorf("bad --timeout %q", v)
		}
		s.Timeout = fleet.Duration(d)
	}
	return s, nil
}

func runFleetSet(e *env, path string) error {
	spec, err := rolloutSpec(e)
	if err != nil {
		return err
	}
	st, err := desired.Load(path)
	if err != nil {
		return e.fail(err, "%v", err)
	}
	cli, err := dialFleet(e)
	if err != nil {
		return err
	}
	defer cli.Close()
	author := "unknown"
	if h, err := os.Hostname(); err == nil {
		author = fmt.Sprintf("%s pid %d", h, os.Getpid())
	}
	name := fleetName(e)
	progress := func(r fleet.RolloutState) {
		if e.args.has("json") {
			return
		}
		switch r.Phase {
		case fleet.PhaseCanary:
			fmt.Fprintf(e.stdout, "fleet %s: generation %d (previous %d): canary %s\n", name, r.Generation, r.Previous, r.Canary)
		case fleet.PhaseBatch:
			fmt.Fprintf(e.stdout, "fleet %s: generation %d: batch %d of %d\n", name, r.Generation, r.Batch, r.Batches)
		}
	}
	base, _ := filepath.Abs(filepath.Dir(path))
	rs, err := fleet.Set(e.ctx, cli, name, st, base, fleet.SetOptions{Rollout: spec, Author: author, Progress: progress})
	if e.args.has("json") && rs.Generation > 0 {
		if jerr := e.printJSON(rs); jerr != nil {
			return jerr
		}
	}
	if err != nil {
		return e.fail(err, "%v", err)
	}
	if !e.args.has("json") {
		fmt.Fprintf(e.stdout, "fleet %s: generation %d done: updated %s", name, rs.Generation, orNone(rs.Updated))
		if len(rs.Lost) > 0 {
			fmt.Fprintf(e.stdout, "; lost %s", strings.Join(rs.Lost, " "))
		}
		if rs.Reason != "" {
			fmt.Fprintf(e.stdout, " (%s)", rs.Reason)
		}
		fmt.Fprintln(e.stdout)
	}
	return nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, " ")
}

func runFleetStatus(e *env) error {
	cli, err := dialFleet(e)
	if err != nil {
		return err
	}
	defer cli.Close()
	st, err := fleet.ReadStatus(e.ctx, cli, fleetName(e))
	if err != nil {
		return e.fail(err, "%v", err)
	}
	if e.args.has("json") {
		return e.printJSON(st)
	}
	desiredGen := int64(0)
	if st.Desired != nil {
		desiredGen = st.Desired.Generation
	}
	fmt.Fprintf(e.stdout, "fleet %s: desired generation %d, stable %d\n", st.Fleet, desiredGen, st.Stable)
	if r := st.Rollout; r != nil {
		line := fmt.Sprintf("rollout of generation %d: %s", r.Generation, r.Phase)
		if r.Phase == fleet.PhaseBatch {
			line += fmt.Sprintf(" %d of %d", r.Batch, r.Batches)
		}
		if r.Canary != "" && !strings.HasPrefix(r.Reason, "canary ") { // else the reason names it
			line += ", canary " + r.Canary
		}
		if len(r.Updated) > 0 {
			line += ", updated " + strings.Join(r.Updated, " ")
		}
		if len(r.Lost) > 0 {
			line += ", lost " + strings.Join(r.Lost, " ")
		}
		if r.Reason != "" {
			line += ": " + r.Reason
		}
		if (r.Phase == fleet.PhaseCanary || r.Phase == fleet.PhaseBatch) && st.Controller == "" {
			line += " (its controller is gone: the next fleet set takes over)"
		}
		fmt.Fprintln(e.stdout, line)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tGENERATION\tTARGET\tCONVERGED\tMODULES\tERROR")
	for _, h := range st.Hosts {
		conv := "no"
		switch {
		case h.Draining:
			conv = "draining"
		case h.Converged:
			conv = "yes"
		}
		var mods []string
		for _, m := range h.Modules {
			s := m.Name
			if m.Version != "" {
				s += "@" + m.Version
			}
			if m.State != "live" {
				s += "(" + m.State + ")"
			}
			mods = append(mods, s)
		}
		target := strconv.FormatInt(h.Target, 10)
		if h.Target < 0 {
			target = "drain"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", h.Host, h.Generation, target, conv, strings.Join(mods, ","), oneLine(h.Error))
	}
	return tw.Flush()
}

func runFleetEtcd(e *env) error {
	dir := e.args.val("data-dir")
	if dir == "" {
		return usageErrorf("fleet etcd needs --data-dir DIR")
	}
	listen := e.args.val("listen")
	if listen == "" {
		listen = "127.0.0.1:2379"
	}
	srv, err := fleet.StartEtcd(fleet.EtcdConfig{DataDir: dir, Client: listen})
	if err != nil {
		return e.fail(err, "%v", err)
	}
	defer srv.Close()
	fmt.Fprintf(e.stdout, "etcd (single node, for trying a fleet only) serves %s, data in %s\n", srv.Endpoint, dir)
	select {
	case <-e.ctx.Done():
		return nil
	case err := <-srv.Err():
		return e.fail(err, "etcd: %v", err)
	}
}

// dialServeFleet checks serve's fleet flags and connects to etcd (nil
// without --etcd). Whether etcd answers is not checked: a host starts,
// and follows the fleet once etcd is there.
func dialServeFleet(e *env, sf *serveFlags) (*clientv3.Client, error) {
	if *sf.etcd == "" {
		if *sf.fleet != "" || *sf.fleetHost != "" || *sf.blobDir != "" {
			return nil, usageErrorf("--fleet, --host and --blob-dir need --etcd")
		}
		return nil, nil
	}
	if *sf.fleet == "" {
		return nil, usageErrorf("--etcd needs --fleet NAME")
	}
	if *sf.config != "" {
		return nil, usageErrorf("--config and --etcd cannot be combined: the host follows one desired state")
	}
	if !raceless.ValidName(*sf.fleet) {
		return nil, usageErrorf("bad --fleet %q: not a name", *sf.fleet)
	}
	if *sf.fleetHost == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, e.fail(err, "cannot start: no --host given and no host name: %v", err)
		}
		*sf.fleetHost = h
	}
	if !raceless.ValidName(*sf.fleetHost) {
		return nil, usageErrorf("bad --host %q: not a name (letters, digits, _ and -)", *sf.fleetHost)
	}
	if *sf.blobDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, e.fail(err, "cannot start: no --blob-dir given and no user cache directory: %v", err)
		}
		*sf.blobDir = filepath.Join(base, "raceless", "blobs")
	}
	cli, err := fleet.Dial(*sf.etcd, nil)
	if err != nil {
		return nil, e.fail(err, "cannot start: %v", err)
	}
	return cli, nil
}

// runServeAgent starts the fleet agent of a serving daemon (nothing
// without --etcd); the returned stop makes it leave the fleet (report
// draining, revoke its lease) and waits for it. A SIGTERM stops both the
// agent and the daemon, whose shutdown unloads with wait.
func runServeAgent(e *env, sf *serveFlags, cli *clientv3.Client, d *daemon.Daemon, log *slog.Logger) (stop func()) {
	if cli == nil {
		return func() {}
	}
	a, err := fleet.NewAgent(fleet.AgentConfig{Client: cli, Fleet: *sf.fleet, Host: *sf.fleetHost, Daemon: d, CacheDir: *sf.blobDir, Logger: log})
	if err != nil { // dialServeFleet checked every field
		panic(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Run(ctx)
	}()
	log.Info("following the fleet", "etcd", *sf.etcd, "fleet", *sf.fleet, "host", *sf.fleetHost, "blobs", *sf.blobDir)
	return func() {
		cancel()
		<-done
	}
}
