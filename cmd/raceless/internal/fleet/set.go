package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/raceless/raceless/cmd/raceless/internal/desired"
)

// SetOptions are the operator's side of fleet set.
type SetOptions struct {
	Rollout RolloutSpec
	// Author is recorded in the Document.
	Author string
	// Progress, if set, is called with the rollout's state at every
	// change.
	Progress func(RolloutState)
	// ControllerTTL is the controller lease's TTL (default 5s): a
	// controller that dies holds the fleet that long.
	ControllerTTL time.Duration
}

// Set makes st the fleet's desired state and rolls it out: it uploads the
// module files st names (File) as blobs, writes a new generation in one
// transaction, then drives the rollout: the canary, its checks, the
// batches, and either stable = the new generation (nil) or, when a check
// failed, every updated host back to the previous one (ErrRolloutFailed,
// with the reason). It returns when the rollout ended, as
// `kubectl rollout status` does: the operator's process is the
// controller (docs/fleet.md says why).
//
// A module File that is relative is taken relative to baseDir.
func Set(ctx context.Context, cli *clientv3.Client, fleet string, st *desired.State, baseDir string, opts SetOptions) (RolloutState, error) {
	k, err := newKeys(fleet)
	if err != nil {
		return RolloutState{}, err
	}
	if opts.ControllerTTL <= 0 {
		opts.ControllerTTL = 5 * time.Second
	}
	spec := opts.Rollout.withDefaults()
	opts.Rollout = spec
	doc, err := upload(ctx, cli, k, st, baseDir)
	if err != nil {
		return RolloutState{}, err
	}
	doc.Rollout, doc.Author, doc.Time = opts.Rollout, opts.Author, time.Now().UTC()
	hosts, err := liveHosts(ctx, cli, k)
	if err != nil {
		return RolloutState{}, err
	}
	if spec.CanaryPercent < 0 || spec.CanaryPercent > 100 {
		return RolloutState{}, fmt.Errorf("canary percent %d: not 0 to 100: %w", spec.CanaryPercent, ErrInvalid)
	}
	if spec.Canary != "" && !slices.ContainsFunc(hosts, func(h HostStatus) bool { return h.Host == spec.Canary }) {
		return RolloutState{}, fmt.Errorf("canary %s: %w", spec.Canary, ErrNoHost)
	}
	r, err := begin(ctx, cli, k, opts.ControllerTTL)
	if err != nil {
		return RolloutState{}, err
	}
	defer r.release()
	if err := r.commit(ctx, doc); err != nil {
		return RolloutState{}, err
	}
	r.progress = opts.Progress
	return r.run(ctx, hosts)
}

// upload checks st's module files against their digests, stores them as
// blobs, and returns the Document naming them by digest.
func upload(ctx context.Context, cli *clientv3.Client, k keys, st *desired.State, baseDir string) (*Document, error) {
	doc := &Document{State: *st}
	doc.State.Modules = slices.Clone(st.Modules)
	for i, m := range doc.State.Modules {
		if m.File == "" {
			if m.Name == "" {
				return nil, fmt.Errorf("module %d: neither name nor file: %w", i+1, ErrInvalid)
			}
			continue
		}
		path := m.File
		if !filepath.IsAbs(path) {
			path = filepath.Join(baseDir, path)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("module file %s: %w", m.File, err)
		}
		if m.Digest != "" {
			if _, err := digestHex(m.Digest); err != nil {
				return nil, fmt.Errorf("module file %s: %w", m.File, err)
			}
			if got := Digest(data); got != m.Digest {
				return nil, fmt.Errorf("module file %s: its bytes hash to %s, the state says %s: %w", m.File, got, m.Digest, ErrDigestMismatch)
			}
		}
		digest, err := putBlob(ctx, cli, k, data)
		if err != nil {
			return nil, err
		}
		doc.State.Modules[i].File = filepath.Base(path)
		doc.State.Modules[i].Digest = digest
	}
	return doc, nil
}

