package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/desired"
)

// Daemon is what an Agent drives: a *daemon.Daemon.
type Daemon interface {
	// Reconcile moves the daemon to s (serialised by the daemon).
	Reconcile(ctx context.Context, s *desired.State) desired.Report
	// Host is the daemon's host (the modules it runs).
	Host() *raceless.Host
	// HTTPAddr is where it serves module routes ("" for nowhere).
	HTTPAddr() string
}

// AgentConfig configures an Agent.
type AgentConfig struct {
	Client *clientv3.Client
	Fleet  string
	Host   string // this host's name in the fleet
	Daemon Daemon
	// CacheDir holds the module files fetched from etcd, by digest.
	CacheDir string
	// TTL is the lease's: how long a host that stopped renewing stays
	// in the fleet's status (default 5s; etcd raises it to its minimum).
	TTL time.Duration
	// MaxRetry bounds the wait between reconciliations of a state the
	// host could not converge on (busy modules, a failed init): the wait
	// doubles from a tenth of a second up to MaxRetry (default 30s).
	MaxRetry time.Duration
	Logger   *slog.Logger
}

// Agent is one host of a fleet: it follows the fleet's desired state in
// etcd and reconciles its daemon towards it (see the package comment for
// what it guarantees).
//
// An Agent's state is touched only by the goroutine running Run: it needs
// no lock.
type Agent struct {
	cfg AgentConfig
	k   keys
	log *slog.Logger

	lease   clientv3.LeaseID
	stable  int64 // generation under stable (0: none)
	assign  int64 // generation under node/HOST/assign (0: none)
	drain   bool  // node/HOST/drain is present
	readRev int64 // the revision of the last read of stable and node/HOST/
	docs    map[int64]*Document
	// applied is the target of the last reconciliation: -1 drained, 0
	// the empty state (a host that never ran a generation is left
	// untouched: it starts at 0), else a generation.
	applied int64
	again   bool // reconcile applied again (a retry)
	status  HostStatus
	retry   time.Duration // the last wait before reconciling again (0: converged)
	retryAt time.Time     // when to reconcile the same target again (zero: never)
}

// NewAgent checks cfg and returns an agent; Run starts it.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	k, err := newKeys(cfg.Fleet)
	if err != nil {
		return nil, err
	}
	if !raceless.ValidName(cfg.Host) {
		return nil, fmt.Errorf("host name %q: %w", cfg.Host, ErrInvalid)
	}
	if cfg.Client == nil || cfg.Daemon == nil || cfg.CacheDir == "" {
		return nil, fmt.Errorf("agent %s: a client, a daemon and a cache directory are needed: %w", cfg.Host, ErrInvalid)
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 5 * time.Second
	}
	if cfg.MaxRetry <= 0 {
		cfg.MaxRetry = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Agent{cfg: cfg, k: k, log: cfg.Logger.With("fleet", cfg.Fleet, "host", cfg.Host), docs: map[int64]*Document{},
		status: HostStatus{Host: cfg.Host}}, nil
}

// Run follows the fleet until ctx is done, then leaves it: it reports
// itself draining and revokes its lease, so that its status disappears at
// once (the daemon's own shutdown then unloads with wait). While etcd
// cannot be reached it retries with a backoff (up to 5s), changing nothing
// on the host.
func (a *Agent) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		err := a.session(ctx)
		if ctx.Err() != nil {
			break
		}
		a.log.Warn("fleet: lost etcd; keeping the running state and retrying", "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, 5*time.Second)
		if ctx.Err() != nil {
			break
		}
	}
	a.leave()
	return nil
}

// leave reports the host draining and revokes its lease (best effort,
// bounded: etcd may be gone).
func (a *Agent) leave() {
	if a.lease == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	a.status.Draining = true
	a.putStatus(ctx)
	if _, err := a.cfg.Client.Revoke(ctx, a.lease); err != nil {
		a.log.Warn("fleet: could not revoke the lease; the status expires with it", "err", err)
	}
	a.lease = 0
}

// errLeaseLost ends a session whose lease expired.
var errLeaseLost = errors.New("lease lost")

