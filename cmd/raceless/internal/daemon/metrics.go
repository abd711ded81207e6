package daemon

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/raceless/raceless"
)

// metrics are the daemon's Prometheus metrics, exposed with client_golang:
// the lifecycle and control counts below are kept here (the notifier chain
// and the control handler feed them) and collected as constant metrics on
// each scrape (collector); the HTTP routes' are client_golang instruments.
type metrics struct {
	mu sync.Mutex // guards every map below
	// per module
	loads                   map[string]uint64
	loadSeconds             map[string]float64
	unloads                 map[string]uint64
	unloadSeconds           map[string]float64
	calls                   map[string]uint64
	failures                map[[2]string]uint64 // module, op
	requests, requestErrors map[string]uint64    // control op
	// HTTP requests served by module routes (package web), by module,
	// route pattern and status ("0": aborted by a forced unload), and
	// their latency by module and route.
	httpRequests *prometheus.CounterVec
	httpLatency  *prometheus.HistogramVec

	// Transition times of instances between coming and live, and going
	// and gone (the notifier chain feeds them).
	comingAt, goingAt map[*raceless.Instance]time.Time
}

// observe is the daemon's subscriber on the host's notifier chain: it
// measures every load (coming → live) and unload (going → gone: the grace
// period, the wait for references, Stop and Exit, from the moment the
// module stops accepting references to the moment its name is free),
// explicit or demand-loaded or autocleaned or the old instance of a hot
// swap, and counts failed inits. An unload refused after going (a
// reference slipped in, Exit refused, a wait cancelled) is seen as going
// then live again, and is not measured.
func (m *metrics) observe(ev raceless.Event) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	switch ev.State {
	case raceless.StateComing:
		m.comingAt[ev.Instance] = now
	case raceless.StateLive:
		if t, ok := m.comingAt[ev.Instance]; ok {
			delete(m.comingAt, ev.Instance)
			m.loads[ev.Module]++
			m.loadSeconds[ev.Module] += now.Sub(t).Seconds()
		}
		delete(m.goingAt, ev.Instance) // an unload refused: live again
	case raceless.StateGoing:
		if _, ok := m.comingAt[ev.Instance]; ok { // Init failed
			delete(m.comingAt, ev.Instance)
			m.failures[[2]string{ev.Module, "load"}]++
			return
		}
		m.goingAt[ev.Instance] = now
	case raceless.StateGone:
		if t, ok := m.goingAt[ev.Instance]; ok {
			delete(m.goingAt, ev.Instance)
			m.unloads[ev.Module]++
			m.unloadSeconds[ev.Module] += now.Sub(t).Seconds()
		}
	}
}

func newMetrics() *metrics {
	return &metrics{
		loads: map[string]uint64{}, loadSeconds: map[string]float64{},
		unloads: map[string]uint64{}, unloadSeconds: map[string]float64{},
		calls:    map[string]uint64{},
		failures: map[[2]string]uint64{},
		requests: map[string]uint64{}, requestErrors: map[string]uint64{},
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "raceless_http_requests_total",
			Help: "HTTP requests served by module routes, by status (0: aborted by a forced unload)."}, []string{"module", "route", "code"}),
		httpLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "raceless_http_request_duration_seconds",
			Help: "Latency of HTTP requests served by module routes.", Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10)}, []string{"module", "route"}),
		comingAt: map[*raceless.Instance]time.Time{}, goingAt: map[*raceless.Instance]time.Time{},
	}
}

func (m *metrics) failed(name, op string) {
	m.mu.Lock()
	m.failures[[2]string{name, op}]++
	m.mu.Unlock()
}

func (m *metrics) called(name string, err error) {
	m.mu.Lock()
	m.calls[name]++
	if err != nil {
		m.failures[[2]string{name, "call"}]++
	}
	m.mu.Unlock()
}

// route is web.Config.Observe: one request served by a module route.
func (m *metrics) route(pattern, module string, status int, d time.Duration) {
	m.httpRequests.WithLabelValues(module, pattern, strconv.Itoa(status)).Inc()
	m.httpLatency.WithLabelValues(module, pattern).Observe(d.Seconds())
}

func (m *metrics) request(op string, err error) {
	m.mu.Lock()
	m.requests[op]++
	if err != nil {
		m.requestErrors[op]++
	}
	m.mu.Unlock()
}

// PoolStat is one http-wasm route module's instance pool, for metrics.
type PoolStat struct {
	Module     string
	Size, Busy int
	// Errors counts the failed requests by kind (trap, timeout, abi).
	Errors map[string]uint64
}

// collector exposes the daemon's kept counts and the host's state as
// constant metrics, built on each scrape.
type collector struct{ d *Daemon }