// liveHosts returns the hosts with a status (a live lease), by name,
// those draining left out.
func liveHosts(ctx context.Context, cli *clientv3.Client, k keys) ([]HostStatus, error) {
	resp, err := cli.Get(ctx, k.hostsPrefix(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("hosts: %w", err)
	}
	var out []HostStatus
	for _, kv := range resp.Kvs {
		var hs HostStatus
		if json.Unmarshal(kv.Value, &hs) == nil && !hs.Draining {
			out = append(out, hs)
		}
	}
	return out, nil
}

// rollout is one rollout's controller.
type rollout struct {
	cli      *clientv3.Client
	k        keys
	lease    clientv3.LeaseID
	cancel   context.CancelFunc // stops the lease's keepalive
	descRev  int64              // mod revision of desired when read (0: absent)
	prevGen  int64              // desired's generation when read
	stable   int64
	doc      *Document
	assigned []string // hosts assigned the generation so far
	// ctlRev is the create revision of the controller key this rollout
	// wrote: every later write is a transaction that holds only while
	// that key is still there (a fencing token: a controller whose lease
	// expired, and whose rollout another one took over, writes nothing).
	ctlRev   int64
	state    RolloutState
	progress func(RolloutState)
}

// begin reads the fleet's desired state and stable generation, and takes
// a lease for the controller key.
func begin(ctx context.Context, cli *clientv3.Client, k keys, ttl time.Duration) (*rollout, error) {
	resp, err := cli.Txn(ctx).Then(clientv3.OpGet(k.desired()), clientv3.OpGet(k.stable()), clientv3.OpGet(k.controller())).Commit()
	if err != nil {
		return nil, fmt.Errorf("fleet %s: %w", k.root, err)
	}
	r := &rollout{cli: cli, k: k}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		var d Document
		if err := json.Unmarshal(kvs[0].Value, &d); err != nil {
			return nil, fmt.Errorf("%s: %w", k.desired(), errors.Join(ErrInvalid, err))
		}
		r.descRev, r.prevGen = kvs[0].ModRevision, d.Generation
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		r.stable = parseGen(kvs[0].Value)
	}
	if kvs := resp.Responses[2].GetResponseRange().Kvs; len(kvs) > 0 {
		return nil, fmt.Errorf("fleet %s: controller %s: %w", k.root, kvs[0].Value, ErrRolloutInProgress)
	}
	lease, err := cli.Grant(ctx, int64((ttl+time.Second-1)/time.Second))
	if err != nil {
		return nil, fmt.Errorf("controller lease: %w", err)
	}
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ka, err := cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("controller lease: %w", err)
	}
	go func() {
		for range ka { // drained until kctx ends
		}
	}()
	r.lease, r.cancel = lease.ID, cancel
	return r, nil
}

// release ends the controller: the lease (and the controller key with it).
func (r *rollout) release() {
	r.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.cli.Revoke(ctx, r.lease)
}

// commit writes the new generation: desired, states/GEN, the controller
// key and the rollout's state, and clears the assignments a dead
// controller left, all in one transaction that holds only if desired is
// unchanged since begin read it and no controller is alive.
func (r *rollout) commit(ctx context.Context, doc *Document) error {
	doc.Generation, doc.Previous = r.prevGen+1, r.stable
	doc.Rollout = doc.Rollout.withDefaults()
	r.doc = doc
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	r.state = RolloutState{Generation: doc.Generation, Previous: r.stable, Phase: PhaseCanary, Started: now, Changed: now}
	rs, _ := json.Marshal(r.state)
	host, _ := os.Hostname()
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(r.k.desired()), "=", r.descRev),
		clientv3.Compare(clientv3.CreateRevision(r.k.controller()), "=", 0),
	}
	for _, m := range doc.State.Modules {
		// Every blob named is still there (a finishing rollout's gc
		// may have removed one uploaded before it).
		if h, err := digestHex(m.Digest); err == nil && m.File != "" {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(r.k.manifest(h)), ">", 0))
		}
	}
	// Assignments a dead controller left go in the same transaction.
	nodes, err := r.cli.Get(ctx, r.k.nodesPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("fleet %s: %w", r.k.root, err)
	}
	stale := []clientv3.Op{
		clientv3.OpPut(r.k.desired(), string(b)),
		clientv3.OpPut(r.k.state(doc.Generation), string(b)),
		clientv3.OpPut(r.k.controller(), fmt.Sprintf("%s pid %d generation %d", host, os.Getpid(), doc.Generation), clientv3.WithLease(r.lease)),
		clientv3.OpPut(r.k.rollout(), string(rs)),
	}
	for _, kv := range nodes.Kvs {
		if strings.HasSuffix(string(kv.Key), "/assign") {
			stale = append(stale, clientv3.OpDelete(string(kv.Key)))
		}
	}
	resp, err := r.cli.Txn(ctx).If(cmps...).Then(stale...).Commit()
	if err != nil {
		return fmt.Errorf("fleet %s: write: %w", r.k.root, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("fleet %s: generation %d: %w", r.k.root, doc.Generation, ErrConflict)
	}
	r.ctlRev = resp.Header.Revision // the controller key's create revision
	return nil
}

