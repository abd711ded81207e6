package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/desired"
	"github.com/raceless/raceless/internal/testdeadline"
)

// Every goroutine of ours ends, and so do etcd's server's and clients'
// once they are closed (no goleak exception is needed).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// quietEtcd is etcd's log level in the tests: its shutdown logs "errors"
// (listeners closed) that are none.
const quietEtcd = "fatal"

// startEtcd starts a single-node etcd for the test, its client socket in a
// short temporary directory (a unix socket's path is limited).
func startEtcd(t *testing.T) *Etcd {
	t.Helper()
	dir, err := os.MkdirTemp("", "rlf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e, err := StartEtcd(EtcdConfig{DataDir: dir, LogLevel: quietEtcd})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func dial(t *testing.T, e *Etcd, tr *Traffic) *clientv3.Client {
	t.Helper()
	cli, err := Dial(e.Endpoint, tr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// logWatch is a slog handler that signals every message containing a
// text (the tests wait for that exact event, counted).
type logWatch struct {
	mu   sync.Mutex // guards seen
	seen map[string]chan struct{}
}

func newLogWatch() *logWatch { return &logWatch{seen: map[string]chan struct{}{}} }

// ch returns the channel that receives one value per message containing
// text (up to 64 not yet received).
func (w *logWatch) ch(text string) chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	c, ok := w.seen[text]
	if !ok {
		c = make(chan struct{}, 64)
		w.seen[text] = c
	}
	return c
}

func (w *logWatch) Enabled(context.Context, slog.Level) bool { return true }
func (w *logWatch) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for text, c := range w.seen {
		if strings.Contains(r.Message, text) {
			select {
			case c <- struct{}{}:
			default:
			}
		}
	}
	return nil
}
func (w *logWatch) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *logWatch) WithGroup(string) slog.Handler      { return w }

type hostOpts struct {
	http bool
	ttl  time.Duration
	log  map[string]*logWatch // by host
}