var (
	descModules    = prometheus.NewDesc("raceless_modules", "Modules currently loaded (any state).", nil, nil)
	descRefs       = prometheus.NewDesc("raceless_module_references", "References held on a module.", []string{"module", "state"}, nil)
	descHolders    = prometheus.NewDesc("raceless_module_holders", "Modules depending on a module.", []string{"module"}, nil)
	descTainted    = prometheus.NewDesc("raceless_host_tainted", "Whether the host is tainted (a forced unload, a panic).", nil, nil)
	descLoad       = prometheus.NewDesc("raceless_module_load_seconds", "Time from coming to live of successful loads (explicit and demand loads).", []string{"module"}, nil)
	descUnload     = prometheus.NewDesc("raceless_module_unload_seconds", "Time from going to gone of unloads.", []string{"module"}, nil)
	descCalls      = prometheus.NewDesc("raceless_module_calls_total", "Calls into a module's symbols through the daemon.", []string{"module"}, nil)
	descFailures   = prometheus.NewDesc("raceless_module_failures_total", "Failed loads, unloads and calls.", []string{"module", "op"}, nil)
	descRequests   = prometheus.NewDesc("raceless_control_requests_total", "Control socket requests.", []string{"op"}, nil)
	descReqErrors  = prometheus.NewDesc("raceless_control_errors_total", "Control socket requests that failed.", []string{"op"}, nil)
	descPoolSize   = prometheus.NewDesc("raceless_http_pool_size", "Instances started in an http-wasm route module's pool (it grows on demand up to its size).", []string{"module"}, nil)
	descPoolBusy   = prometheus.NewDesc("raceless_http_pool_busy", "Instances of an http-wasm route module's pool serving a request.", []string{"module"}, nil)
	descPoolErrors = prometheus.NewDesc("raceless_http_wasm_errors_total", "Failed requests of http-wasm route modules, by kind (trap, timeout, abi).", []string{"module", "kind"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descModules, descRefs, descHolders, descTainted, descLoad, descUnload,
		descCalls, descFailures, descRequests, descReqErrors, descPoolSize, descPoolBusy, descPoolErrors} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	gauge, counter := prometheus.GaugeValue, prometheus.CounterValue
	mods := d.host.Modules()
	ch <- prometheus.MustNewConstMetric(descModules, gauge, float64(len(mods)))
	for _, mod := range mods {
		ch <- prometheus.MustNewConstMetric(descRefs, gauge, float64(mod.Refs()), mod.Name(), mod.State().String())
		ch <- prometheus.MustNewConstMetric(descHolders, gauge, float64(len(mod.Holders())), mod.Name())
	}
	taint := 0.0
	if len(d.host.Taints()) > 0 {
		taint = 1
	}
	ch <- prometheus.MustNewConstMetric(descTainted, gauge, taint)
	m := d.metrics
	m.mu.Lock()
	for k, n := range m.loads {
		ch <- prometheus.MustNewConstSummary(descLoad, n, m.loadSeconds[k], nil, k)
	}
	for k, n := range m.unloads {
		ch <- prometheus.MustNewConstSummary(descUnload, n, m.unloadSeconds[k], nil, k)
	}
	for k, n := range m.calls {
		ch <- prometheus.MustNewConstMetric(descCalls, counter, float64(n), k)
	}
	for k, n := range m.failures {
		ch <- prometheus.MustNewConstMetric(descFailures, counter, float64(n), k[0], k[1])
	}
	for k, n := range m.requests {
		ch <- prometheus.MustNewConstMetric(descRequests, counter, float64(n), k)
	}
	for k, n := range m.requestErrors {
		ch <- prometheus.MustNewConstMetric(descReqErrors, counter, float64(n), k)
	}
	m.mu.Unlock()
	if d.cfg.HTTPPools != nil {
		for _, p := range d.cfg.HTTPPools() {
			ch <- prometheus.MustNewConstMetric(descPoolSize, gauge, float64(p.Size), p.Module)
			ch <- prometheus.MustNewConstMetric(descPoolBusy, gauge, float64(p.Busy), p.Module)
			for kind, n := range p.Errors {
				ch <- prometheus.MustNewConstMetric(descPoolErrors, counter, float64(n), p.Module, kind)
			}
		}
	}
}

// metricsHandler serves the daemon's metrics in Prometheus's formats,
// with the Go runtime's (go_memstats_heap_inuse_bytes, ...) and the
// process's (process_resident_memory_bytes, ...) standard ones.
func (d *Daemon) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{d}, d.metrics.httpRequests, d.metrics.httpLatency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