// errLostControl is returned by a write of a controller that is no longer
// the fleet's (its lease expired).
var errLostControl = fmt.Errorf("this controller lost the fleet (its lease expired; another may have taken over): %w", ErrConflict)

// txn commits ops if this rollout still holds the controller key.
func (r *rollout) txn(ctx context.Context, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	resp, err := r.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(r.k.controller()), "=", r.ctlRev)).Then(ops...).Commit()
	if err == nil && !resp.Succeeded {
		err = errLostControl
	}
	return resp, err
}

// putState writes the rollout's state (and tells Progress).
func (r *rollout) putState(ctx context.Context) error {
	r.state.Changed = time.Now().UTC()
	b, _ := json.Marshal(r.state)
	if _, err := r.txn(ctx, clientv3.OpPut(r.k.rollout(), string(b))); err != nil {
		return fmt.Errorf("rollout state: %w", err)
	}
	if r.progress != nil {
		r.progress(r.state)
	}
	return nil
}

// run drives the rollout over hosts (the live hosts when it began).
func (r *rollout) run(ctx context.Context, hosts []HostStatus) (RolloutState, error) {
	spec := r.doc.Rollout
	if len(hosts) == 0 {
		r.state.Reason = "no live host: hosts that join run it"
		return r.state, r.finish(ctx)
	}
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = h.Host
	}
	canaries := []string{spec.Canary}
	switch {
	case spec.Canary != "":
	case spec.CanaryPercent > 0:
		canaries = names[:max(1, (len(names)*spec.CanaryPercent+99)/100)]
	default:
		canaries = names[:1]
	}
	rest := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return slices.Contains(canaries, n) })
	batch := spec.Batch
	if batch <= 0 {
		batch = max(1, len(rest)/4)
	}
	r.state.Canary = strings.Join(canaries, " ")
	r.state.Batches = (len(rest) + batch - 1) / batch
	if err := r.putState(ctx); err != nil {
		return r.state, err
	}
	if reason := r.step(ctx, canaries, true); reason != "" {
		return r.state, r.fail(ctx, "canary "+reason)
	}
	r.state.Phase = PhaseBatch
	for i := 0; i < len(rest); i += batch {
		r.state.Batch = i/batch + 1
		if err := r.putState(ctx); err != nil {
			return r.state, err
		}
		if reason := r.step(ctx, rest[i:min(i+batch, len(rest))], false); reason != "" {
			return r.state, r.fail(ctx, fmt.Sprintf("batch %d: %s", r.state.Batch, reason))
		}
	}
	return r.state, r.finish(ctx)
}

// step assigns the generation to hosts and waits until each converged
// (and passed the health check) or left the fleet; a host that left is
// lost, and when lostFails (the canary) that fails the step. It returns
// why the step failed, "" when it did not.
func (r *rollout) step(ctx context.Context, hosts []string, lostFails bool) string {
	gen := []byte(strconv.FormatInt(r.doc.Generation, 10))
	var ops []clientv3.Op
	for _, h := range hosts {
		ops = append(ops, clientv3.OpPut(r.k.assign(h), string(gen)))
	}
	r.assigned = append(r.assigned, hosts...)
	resp, err := r.txn(ctx, ops...)
	if err != nil {
		return "assign: " + err.Error()
	}
	spec := r.doc.Rollout
	wctx, cancel := context.WithTimeout(ctx, time.Duration(spec.Timeout))
	defer cancel()
	done, err := r.await(wctx, hosts, resp.Header.Revision, r.doc.Generation)
	for _, h := range hosts {
		switch res := done[h]; {
		case res == "":
		case res == resultLost:
			r.state.Lost = append(r.state.Lost, h)
			if lostFails {
				return h + " left the fleet (its lease expired) before converging"
			}
		case strings.HasPrefix(res, resultFailed):
			return h + ": " + strings.TrimPrefix(res, resultFailed)
		}
	}
	if err != nil {
		var pending []string
		for _, h := range hosts {
			if _, ok := done[h]; !ok {
				pending = append(pending, h)
			}
		}
		if ctx.Err() != nil {
			return "interrupted: " + context.Cause(ctx).Error()
		}
		return fmt.Sprintf("%s did not converge within %s", strings.Join(pending, ", "), time.Duration(spec.Timeout))
	}
	for _, h := range hosts {
		if done[h] != "" {
			continue
		}
		if reason := r.health(ctx, h); reason != "" {
			return h + ": " + reason
		}
		r.state.Updated = append(r.state.Updated, h)
	}
	return ""
}

// Results of await, per host: "" converged, resultLost, or resultFailed
// and the host's error.
const (
	resultLost   = "lost"
	resultFailed = "failed: "
)