// session is one connected stretch: a lease, a fresh read of the host's
// keys (catching up once), then watches from that revision.
func (a *Agent) session(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cli := a.cfg.Client
	gctx, gcancel := context.WithTimeout(sctx, a.cfg.TTL)
	lease, err := cli.Grant(gctx, int64((a.cfg.TTL+time.Second-1)/time.Second))
	gcancel()
	if err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	a.lease = lease.ID
	ka, err := cli.KeepAlive(sctx, lease.ID)
	if err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	rctx, rcancel := context.WithTimeout(sctx, a.cfg.TTL)
	err = a.read(rctx)
	rcancel()
	if err != nil {
		return err
	}
	rev := a.readRev
	if !a.step(sctx) { // reconciles only if the target moved
		a.report(sctx) // a new lease: report again
	}
	wctx := clientv3.WithRequireLeader(sctx)
	wStable := cli.Watch(wctx, a.k.stable(), clientv3.WithRev(rev+1))
	wNode := cli.Watch(wctx, a.k.node(a.cfg.Host), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		var retry <-chan time.Time
		var t *time.Timer
		if !a.retryAt.IsZero() {
			t = time.NewTimer(time.Until(a.retryAt))
			retry = t.C
		}
		select {
		case <-sctx.Done():
		case _, ok := <-ka:
			if !ok {
				err = errLeaseLost
			}
		case wr, ok := <-wStable:
			err = a.changed(sctx, wr, ok)
		case wr, ok := <-wNode:
			err = a.changed(sctx, wr, ok)
		case <-retry:
			a.retryAt = time.Time{}
			a.again = true // reconcile the same target again
			a.step(sctx)
		}
		if t != nil {
			t.Stop()
		}
		if err != nil {
			return err
		}
		if sctx.Err() != nil {
			return sctx.Err()
		}
	}
}

var errClosed = errors.New("watch closed")

