package raceless

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Demand loading (the kernel's request_module and kmod.c).

const (
	// maxConcurrentRequests caps demand loads in flight, as Linux's
	// MAX_KMOD_CONCURRENT (50): a burst of requests (a script probing many
	// filesystem types, say) cannot start an unbounded number of loads.
	maxConcurrentRequests = 50
	// requestSlotWait bounds how long a request over the cap waits for a
	// slot before failing, as Linux's 5-second wait in __request_module.
	requestSlotWait = 5 * time.Second
	// Failed demand loads back off exponentially from requestBackoffMin up
	// to requestBackoffMax, so that a missing module asked for in a loop
	// (the thread's denial-of-service concern) costs one resolution per
	// period, not one per request. An explicit Load always tries.
	requestBackoffMin = 100 * time.Millisecond
	requestBackoffMax = 30 * time.Second
)

// requester holds the state of demand loading.
type requester struct {
	slots chan struct{} // counting semaphore of maxConcurrentRequests

	// mu guards inflight and failed; a leaf.
	mu       sync.Mutex
	inflight map[string]*requestCall
	failed   map[string]backoff
}

type requestCall struct {
	done chan struct{}
	inst *Instance
	err  error
}

type backoff struct {
	until time.Time
	wait  time.Duration
	err   error
}

func (r *requester) init() {
	r.slots = make(chan struct{}, maxConcurrentRequests)
	r.inflight = make(map[string]*requestCall)
	r.failed = make(map[string]backoff)
}

// Request demand-loads a module by name or alias (request_module): it
// returns the live instance if there is one; otherwise it resolves the name
// through the host's Resolver and loads the result, marked for autoclean.
// Concurrent requests for the same name are merged. At most 50 requests run
// at once; others wait up to 5 seconds, then fail with ErrBusy. A name whose
// load failed is not tried again before a backoff period has passed (the
// last error is returned meanwhile). Without a resolver, an unknown name is
// ErrNotFound.
func (h *Host) Request(ctx context.Context, nameOrAlias string) (*Instance, error) {
	return h.request(ctx, nameOrAlias, nil)
}

func (h *Host) request(ctx context.Context, name string, waiter *Instance) (*Instance, error) {
	if name == "" {
		return nil, modErr("request", `""`, fmt.Errorf("empty module name: %w", ErrNotFound))
	}
	if m, err, ok := h.existing(ctx, name, waiter); ok {
		return m, err
	}
	if h.resolver == nil {
		return nil, modErr("request", name, fmt.Errorf("demand loading is not configured: %w", ErrNotFound))
	}
	r := &h.requests
	r.mu.Lock()
	if b, ok := r.failed[name]; ok && time.Now().Before(b.until) {
		r.mu.Unlock()
		return nil, modErr("request", name, fmt.Errorf("backing off after a failed load: %w", b.err))
	}
	if c, ok := r.inflight[name]; ok {
		r.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, modErr("request", name, ctx.Err())
		}
		if isContextErr(c.err) && ctx.Err() == nil {
			// The request we merged with was cancelled by its own
			// caller; ours is still wanted: try again.
			return h.request(ctx, name, waiter)
		}
		return c.inst, c.err
	}
	c := &requestCall{done: make(chan struct{})}
	r.inflight[name] = c
	r.mu.Unlock()

	c.inst, c.err = h.runRequest(ctx, name, waiter)

	r.mu.Lock()
	delete(r.inflight, name)
	switch {
	case c.err == nil:
		delete(r.failed, name)
	case ctx.Err() == nil && !errors.Is(c.err, ErrInReadSection):
		b := r.failed[name]
		b.wait = min(max(2*b.wait, requestBackoffMin), requestBackoffMax)
		b.until, b.err = time.Now().Add(b.wait), c.err
		r.failed[name] = b
	}
	r.mu.Unlock()
	close(c.done)
	return c.inst, c.err
}