// await watches hosts/ from revision rev until every host in hosts
// reported gen converged, reported a lasting failure on gen, or lost its
// status (lease expiry). It returns each finished host's result and
// ctx's error if it ended first.
func (r *rollout) await(ctx context.Context, hosts []string, rev, gen int64) (map[string]string, error) {
	done := map[string]string{}
	want := map[string]bool{}
	for _, h := range hosts {
		want[h] = true
	}
	judge := func(key string, val []byte, deleted bool) {
		h := strings.TrimPrefix(key, r.k.hostsPrefix())
		if !want[h] {
			return
		}
		delete(done, h)
		if deleted {
			done[h] = resultLost
			return
		}
		var hs HostStatus
		if json.Unmarshal(val, &hs) != nil || hs.Target != gen {
			return
		}
		switch {
		case hs.Draining:
			done[h] = resultLost
		case hs.Converged:
			done[h] = ""
		case hs.Error != "" && !retryOnly(hs.Items):
			done[h] = resultFailed + hs.Error
		}
	}
	resp, err := r.cli.Get(ctx, r.k.hostsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return done, err
	}
	seen := map[string]bool{}
	for _, kv := range resp.Kvs {
		seen[string(kv.Key)] = true
		judge(string(kv.Key), kv.Value, false)
	}
	for _, h := range hosts {
		if !seen[r.k.host(h)] {
			done[h] = resultLost
		}
	}
	wch := r.cli.Watch(clientv3.WithRequireLeader(ctx), r.k.hostsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for len(done) < len(hosts) {
		select {
		case <-ctx.Done():
			return done, ctx.Err()
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				if ctx.Err() != nil {
					return done, ctx.Err()
				}
				return done, fmt.Errorf("watch hosts: %w", errors.Join(wr.Err(), errClosed))
			}
			for _, ev := range wr.Events {
				judge(string(ev.Kv.Key), ev.Kv.Value, ev.Type == clientv3.EventTypeDelete)
			}
		}
	}
	return done, nil
}

// retryOnly reports whether every item left is a busy module retried
// later (the host is still getting there).
func retryOnly(items []desired.Item) bool {
	if len(items) == 0 {
		return false
	}
	for _, it := range items {
		if !it.Retry {
			return false
		}
	}
	return true
}

// health checks a converged host: every module it reports is live, and,
// with a health path, the share of failed health requests is at most the
// threshold. It returns why it failed, "" when it did not.
func (r *rollout) health(ctx context.Context, host string) string {
	resp, err := r.cli.Get(ctx, r.k.host(host))
	if err != nil {
		return "status: " + err.Error()
	}
	if len(resp.Kvs) == 0 {
		return "left the fleet (its lease expired) during the check"
	}
	var hs HostStatus
	if err := json.Unmarshal(resp.Kvs[0].Value, &hs); err != nil {
		return "status: " + err.Error()
	}
	for _, m := range hs.Modules {
		if m.State != "live" {
			return fmt.Sprintf("module %s is %s, not live", m.Name, m.State)
		}
	}
	spec := r.doc.Rollout
	if spec.Health == "" {
		return ""
	}
	if hs.HTTP == "" {
		return "health check " + spec.Health + ": the host serves no HTTP"
	}
	client := &http.Client{Timeout: 5 * time.Second}
	failed := 0
	var last string
	for i := 0; i < spec.Requests; i++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+hs.HTTP+spec.Health, nil)
		if err != nil {
			return "health check: " + err.Error()
		}
		res, err := client.Do(req)
		if err != nil {
			failed++
			last = err.Error()
			continue
		}
		res.Body.Close()
		if res.StatusCode < 200 || res.StatusCode > 299 {
			failed++
			last = res.Status
		}
	}
	if rate := float64(failed) / float64(spec.Requests); rate > spec.MaxErrorRate {
		return fmt.Sprintf("health check %s: %d of %d requests failed (%.0f%% > %.0f%%; last: %s)", spec.Health, failed, spec.Requests, 100*rate, 100*spec.MaxErrorRate, last)
	}
	return ""
}

