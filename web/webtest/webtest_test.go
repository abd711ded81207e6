package webtest_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/raceless/raceless/web/webtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every request is counted; those answered another status than the one
// wanted are failures, the first one named.
func TestLoadCountsBadStatus(t *testing.T) {
	var n atomic.Int64
	enough := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		if i >= 20 {
			once.Do(func() { close(enough) })
		}
		if i%2 == 0 {
			http.Error(w, "no", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	l := webtest.StartLoad(srv.Client(), srv.URL, 2, http.StatusOK)
	<-enough
	total, failed, first := l.Stop()
	if total < 20 || failed == 0 || failed == total || first != "503 Service Unavailable" {
		t.Fatalf("total %d failed %d first %q: want some failed, the first a 503", total, failed, first)
	}
	if t2, f2, first2 := l.Stop(); t2 != total || f2 != failed || first2 != first {
		t.Fatalf("a second Stop: %d %d %q, want the same counts", t2, f2, first2)
	}
}

// failingTransport fails every request, and says so once.
type failingTransport struct {
	once   *sync.Once
	failed chan struct{}
}

func (f failingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	f.once.Do(func() { close(f.failed) })
	return nil, errors.New("connection refused")
}

// A request that fails in transport is a failure too.
func TestLoadCountsTransportErrors(t *testing.T) {
	tr := failingTransport{once: new(sync.Once), failed: make(chan struct{})}
	l := webtest.StartLoad(&http.Client{Transport: tr}, "http://example.invalid/", 1, http.StatusOK)
	<-tr.failed
	total, failed, first := l.Stop()
	if failed == 0 || failed != total || first == "" {
		t.Fatalf("total %d failed %d first %q: want every request failed", total, failed, first)
	}
}
