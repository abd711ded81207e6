package web

import (
	"math/rand/v2"
	"sync"

	"github.com/raceless/raceless"
)

// inflightShards is how many locks the requests in flight are spread
// over: enough that concurrent requests seldom meet on one.
const inflightShards = 32

// inflight is the set of requests in flight on module routes and
// middleware. Each request goes to a shard picked at random, a lock and
// an intrusive list, so that tracking it costs one lock that other
// requests seldom hold and no allocation (one lock and a map for all
// requests cost a route a measurable share of bench http's throughput);
// InFlight and Abort, rare, visit every shard.
type inflight struct {
	shards [inflightShards]inflightShard
}

type inflightShard struct {
	mu   sync.Mutex // guards head, and the links and done of each request listed
	head *request
	_    [48]byte // one cache line each: shards in use on two CPUs share none
}

// add lists q, a request on a route or middleware of owner.
func (s *inflight) add(owner *raceless.Instance, q *request) {
	q.owner = owner
	sh := &s.shards[rand.Uint32()%inflightShards]
	q.shard = sh
	sh.mu.Lock()
	q.next = sh.head
	if sh.head != nil {
		sh.head.prev = q
	}
	sh.head = q
	sh.mu.Unlock()
}

// remove takes q off its list and closes its done channel if Abort made
// one.
func (s *inflight) remove(q *request) {
	sh := q.shard
	sh.mu.Lock()
	if q.prev != nil {
		q.prev.next = q.next
	} else {
		sh.head = q.next
	}
	if q.next != nil {
		q.next.prev = q.prev
	}
	q.prev, q.next = nil, nil
	if q.done != nil {
		close(q.done)
	}
	sh.mu.Unlock()
}

// each calls f, with the request's shard locked, for every request in
// flight on the module called name.
func (s *inflight) each(name string, f func(*request)) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for q := sh.head; q != nil; q = q.next {
			if q.owner.Name() == name {
				f(q)
			}
		}
		sh.mu.Unlock()
	}
}