// startHosts starts simulated hosts h1..hN of fleet, each with its own
// client (as separate machines have).
func startHosts(t *testing.T, e *Etcd, fleet string, n int, o hostOpts) []*SimHost {
	t.Helper()
	dir := t.TempDir()
	var hosts []*SimHost
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("h%d", i)
		var log *slog.Logger
		if w := o.log[name]; w != nil {
			log = slog.New(w)
		}
		h, err := StartSim(SimConfig{Dir: dir, Fleet: fleet, Name: name, Client: dial(t, e, nil), HTTP: o.http, TTL: o.ttl, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
		t.Cleanup(h.Stop)
	}
	return hosts
}

// waitStatus waits until cond holds for the fleet's status, re-reading it
// at every change of the fleet's keys (a watch: no polling).
func waitStatus(t *testing.T, cli *clientv3.Client, fleet, what string, cond func(*Status) bool) *Status {
	t.Helper()
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	st, err := Wait(ctx, cli, fleet, cond)
	if err != nil {
		b, _ := json.MarshalIndent(st, "", "  ")
		t.Fatalf("waiting for %s: %v; last status:\n%s", what, err, b)
	}
	return st
}

func hostByName(st *Status, name string) (HostStatus, bool) {
	for _, h := range st.Hosts {
		if h.Host == name {
			return h, true
		}
	}
	return HostStatus{}, false
}

// allOn is a condition: n live hosts, each converged on generation gen.
func allOn(n int, gen int64) func(*Status) bool {
	return func(st *Status) bool {
		if len(st.Hosts) != n {
			return false
		}
		for _, h := range st.Hosts {
			if h.Target != gen || !h.Converged || h.Generation != gen {
				return false
			}
		}
		return true
	}
}

func runs(h HostStatus, name, version string) bool {
	return slices.ContainsFunc(h.Modules, func(m ModuleRun) bool {
		return m.Name == name && m.Version == version && m.State == "live"
	})
}

// simState writes sim module files into dir and returns a state naming
// them by file (with their digests), and the built-in hello_consumer.
func simState(t *testing.T, dir string, mods ...[]byte) *desired.State {
	t.Helper()
	st := &desired.State{Modules: []desired.Module{{Name: "hello_consumer"}}}
	for i, b := range mods {
		p := filepath.Join(dir, fmt.Sprintf("m%d-%s.sim", i, Digest(b)[7:15]))
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		st.Modules = append(st.Modules, desired.Module{File: p, Digest: Digest(b)})
	}
	return st
}

func set(t *testing.T, cli *clientv3.Client, fleet string, st *desired.State, spec RolloutSpec, progress func(RolloutState)) (RolloutState, error) {
	t.Helper()
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	if spec.Timeout == 0 {
		spec.Timeout = Duration(2 * time.Minute) // a busy -race machine
	}
	return Set(ctx, cli, fleet, st, "", SetOptions{Rollout: spec, Author: t.Name(), Progress: progress})
}

// Blobs are chunked under etcd's request limit, read back whole, and a
// chunk changed in etcd is refused by its digest.
func TestBlobChunksAndDigest(t *testing.T) {
	e := startEtcd(t)
	cli := dial(t, e, nil)
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	k, _ := newKeys("blobs")
	data := SimModule("big", "1", false, 0, 2<<20+12345)
	digest, err := putBlob(ctx, cli, k, data)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := digestHex(digest)
	resp, err := cli.Get(ctx, k.blob(h), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	chunks := 0
	for _, kv := range resp.Kvs {
		if strings.HasSuffix(string(kv.Key), "manifest") {
			continue
		}
		chunks++
		if len(kv.Value) > ChunkSize {
			t.Errorf("%s: %d bytes, more than ChunkSize", kv.Key, len(kv.Value))
		}
	}
	if want := (len(data) + ChunkSize - 1) / ChunkSize; chunks != want {
		t.Errorf("%d chunks, want %d", chunks, want)
	}
	got, err := getBlob(ctx, cli, k, digest)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("getBlob: %d bytes, %v", len(got), err)
	}
	if _, err := getBlob(ctx, cli, k, Digest([]byte("absent"))); !errors.Is(err, ErrBlobMissing) || !errors.Is(err, raceless.ErrNotFound) {
		t.Errorf("absent blob: %v", err)
	}
	if _, err := cli.Put(ctx, k.chunk(h, 1), "tampered"); err != nil {
		t.Fatal(err)
	}
	if _, err := getBlob(ctx, cli, k, digest); !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), digest) {
		t.Errorf("tampered blob: %v", err)
	}
	dir := t.TempDir()
	if _, err := cachedBlob(ctx, cli, k, dir, digest); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("tampered blob cached: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("the cache kept %d files of a refused blob", len(ents))
	}
}