// fail ends a rollout whose check failed: it deletes every assignment
// (the hosts updated go back to stable, the previous generation), records
// why, and waits (bounded by the step timeout) for those hosts to report
// the previous generation again.
func (r *rollout) fail(ctx context.Context, reason string) error {
	r.state.Phase, r.state.Reason = PhaseFailed, reason
	var assigned []string // the hosts to see back: those assigned, not lost
	for _, h := range slices.Compact(slices.Sorted(slices.Values(r.assigned))) {
		if !slices.Contains(r.state.Lost, h) {
			assigned = append(assigned, h)
		}
	}
	b, _ := json.Marshal(r.state)
	// The hosts go back even when the operator interrupted the rollout.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(r.doc.Rollout.Timeout))
	defer cancel()
	resp, err := r.unassign(ctx, clientv3.OpPut(r.k.rollout(), string(b)))
	if err != nil {
		return fmt.Errorf("rollout of generation %d: %s; returning the hosts: %w: %w", r.doc.Generation, reason, err, ErrRolloutFailed)
	}
	if r.progress != nil {
		r.progress(r.state)
	}
	{
		done, werr := r.await(ctx, assigned, resp.Header.Revision, r.state.Previous)
		var back []string
		for _, h := range assigned {
			if res, ok := done[h]; ok && res == "" {
				back = append(back, h)
			}
		}
		if werr != nil || len(back) < len(assigned) {
			r.state.Reason += fmt.Sprintf("; back on generation %d: %s of %s", r.state.Previous, strings.Join(back, ", "), strings.Join(assigned, ", "))
		} else {
			r.state.Reason += fmt.Sprintf("; %s back on generation %d", strings.Join(back, ", "), r.state.Previous)
		}
		r.putState(ctx)
	}
	return fmt.Errorf("rollout of generation %d: %s: %w", r.doc.Generation, r.state.Reason, ErrRolloutFailed)
}

// unassign deletes every assignment the rollout made, with ops, in one
// transaction (several, after the first, past 100 hosts: etcd's default
// --max-txn-ops is 128); it returns the first transaction's response.
func (r *rollout) unassign(ctx context.Context, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	var first *clientv3.TxnResponse
	hosts := r.assigned
	for first == nil || len(hosts) > 0 {
		n := min(len(hosts), 100)
		batch := ops
		ops = nil
		for _, h := range hosts[:n] {
			batch = append(batch, clientv3.OpDelete(r.k.assign(h)))
		}
		hosts = hosts[n:]
		resp, err := r.txn(ctx, batch...)
		if err != nil {
			return first, err
		}
		if first == nil {
			first = resp
		}
	}
	return first, nil
}

// finish makes the generation stable and clears the assignments, in one
// transaction.
func (r *rollout) finish(ctx context.Context) error {
	r.state.Phase = PhaseDone
	r.state.Changed = time.Now().UTC()
	b, _ := json.Marshal(r.state)
	_, err := r.unassign(ctx,
		clientv3.OpPut(r.k.stable(), strconv.FormatInt(r.doc.Generation, 10)),
		clientv3.OpPut(r.k.rollout(), string(b)))
	if err != nil {
		return fmt.Errorf("rollout of generation %d: making it stable: %w", r.doc.Generation, err)
	}
	if r.progress != nil {
		r.progress(r.state)
	}
	r.gc(ctx)
	return nil
}

// gc deletes the generations and blobs no longer needed: everything but
// the new stable generation and the one before it (what a later rollback
// would return to).
func (r *rollout) gc(ctx context.Context) {
	keep := map[int64]bool{r.doc.Generation: true, r.doc.Previous: true}
	resp, err := r.cli.Get(ctx, r.k.statesPrefix(), clientv3.WithPrefix())
	if err != nil {
		return
	}
	used := map[string]bool{}
	var ops []clientv3.Op
	for _, kv := range resp.Kvs {
		gen := parseGen([]byte(strings.TrimPrefix(string(kv.Key), r.k.statesPrefix())))
		if keep[gen] {
			var d Document
			if json.Unmarshal(kv.Value, &d) == nil {
				for _, m := range d.State.Modules {
					if h, err := digestHex(m.Digest); err == nil {
						used[h] = true
					}
				}
			}
			continue
		}
		ops = append(ops, clientv3.OpDelete(string(kv.Key)))
	}
	blobs, err := r.cli.Get(ctx, r.k.blobsPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return
	}
	gone := map[string]bool{}
	for _, kv := range blobs.Kvs {
		h, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), r.k.blobsPrefix()), "/")
		if !used[h] && !gone[h] {
			gone[h] = true
			// The manifest first: a reader never sees a manifest
			// without its chunks.
			ops = append(ops, clientv3.OpDelete(r.k.manifest(h)), clientv3.OpDelete(r.k.blob(h), clientv3.WithPrefix()))
		}
	}
	for len(ops) > 0 {
		n := min(len(ops), 64) // etcd's default --max-txn-ops is 128
		r.txn(ctx, ops[:n]...)
		ops = ops[n:]
	}
}