// existing returns the instance of name if one is live, or waits for one
// that is coming. ok is false when the resolver must be asked.
func (h *Host) existing(ctx context.Context, name string, waiter *Instance) (m *Instance, err error, ok bool) {
	h.mu.Lock()
	m = h.byName[name]
	if m == nil {
		h.mu.Unlock()
		return nil, nil, false
	}
	switch m.State() {
	case StateLive:
		h.mu.Unlock()
		return m, nil, true
	case StateGoing:
		h.mu.Unlock()
		return nil, nil, false // the resolver's load waits for it to be gone
	}
	if waiter != nil {
		if chain := waitChain(waiter, m); chain != "" {
			h.mu.Unlock()
			return nil, modErr("request", name, fmt.Errorf("%s: %w", chain, ErrCycle)), true
		}
		waiter.waitingFor = m
	}
	h.mu.Unlock()
	defer h.clearWaiting(waiter)
	select {
	case <-m.initDone:
	case <-ctx.Done():
		return nil, modErr("request", name, ctx.Err()), true
	}
	if m.initErr != nil {
		h.awaitGone(ctx, m)
		return nil, m.initErr, true
	}
	return m, nil, true
}

func (h *Host) runRequest(ctx context.Context, name string, waiter *Instance) (*Instance, error) {
	// A request made by a module's Init runs on behalf of a load that
	// already holds a slot (or of an explicit load): it takes none, so
	// nested requests cannot exhaust the slots and deadlock.
	if waiter == nil {
		timer := time.NewTimer(requestSlotWait)
		select {
		case h.requests.slots <- struct{}{}:
			timer.Stop()
		case <-timer.C:
			return nil, modErr("request", name, fmt.Errorf("%d module requests already in flight: %w", maxConcurrentRequests, ErrBusy))
		case <-ctx.Done():
			timer.Stop()
			return nil, modErr("request", name, ctx.Err())
		}
		defer func() { <-h.requests.slots }()
	}
	src, err := h.resolver.Resolve(ctx, name)
	if err != nil {
		return nil, modErr("request", name, err)
	}
	m, err := h.load(ctx, src, nil, loadOpts{waiter: waiter, autoclean: true})
	if errors.Is(err, ErrExists) {
		if m, ok := h.Module(src.Info().Name); ok && m.State() == StateLive {
			return m, nil
		}
	}
	return m, err
}

// Autoclean runs one sweep of the autoclean collector (rmmod -a): it
// unloads every demand-loaded module that has no references and no holders
// and was not used since the previous sweep. A module used since then has
// its mark cleared and survives this sweep: a module is removed only after
// a whole sweep period unused (the 2.4 kernel's "visited" flag). It returns
// the names it removed. Called with a hook call's context it fails at once
// with ErrInReadSection.
func (h *Host) Autoclean(ctx context.Context) ([]string, error) {
	if h.inReadSection(ctx) {
		return nil, sectionErr("autoclean", "host")
	}
	var removed []string
	var errs []error
	for _, m := range h.autocleanCandidates() {
		if m.State() != StateLive {
			continue
		}
		if m.takeUsed() {
			continue
		}
		if m.Refs() > 0 || len(m.Holders()) > 0 {
			continue
		}
		err := h.unloadInstance(ctx, m, UnloadOptions{})
		switch {
		case err == nil:
			removed = append(removed, m.name)
		case errors.Is(err, ErrBusy) || errors.Is(err, ErrNotFound):
			// Taken or removed meanwhile: not an error of the sweep.
		default:
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// autocleanCandidates returns the demand-loaded instances not yet gone,
// newest first: O(candidates), however many other modules are loaded.
func (h *Host) autocleanCandidates() []*Instance {
	h.mu.Lock()
	out := make([]*Instance, 0, len(h.autoclean))
	for m := range h.autoclean {
		out = append(out, m)
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].seq > out[j].seq })
	return out
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