// fleet set on three hosts: every host converges on the generation
// (a built-in module and a file module fetched from etcd), the status
// says so per host; a second generation rolls out canary first, then the
// batches.
func TestSetConvergesAndRollsOut(t *testing.T) {
	e := startEtcd(t)
	cli := dial(t, e, nil)
	startHosts(t, e, "f", 3, hostOpts{http: true})
	waitStatus(t, cli, "f", "3 hosts", func(st *Status) bool { return len(st.Hosts) == 3 })
	dir := t.TempDir()
	rs, err := set(t, cli, "f", simState(t, dir, SimModule("simmod", "1.0", false, 0, 1<<20)), RolloutSpec{Health: "/sim/simmod"}, nil)
	if err != nil || rs.Phase != PhaseDone || rs.Canary != "h1" || len(rs.Updated) != 3 {
		t.Fatalf("set: %+v, %v", rs, err)
	}
	st, err := ReadStatus(context.Background(), cli, "f")
	if err != nil {
		t.Fatal(err)
	}
	if st.Stable != 1 || st.Desired == nil || st.Desired.Generation != 1 || st.Controller != "" || len(st.Assigned) != 0 {
		t.Fatalf("status after set: %+v", st)
	}
	for _, h := range st.Hosts {
		if !h.Converged || h.Generation != 1 || !runs(h, "simmod", "1.0") || !runs(h, "hello_consumer", "") && !slices.ContainsFunc(h.Modules, func(m ModuleRun) bool { return m.Name == "hello_consumer" }) {
			t.Errorf("host %s: %+v", h.Host, h)
		}
	}
	var phases []string
	stop := statusLog(t, cli, "f")
	rs, err = set(t, cli, "f", simState(t, dir, SimModule("simmod", "2.0", false, 0, 1<<20)), RolloutSpec{Batch: 1, Health: "/sim/simmod"},
		func(r RolloutState) { phases = append(phases, fmt.Sprintf("%s:%d:%v", r.Phase, r.Batch, r.Updated)) })
	if err != nil || rs.Phase != PhaseDone || rs.Previous != 1 || rs.Generation != 2 {
		t.Fatalf("set 2: %+v, %v", rs, err)
	}
	want := []string{"canary:0:[]", "batch:1:[h1]", "batch:2:[h1 h2]", "done:2:[h1 h2 h3]"}
	if !slices.Equal(phases, want) {
		t.Errorf("rollout steps %q, want %q", phases, want)
	}
	st = waitStatus(t, cli, "f", "all on 2", allOn(3, 2))
	// No flapping: the rollout's last transaction (stable = 2, the
	// assignments deleted) never sends a host back to generation 1.
	last := map[string]int64{}
	for _, hs := range stop() {
		if hs.Target < last[hs.Host] {
			t.Errorf("host %s went from generation %d back to %d during a rollout that succeeded", hs.Host, last[hs.Host], hs.Target)
		}
		last[hs.Host] = hs.Target
	}
	for _, h := range st.Hosts {
		if !runs(h, "simmod", "2.0") {
			t.Errorf("host %s does not run simmod 2.0: %+v", h.Host, h.Modules)
		}
	}
	// Half the fleet as canaries (two of three, rounded up), then the
	// rest.
	phases = nil
	rs, err = set(t, cli, "f", simState(t, dir, SimModule("simmod", "2.5", false, 0, 1000)), RolloutSpec{CanaryPercent: 50},
		func(r RolloutState) { phases = append(phases, fmt.Sprintf("%s:%d:%v", r.Phase, r.Batch, r.Updated)) })
	if err != nil || rs.Canary != "h1 h2" {
		t.Fatalf("set 2.5: %+v, %v", rs, err)
	}
	if want := []string{"canary:0:[]", "batch:1:[h1 h2]", "done:1:[h1 h2 h3]"}; !slices.Equal(phases, want) {
		t.Errorf("rollout steps %q, want %q", phases, want)
	}
	// Another generation: the older ones' documents and files are
	// collected, the previous one's kept (what a rollback returns to).
	v2, v3 := SimModule("simmod", "2.5", false, 0, 1000), SimModule("simmod", "3.0", false, 0, 1<<20)
	if _, err := set(t, cli, "f", simState(t, dir, v3), RolloutSpec{}, nil); err != nil {
		t.Fatal(err)
	}
	k, _ := newKeys("f")
	resp, err := cli.Get(context.Background(), k.root, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, kv := range resp.Kvs {
		key := strings.TrimPrefix(string(kv.Key), k.root)
		if strings.HasPrefix(key, "states/") || strings.HasSuffix(key, "/manifest") {
			kept = append(kept, key)
		}
		if strings.HasPrefix(key, "blobs/") && !strings.Contains(key, Digest(v2)[7:]) && !strings.Contains(key, Digest(v3)[7:]) {
			t.Errorf("%s kept: no generation kept names it", key)
		}
	}
	h2, _ := digestHex(Digest(v2))
	h3, _ := digestHex(Digest(v3))
	want = []string{"blobs/sha256/" + h2 + "/manifest", "blobs/sha256/" + h3 + "/manifest", "states/3", "states/4"}
	slices.Sort(want)
	if !slices.Equal(kept, want) {
		t.Errorf("after generation 4, kept %q, want %q", kept, want)
	}
}

// Two operators writing the desired state at once: one wins, the other
// gets ErrConflict, and nothing of the loser's is written.
func TestTwoOperators(t *testing.T) {
	e := startEtcd(t)
	cli := dial(t, e, nil)
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	k, _ := newKeys("ops")
	dir := t.TempDir()
	a, err := upload(ctx, cli, k, simState(t, dir, SimModule("a", "1", false, 0, 100)), "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := upload(ctx, cli, k, simState(t, dir, SimModule("b", "1", false, 0, 100)), "")
	if err != nil {
		t.Fatal(err)
	}
	// Both read the same revision, then both write: the transaction lets
	// exactly one through.
	ra, err := begin(ctx, cli, k, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ra.release()
	rb, err := begin(ctx, cli, k, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer rb.release()
	if err := rb.commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	err = ra.commit(ctx, a)
	if !errors.Is(err, ErrConflict) || !errors.Is(err, raceless.ErrBusy) {
		t.Fatalf("second writer: %v, want ErrConflict", err)
	}
	st, err := ReadStatus(ctx, cli, "ops")
	if err != nil {
		t.Fatal(err)
	}
	if st.Desired == nil || st.Desired.Generation != 1 || st.Desired.State.Modules[1].Digest != b.State.Modules[1].Digest {
		t.Fatalf("desired after the race: %+v", st.Desired)
	}
	resp, err := cli.Get(ctx, k.statesPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 1 {
		t.Fatalf("%d generations written (%v), want 1", resp.Count, err)
	}
	rb.release() // the winner's controller ends (its rollout never ran)
	// And through Set, from two goroutines at once: one succeeds, the
	// other is refused whole (the race decides which refusal).
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, m := range []string{"c", "d"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = Set(ctx, cli, "ops", simState(t, dir, SimModule(m, "1", false, 0, 100)), "", SetOptions{})
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case errors.Is(err, ErrConflict), errors.Is(err, ErrRolloutInProgress):
		default:
			t.Errorf("a writer failed otherwise: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d writers won (%v), want 1", won, errs)
	}
	st, _ = ReadStatus(ctx, cli, "ops")
	if st.Desired.Generation != 2 || st.Stable != 2 || st.Rollout.Phase != PhaseDone {
		t.Fatalf("after the concurrent writers: desired %d, stable %d, rollout %+v", st.Desired.Generation, st.Stable, st.Rollout)
	}
}

// statusLog records every status every host reported from now on.
func statusLog(t *testing.T, cli *clientv3.Client, fleet string) (stop func() []HostStatus) {
	ctx, cancel := context.WithCancel(context.Background())
	k, _ := newKeys(fleet)
	resp, err := cli.Get(ctx, k.hostsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	wch := cli.Watch(ctx, k.hostsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	var mu sync.Mutex // guards seen
	var seen []HostStatus
	done := make(chan struct{})
	go func() {
		defer close(done)
		for wr := range wch {
			for _, ev := range wr.Events {
				var hs HostStatus
				if ev.Type == clientv3.EventTypePut && json.Unmarshal(ev.Kv.Value, &hs) == nil {
					mu.Lock()
					seen = append(seen, hs)
					mu.Unlock()
				}
			}
		}
	}()
	return func() []HostStatus {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}

// A module whose init fails on the canary: the rollout stops, the canary
// is back on the previous generation, the other hosts never saw the new
// one, and the status says why.
func TestCanaryInitFails(t *testing.T) {
	e := startEtcd(t)
	cli := dial(t, e, nil)
	startHosts(t, e, "f", 3, hostOpts{})
	waitStatus(t, cli, "f", "3 hosts", func(st *Status) bool { return len(st.Hosts) == 3 })
	dir := t.TempDir()
	if _, err := set(t, cli, "f", simState(t, dir, SimModule("simmod", "1.0", false, 0, 1000)), RolloutSpec{}, nil); err != nil {
		t.Fatal(err)
	}
	stop := statusLog(t, cli, "f")
	rs, err := set(t, cli, "f", simState(t, dir, SimModule("simmod", "2.0", true, 0, 1000)), RolloutSpec{Canary: "h2"}, nil)
	seen := stop()
	if !errors.Is(err, ErrRolloutFailed) || rs.Phase != PhaseFailed || rs.Canary != "h2" {
		t.Fatalf("set: %+v, %v", rs, err)
	}
	t.Logf("fleet set: %v", err)
	if !strings.Contains(rs.Reason, "canary h2:") || !strings.Contains(rs.Reason, "init fails") || !strings.Contains(rs.Reason, "h2 back on generation 1") {
		t.Errorf("reason %q", rs.Reason)
	}
	for _, hs := range seen {
		if hs.Host != "h2" && hs.Target == 2 {
			t.Errorf("host %s was moved to the failed generation: %+v", hs.Host, hs)
		}
	}
	st := waitStatus(t, cli, "f", "all back on 1", allOn(3, 1))
	if st.Stable != 1 || st.Desired.Generation != 2 || st.Rollout.Phase != PhaseFailed || st.Rollout.Reason != rs.Reason || len(st.Assigned) != 0 {
		t.Fatalf("status: stable %d desired %d rollout %+v assigned %v", st.Stable, st.Desired.Generation, st.Rollout, st.Assigned)
	}
	for _, h := range st.Hosts {
		if !runs(h, "simmod", "1.0") {
			t.Errorf("host %s does not run simmod 1.0: %+v", h.Host, h.Modules)
		}
	}
}

// A digest mismatch: fleet set refuses a file that is not the digest its
// state names (nothing written); a blob changed in etcd is refused by the
// canary, which keeps what it runs and reports why.
func TestDigestMismatch(t *testing.T) {
	e := startEtcd(t)
	cli := dial(t, e, nil)
	startHosts(t, e, "f", 2, hostOpts{})
	waitStatus(t, cli, "f", "2 hosts", func(st *Status) bool { return len(st.Hosts) == 2 })
	dir := t.TempDir()
	good := SimModule("simmod", "1.0", false, 0, 1000)
	st := simState(t, dir, good)
	st.Modules[1].Digest = Digest([]byte("other bytes"))
	if _, err := set(t, cli, "f", st, RolloutSpec{}, nil); !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), st.Modules[1].File) {
		t.Fatalf("set with a wrong digest: %v", err)
	}
	if s, _ := ReadStatus(context.Background(), cli, "f"); s.Desired != nil {
		t.Fatalf("a refused set wrote generation %d", s.Desired.Generation)
	}
	if _, err := set(t, cli, "f", simState(t, dir, good), RolloutSpec{}, nil); err != nil {
		t.Fatal(err)
	}
	// Version 2's blob is stored, then one of its bytes changed in etcd.
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	k, _ := newKeys("f")
	v2 := SimModule("simmod", "2.0", false, 0, 1000)
	digest, err := putBlob(ctx, cli, k, v2)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := digestHex(digest)
	tampered := bytes.Replace(v2, []byte("version=2.0"), []byte("version=6.6"), 1)
	if _, err := cli.Put(ctx, k.chunk(h, 0), string(tampered)); err != nil {
		t.Fatal(err)
	}
	rs, err := set(t, cli, "f", simState(t, dir, v2), RolloutSpec{}, nil)
	if !errors.Is(err, ErrRolloutFailed) || !strings.Contains(rs.Reason, "digest mismatch") || !strings.Contains(rs.Reason, digest) {
		t.Fatalf("set with a tampered blob: %+v, %v", rs, err)
	}
	s := waitStatus(t, cli, "f", "all on 1", allOn(2, 1))
	for _, hs := range s.Hosts {
		if !runs(hs, "simmod", "1.0") {
			t.Errorf("host %s: %+v", hs.Host, hs.Modules)
		}
	}
}

// etcd stopped and restarted while hosts run: the hosts keep what they
// run while it is gone, do not reconcile again when it is back (no
// flapping), and report again. Then etcd goes away again and, while the
// hosts cannot reach it, two generations are made stable (through a
// second client socket of the same data): back, each host catches up with
// one reconciliation, to the latest.
func TestEtcdRestart(t *testing.T) {
	dir, err := os.MkdirTemp("", "rlf")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	e, err := StartEtcd(EtcdConfig{DataDir: dir, LogLevel: quietEtcd})
	if err != nil {
		t.Fatal(err)
	}
	peer := e.cfg.ListenPeerUrls[0].Host
	cli := dial(t, e, nil)
	logs := map[string]*logWatch{"h1": newLogWatch(), "h2": newLogWatch()}
	lost := []chan struct{}{logs["h1"].ch("lost etcd"), logs["h2"].ch("lost etcd")}
	hosts := startHosts(t, e, "f", 2, hostOpts{ttl: 2 * time.Second, log: logs})
	waitStatus(t, cli, "f", "2 hosts", func(st *Status) bool { return len(st.Hosts) == 2 })
	mods := t.TempDir()
	if _, err := set(t, cli, "f", simState(t, mods, SimModule("simmod", "1.0", false, 0, 1000)), RolloutSpec{}, nil); err != nil {
		t.Fatal(err)
	}
	before := waitStatus(t, cli, "f", "all on 1", allOn(2, 1))
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	outage := func(srv *Etcd) {
		t.Helper()
		srv.Close()
		for i, c := range lost {
			select {
			case <-c:
			case <-ctx.Done():
				t.Fatalf("h%d never noticed etcd was gone", i+1)
			}
		}
		for _, h := range hosts {
			if m, ok := h.Daemon.Host().Module("simmod"); !ok || m.State() != raceless.StateLive {
				t.Fatalf("%s dropped simmod while etcd was gone", h.Name)
			}
		}
	}
	outage(e)
	e2, err := StartEtcd(EtcdConfig{DataDir: dir, Peer: peer, LogLevel: quietEtcd})
	if err != nil {
		t.Fatal(err)
	}
	after := waitStatus(t, cli, "f", "both back", func(st *Status) bool {
		return allOn(2, 1)(st) && !st.Hosts[0].Updated.Equal(before.Hosts[0].Updated) && !st.Hosts[1].Updated.Equal(before.Hosts[1].Updated)
	})
	for i := range after.Hosts {
		if after.Hosts[i].Reconciles != before.Hosts[i].Reconciles {
			t.Errorf("%s reconciled again after etcd came back: %d, then %d", after.Hosts[i].Host, before.Hosts[i].Reconciles, after.Hosts[i].Reconciles)
		}
	}

	outage(e2)
	alt, err := StartEtcd(EtcdConfig{DataDir: dir, Client: filepath.Join(dir, "alt.sock"), Peer: peer, LogLevel: quietEtcd})
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer alt.Close()
		op := dial(t, alt, nil)
		defer op.Close() // before alt.Close: a server with clients takes seconds to stop
		k, _ := newKeys("f")
		for gen, v := range map[int64]string{2: "2.0", 3: "3.0"} {
			doc, err := upload(ctx, op, k, simState(t, mods, SimModule("simmod", v, false, 0, 1000)), "")
			if err != nil {
				t.Fatal(err)
			}
			doc.Generation = gen
			b, _ := json.Marshal(doc)
			if _, err := op.Put(ctx, k.state(gen), string(b)); err != nil {
				t.Fatal(err)
			}
		}
		for _, gen := range []string{"2", "3"} {
			if _, err := op.Put(ctx, k.stable(), gen); err != nil {
				t.Fatal(err)
			}
		}
	}()
	e3, err := StartEtcd(EtcdConfig{DataDir: dir, Peer: peer, LogLevel: quietEtcd})
	if err != nil {
		t.Fatal(err)
	}
	defer e3.Close()
	defer func() { // before e3.Close: a server with clients takes seconds to stop
		for _, h := range hosts {
			h.Stop()
		}
	}()
	caught := waitStatus(t, cli, "f", "both on 3", allOn(2, 3))
	for i, h := range caught.Hosts {
		if h.Reconciles != after.Hosts[i].Reconciles+1 || !runs(h, "simmod", "3.0") {
			t.Errorf("%s caught up with %d reconciliations (want 1), running %+v", h.Host, h.Reconciles-after.Hosts[i].Reconciles, h.Modules)
		}
	}
}

// A host killed in the middle of a rollout (its process gone: no leave,
// its lease expires): the rollout does not hang on it, completes on the
// others and names it lost.
func TestHostKilledMidRollout(t *testing.T) {
	e := startEtcd(t)
	cli := dial(t, e, nil)
	dir := t.TempDir()
	var hosts []*SimHost
	var clients []*clientv3.Client
	for i := 1; i <= 3; i++ {
		c, err := Dial(e.Endpoint, nil)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		// TTL 3s: the killed host's lease expires soon, the others'
		// keepalives (every second) have room on a loaded machine.
		h, err := StartSim(SimConfig{Dir: dir, Fleet: "f", Name: fmt.Sprintf("h%d", i), Client: c, TTL: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	defer func() {
		for i, h := range hosts {
			h.Stop()
			clients[i].Close()
		}
	}()
	waitStatus(t, cli, "f", "3 hosts", func(st *Status) bool { return len(st.Hosts) == 3 })
	mods := t.TempDir()
	if _, err := set(t, cli, "f", simState(t, mods, SimModule("simmod", "1.0", false, 0, 1000)), RolloutSpec{}, nil); err != nil {
		t.Fatal(err)
	}
	killed := false
	rs, err := set(t, cli, "f", simState(t, mods, SimModule("simmod", "2.0", false, 0, 1000)), RolloutSpec{Batch: 1},
		func(r RolloutState) {
			if r.Phase == PhaseBatch && r.Batch == 1 && !killed {
				// h2 is about to be assigned: its connection dies
				// with it (no revoke), as a killed process's does.
				killed = true
				clients[1].Close()
			}
		})
	if err != nil || rs.Phase != PhaseDone || !slices.Equal(rs.Lost, []string{"h2"}) || !slices.Equal(rs.Updated, []string{"h1", "h3"}) {
		t.Fatalf("rollout with a killed host: %+v, %v", rs, err)
	}
	waitStatus(t, cli, "f", "h1 and h3 on 2", allOn(2, 2))
}

// Leaving the fleet drains: fleet drain makes a host unload what the
// fleet loaded (with wait) and rollouts leave it out; SIGTERM (Stop)
// reports the host draining, then removes its status at once (the lease
// revoked, not left to expire).
func TestDrain(t *testing.T) {
	e := startEtcd(t)
	cli := dial(t, e, nil)
	hosts := startHosts(t, e, "f", 2, hostOpts{ttl: 30 * time.Second})
	waitStatus(t, cli, "f", "2 hosts", func(st *Status) bool { return len(st.Hosts) == 2 })
	mods := t.TempDir()
	if _, err := set(t, cli, "f", simState(t, mods, SimModule("simmod", "1.0", false, 0, 1000)), RolloutSpec{}, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	if err := Drain(ctx, cli, "f", "h2", true); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, cli, "f", "h2 drained", func(st *Status) bool {
		h, ok := hostByName(st, "h2")
		return ok && h.Draining && h.Converged && h.Target == -1
	})
	if h, _ := hostByName(st, "h2"); runs(h, "simmod", "1.0") || slices.ContainsFunc(h.Modules, func(m ModuleRun) bool { return m.Name == "simmod" }) {
		t.Errorf("drained h2 still runs simmod: %+v", h.Modules)
	}
	rs, err := set(t, cli, "f", simState(t, mods, SimModule("simmod", "2.0", false, 0, 1000)), RolloutSpec{}, nil)
	if err != nil || !slices.Equal(rs.Updated, []string{"h1"}) {
		t.Fatalf("rollout with h2 draining: %+v, %v", rs, err)
	}
	if err := Drain(ctx, cli, "f", "h2", false); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cli, "f", "h2 back on 2", allOn(2, 2))

	stop := statusLog(t, cli, "f")
	start := time.Now()
	hosts[0].Stop()
	waitStatus(t, cli, "f", "h1 gone", func(st *Status) bool { _, ok := hostByName(st, "h1"); return !ok })
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("h1's status stayed %v after it stopped: not revoked (its TTL is 30s)", d)
	}
	seen := stop()
	if !slices.ContainsFunc(seen, func(hs HostStatus) bool { return hs.Host == "h1" && hs.Draining }) {
		t.Errorf("h1 never reported draining before leaving: %+v", seen)
	}
}

// The health check: a route that answers 500 fails the canary's check and
// the rollout, and the canary goes back.
func TestHealthCheckFails(t *testing.T) {
	e := startEtcd(t)
	cli := dial(t, e, nil)
	startHosts(t, e, "f", 2, hostOpts{http: true})
	waitStatus(t, cli, "f", "2 hosts", func(st *Status) bool { return len(st.Hosts) == 2 })
	mods := t.TempDir()
	if _, err := set(t, cli, "f", simState(t, mods, SimModule("simmod", "1.0", false, 0, 1000)), RolloutSpec{Health: "/sim/simmod"}, nil); err != nil {
		t.Fatal(err)
	}
	rs, err := set(t, cli, "f", simState(t, mods, SimModule("simmod", "2.0", false, 500, 1000)), RolloutSpec{Health: "/sim/simmod", Requests: 4, MaxErrorRate: 0.5}, nil)
	if !errors.Is(err, ErrRolloutFailed) || !strings.Contains(rs.Reason, "canary h1: health check /sim/simmod: 4 of 4 requests failed") {
		t.Fatalf("set: %+v, %v", rs, err)
	}
	waitStatus(t, cli, "f", "all on 1", allOn(2, 1))
}

// A controller whose lease expired (its controller key gone) writes
// nothing more: its next write fails with ErrConflict, and a new fleet
// set takes the fleet over, clearing the assignments it left.
func TestControllerFencing(t *testing.T) {
	e := startEtcd(t)
	cli := dial(t, e, nil)
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	k, _ := newKeys("f")
	doc, err := upload(ctx, cli, k, simState(t, t.TempDir(), SimModule("a", "1", false, 0, 100)), "")
	if err != nil {
		t.Fatal(err)
	}
	r, err := begin(ctx, cli, k, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer r.release()
	if err := r.commit(ctx, doc); err != nil {
		t.Fatal(err)
	}
	if reason := r.step(ctx, []string{"ghost"}, false); reason != "" {
		t.Fatalf("step: %s", reason) // ghost has no status: lost at once
	}
	if _, err := cli.Revoke(ctx, r.lease); err != nil { // as if it expired
		t.Fatal(err)
	}
	if err := r.putState(ctx); !errors.Is(err, ErrConflict) {
		t.Fatalf("a write after losing the controller key: %v", err)
	}
	if err := r.finish(ctx); !errors.Is(err, ErrConflict) {
		t.Fatalf("finish after losing the controller key: %v", err)
	}
	st, _ := ReadStatus(ctx, cli, "f")
	if st.Stable != 0 || st.Assigned["ghost"] != 1 || st.Controller != "" {
		t.Fatalf("status after the fenced writes: stable %d, assigned %v, controller %q", st.Stable, st.Assigned, st.Controller)
	}
	// The next operator takes over: the stale assignment goes.
	if _, err := Set(ctx, cli, "f", simState(t, t.TempDir(), SimModule("b", "1", false, 0, 100)), "", SetOptions{}); err != nil {
		t.Fatal(err)
	}
	st, _ = ReadStatus(ctx, cli, "f")
	if st.Stable != 2 || len(st.Assigned) != 0 {
		t.Fatalf("after the take-over: stable %d, assigned %v", st.Stable, st.Assigned)
	}
}
