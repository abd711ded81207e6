// Package webtest helps test HTTP routes served by modules: Load, the
// concurrent clients that the swap-under-load tests keep going while
// modules are replaced, counting every request that did not get the
// expected answer.
//
// Invariants: a Load's goroutines have all returned when Stop returns
// (tests check for leaked goroutines); every request is counted, and a
// transport error or an unexpected status is a failure.
package webtest

import (
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// Load is clients issuing GETs of one URL back to back until Stop.
type Load struct {
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	total, failed atomic.Int64
	first         atomic.Value // string: the first failure
}

// StartLoad starts clients goroutines, each GETting url back to back
// through client; a request fails unless it is answered wantStatus.
func StartLoad(client *http.Client, url string, clients, wantStatus int) *Load {
	l := &Load{stop: make(chan struct{})}
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				l.total.Add(1)
				resp, err := client.Get(url)
				if err != nil {
					l.fail(err.Error())
					continue
				}
				io.Copy(io.Discard, resp.Body) //nolint:errcheck // only the status counts
				resp.Body.Close()
				if resp.StatusCode != wantStatus {
					l.fail(resp.Status)
				}
			}
		}()
	}
	return l
}

func (l *Load) fail(what string) {
	l.failed.Add(1)
	l.first.CompareAndSwap(nil, what)
}

// Stop stops the clients, waits for them, and returns how many requests
// they made, how many failed, and the first failure ("" if none). It
// may be called again (a deferred Stop after an early one): it then
// returns the same counts.
func (l *Load) Stop() (total, failed int64, first string) {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
	first, _ = l.first.Load().(string)
	return l.total.Load(), l.failed.Load(), first
}