// read reads stable and node/HOST/ in one transaction (one revision).
func (a *Agent) read(ctx context.Context) error {
	resp, err := a.cfg.Client.Txn(ctx).Then(
		clientv3.OpGet(a.k.stable()),
		clientv3.OpGet(a.k.node(a.cfg.Host), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	a.stable, a.assign, a.drain = 0, 0, false
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		a.stable = parseGen(kv.Value)
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		a.setNode(string(kv.Key), kv.Value, false)
	}
	a.readRev = resp.Header.Revision
	return nil
}

// changed handles a watch response. The two watches (stable, node/HOST/)
// deliver the events of one transaction separately, in no set order: a
// rollout's last transaction sets stable and deletes the assignment, and
// acting on the deletion alone would reconcile to the old stable and back
// (flapping). So an event only says "read again": both keys are read in
// one transaction, unless a read already saw the event's revision.
func (a *Agent) changed(ctx context.Context, wr clientv3.WatchResponse, ok bool) error {
	if !ok || wr.Err() != nil {
		return fmt.Errorf("watch: %w", errors.Join(wr.Err(), errClosed))
	}
	var latest int64
	for _, ev := range wr.Events {
		latest = max(latest, ev.Kv.ModRevision)
	}
	if latest <= a.readRev {
		return nil
	}
	if err := a.read(ctx); err != nil {
		return err
	}
	a.step(ctx)
	return nil
}

func parseGen(v []byte) int64 {
	g, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || g < 0 {
		return 0
	}
	return g
}

// setNode applies a key under node/HOST/.
func (a *Agent) setNode(key string, val []byte, deleted bool) {
	switch key {
	case a.k.assign(a.cfg.Host):
		a.assign = 0
		if !deleted {
			a.assign = parseGen(val)
		}
	case a.k.drain(a.cfg.Host):
		a.drain = !deleted
	}
}

// target is the generation the host must run: -1 to drain, 0 for none
// (the empty state, once the host ran a generation).
func (a *Agent) target() int64 {
	switch {
	case a.drain:
		return -1
	case a.assign > 0:
		return a.assign
	default:
		return a.stable
	}
}

// step reconciles if the target moved since the last reconciliation (or
// a retry cleared applied), then reports; it returns whether it did.
func (a *Agent) step(ctx context.Context) bool {
	target := a.target()
	if target == a.applied && !a.again {
		return false
	}
	a.again = false
	if target != a.status.Target {
		a.retry, a.retryAt = 0, time.Time{}
	}
	a.applied = target
	a.reconcile(ctx, target)
	a.report(ctx)
	return true
}

// reconcile moves the daemon to generation gen (-1 and 0: the empty
// state).
func (a *Agent) reconcile(ctx context.Context, gen int64) {
	a.status.Target, a.status.Draining = gen, gen < 0
	a.status.Error, a.status.Items, a.status.Digests = "", nil, nil
	st, digests, err := a.prepare(ctx, gen)
	if err != nil {
		// Refused whole: the host keeps what it runs.
		a.status.Converged = false
		a.status.Error = err.Error()
		a.log.Error("fleet: generation refused", "generation", gen, "err", err)
		a.backoff()
		return
	}
	a.status.Reconciles++
	rep := a.cfg.Daemon.Reconcile(ctx, st)
	a.status.Digests = digests
	a.status.Converged = rep.Converged
	// The cached files' paths mean nothing to the operator: the items
	// name the fleet's file and digest instead.
	var names []string
	for i, m := range st.Modules {
		if m.File != "" && m.Digest != "" {
			names = append(names, m.File, fmt.Sprintf("%s (%s)", a.docs[gen].State.Modules[i].File, m.Digest))
		}
	}
	rename := strings.NewReplacer(names...)
	for _, it := range rep.Items {
		it.Name, it.Err = rename.Replace(it.Name), rename.Replace(it.Err)
		if it.Err != "" || it.Retry {
			a.status.Items = append(a.status.Items, it)
			if a.status.Error == "" {
				a.status.Error = fmt.Sprintf("%s %s: %s %s", it.Kind, it.Name, it.Action, it.Err)
			}
		}
	}
	if rep.Converged {
		a.status.Generation = max(gen, 0) // drained: none
		a.retry, a.retryAt = 0, time.Time{}
		a.log.Info("fleet: converged", "generation", gen)
		return
	}
	if a.status.Error == "" {
		a.status.Error = "not converged"
	}
	a.log.Warn("fleet: not converged; retrying", "generation", gen, "err", a.status.Error)
	a.backoff()
}

func (a *Agent) backoff() {
	if a.retry == 0 {
		a.retry = 100 * time.Millisecond
	} else {
		a.retry = min(2*a.retry, a.cfg.MaxRetry)
	}
	a.retryAt = time.Now().Add(a.retry)
}

// prepare reads generation gen and fetches its files into the cache,
// verified: the State to reconcile to, and the digests fetched.
func (a *Agent) prepare(ctx context.Context, gen int64) (*desired.State, []string, error) {
	if gen <= 0 {
		return &desired.State{}, nil, nil
	}
	doc, ok := a.docs[gen]
	if !ok {
		resp, err := a.cfg.Client.Get(ctx, a.k.state(gen))
		if err != nil {
			return nil, nil, fmt.Errorf("generation %d: %w", gen, err)
		}
		if len(resp.Kvs) == 0 {
			return nil, nil, fmt.Errorf("generation %d: %w", gen, ErrBlobMissing)
		}
		doc = new(Document)
		if err := json.Unmarshal(resp.Kvs[0].Value, doc); err != nil {
			return nil, nil, fmt.Errorf("generation %d: %w", gen, errors.Join(ErrInvalid, err))
		}
		if len(a.docs) >= 4 { // generations are immutable; keep a few
			clear(a.docs)
		}
		a.docs[gen] = doc
	}
	st := doc.State
	st.Modules = slices.Clone(st.Modules)
	var digests []string
	for i, m := range st.Modules {
		if m.Digest == "" || m.File == "" {
			continue
		}
		path, err := cachedBlob(ctx, a.cfg.Client, a.k, a.cfg.CacheDir, m.Digest)
		if err != nil {
			return nil, nil, fmt.Errorf("module file %s: %w", m.File, err)
		}
		st.Modules[i].File = path
		digests = append(digests, m.Digest)
	}
	return &st, digests, nil
}

// report puts the host's status under its lease.
func (a *Agent) report(ctx context.Context) {
	a.status.HTTP = a.cfg.Daemon.HTTPAddr()
	a.status.Modules = a.status.Modules[:0]
	for _, m := range a.cfg.Daemon.Host().Modules() {
		a.status.Modules = append(a.status.Modules, ModuleRun{Name: m.Name(), Version: m.Info().Version, State: m.State().String()})
	}
	a.putStatus(ctx)
}

func (a *Agent) putStatus(ctx context.Context) {
	a.status.Updated = time.Now().UTC()
	b, _ := json.Marshal(a.status)
	if _, err := a.cfg.Client.Put(ctx, a.k.host(a.cfg.Host), string(b), clientv3.WithLease(a.lease)); err != nil && ctx.Err() == nil {
		a.log.Warn("fleet: could not report", "err", err)
	}
}
