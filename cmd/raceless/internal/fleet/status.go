package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/raceless/raceless"
)

// Status is a fleet as `fleet status` shows it, read at one revision.
type Status struct {
	Fleet string `json:"fleet"`
	// Revision is etcd's revision the status was read at.
	Revision int64 `json:"revision"`
	// Desired is the newest generation written (nil: none).
	Desired *Document `json:"desired,omitempty"`
	// Stable is the generation hosts run unless assigned another.
	Stable int64 `json:"stable"`
	// Rollout is the last rollout (nil: none).
	Rollout *RolloutState `json:"rollout,omitempty"`
	// Controller names the live controller of a rollout ("": none).
	Controller string `json:"controller,omitempty"`
	// Hosts are the live hosts (a live lease), by name.
	Hosts []HostStatus `json:"hosts"`
	// Assigned are the hosts the rollout in progress assigned a
	// generation, and Draining the hosts told to drain.
	Assigned map[string]int64 `json:"assigned,omitempty"`
	Draining []string         `json:"draining,omitempty"`
}

// ReadStatus reads a fleet's status in one transaction (one revision).
func ReadStatus(ctx context.Context, cli *clientv3.Client, fleet string) (*Status, error) {
	k, err := newKeys(fleet)
	if err != nil {
		return nil, err
	}
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(k.desired()),
		clientv3.OpGet(k.stable()),
		clientv3.OpGet(k.rollout()),
		clientv3.OpGet(k.controller()),
		clientv3.OpGet(k.hostsPrefix(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)),
		clientv3.OpGet(k.nodesPrefix(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("fleet %s: %w", fleet, err)
	}
	st := &Status{Fleet: fleet, Revision: resp.Header.Revision, Hosts: []HostStatus{}}
	r := func(i int) []*kv {
		var out []*kv
		for _, x := range resp.Responses[i].GetResponseRange().Kvs {
			out = append(out, &kv{string(x.Key), x.Value})
		}
		return out
	}
	if kvs := r(0); len(kvs) > 0 {
		st.Desired = new(Document)
		if err := json.Unmarshal(kvs[0].val, st.Desired); err != nil {
			return nil, fmt.Errorf("%s: %w: %v", kvs[0].key, ErrInvalid, err)
		}
	}
	if kvs := r(1); len(kvs) > 0 {
		st.Stable = parseGen(kvs[0].val)
	}
	if kvs := r(2); len(kvs) > 0 {
		st.Rollout = new(RolloutState)
		if err := json.Unmarshal(kvs[0].val, st.Rollout); err != nil {
			return nil, fmt.Errorf("%s: %w: %v", kvs[0].key, ErrInvalid, err)
		}
	}
	if kvs := r(3); len(kvs) > 0 {
		st.Controller = string(kvs[0].val)
	}
	for _, x := range r(4) {
		var hs HostStatus
		if err := json.Unmarshal(x.val, &hs); err != nil {
			return nil, fmt.Errorf("%s: %w: %v", x.key, ErrInvalid, err)
		}
		st.Hosts = append(st.Hosts, hs)
	}
	for _, x := range r(5) {
		host, what, _ := strings.Cut(strings.TrimPrefix(x.key, k.nodesPrefix()), "/")
		switch what {
		case "assign":
			if st.Assigned == nil {
				st.Assigned = map[string]int64{}
			}
			st.Assigned[host] = parseGen(x.val)
		case "drain":
			st.Draining = append(st.Draining, host)
		}
	}
	return st, nil
}

type kv struct {
	key string
	val []byte
}

// Drain tells host to leave the fleet's work (on) or to come back (off).
// A draining host reconciles to the empty state: it unloads, with wait,
// every module the fleet loaded, and rollouts leave it out. The host need
// not be live: it drains when it comes.
func Drain(ctx context.Context, cli *clientv3.Client, fleet, host string, on bool) error {
	k, err := newKeys(fleet)
	if err != nil {
		return err
	}
	if !raceless.ValidName(host) {
		return fmt.Errorf("host name %q: %w", host, ErrInvalid)
	}
	if on {
		_, err = cli.Put(ctx, k.drain(host), "drain")
	} else {
		_, err = cli.Delete(ctx, k.drain(host))
	}
	if err != nil {
		return fmt.Errorf("fleet %s host %s: %w", fleet, host, err)
	}
	return nil
}

// Wait re-reads the fleet's status at every change of its keys (a watch
// from the revision read: no polling) until cond holds for it, and returns
// it; or ctx's error, with the last status read. A read that fails (etcd
// not reachable yet) is tried again after a tenth of a second.
func Wait(ctx context.Context, cli *clientv3.Client, fleet string, cond func(*Status) bool) (*Status, error) {
	k, err := newKeys(fleet)
	if err != nil {
		return nil, err
	}
	var last *Status
	for {
		st, err := ReadStatus(ctx, cli, fleet)
		if err != nil {
			t := time.NewTimer(100 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return last, fmt.Errorf("fleet %s: %w (last read: %v)", fleet, ctx.Err(), err)
			case <-t.C:
			}
			continue
		}
		if cond(st) {
			return st, nil
		}
		last = st
		wctx, cancel := context.WithCancel(ctx)
		wch := cli.Watch(clientv3.WithRequireLeader(wctx), k.root, clientv3.WithPrefix(), clientv3.WithRev(st.Revision+1))
		select {
		case <-ctx.Done():
		case <-wch:
		}
		cancel()
		if ctx.Err() != nil {
			return last, fmt.Errorf("fleet %s: %w", fleet, ctx.Err())
		}
	}
}
