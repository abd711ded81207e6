package daemon

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/raceless/raceless"
)

// metrics are the daemon's Prometheus metrics, written by hand in the text
// exposition format (version 0.0.4): a dozen lines do not justify
// client_golang and its dependencies.
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

func (m *metrics) request(op string, err error) {
	m.mu.Lock()
	m.requests[op]++
	if err != nil {
		m.requestErrors[op]++
	}
	m.mu.Unlock()
}

func label(v string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (d *Daemon) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	var b strings.Builder
	mods := d.host.Modules()
	fmt.Fprintf(&b, "# HELP raceless_modules Modules currently loaded (any state).\n# TYPE raceless_modules gauge\nraceless_modules %d\n", len(mods))
	b.WriteString("# HELP raceless_module_references References held on a module.\n# TYPE raceless_module_references gauge\n")
	sort.Slice(mods, func(i, j int) bool { return mods[i].Name() < mods[j].Name() })
	for _, mod := range mods {
		fmt.Fprintf(&b, "raceless_module_references{module=\"%s\",state=\"%s\"} %d\n", label(mod.Name()), mod.State(), mod.Refs())
	}
	b.WriteString("# HELP raceless_module_holders Modules depending on a module.\n# TYPE raceless_module_holders gauge\n")
	for _, mod := range mods {
		fmt.Fprintf(&b, "raceless_module_holders{module=\"%s\"} %d\n", label(mod.Name()), len(mod.Holders()))
	}
	taint := 0
	if len(d.host.Taints()) > 0 {
		taint = 1
	}
	fmt.Fprintf(&b, "# HELP raceless_host_tainted Whether the host is tainted (a forced unload, a panic).\n# TYPE raceless_host_tainted gauge\nraceless_host_tainted %d\n", taint)

	m := d.metrics
	m.mu.Lock()
	b.WriteString("# HELP raceless_module_load_seconds Time from coming to live of successful loads (explicit and demand loads).\n# TYPE raceless_module_load_seconds summary\n")
	for _, k := range sortedKeys(m.loads) {
		fmt.Fprintf(&b, "raceless_module_load_seconds_sum{module=\"%s\"} %g\nraceless_module_load_seconds_count{module=\"%s\"} %d\n", label(k), m.loadSeconds[k], label(k), m.loads[k])
	}
	b.WriteString("# HELP raceless_module_unload_seconds Time from going to gone of unloads.\n# TYPE raceless_module_unload_seconds summary\n")
	for _, k := range sortedKeys(m.unloads) {
		fmt.Fprintf(&b, "raceless_module_unload_seconds_sum{module=\"%s\"} %g\nraceless_module_unload_seconds_count{module=\"%s\"} %d\n", label(k), m.unloadSeconds[k], label(k), m.unloads[k])
	}
	b.WriteString("# HELP raceless_module_calls_total Calls into a module's symbols through the daemon.\n# TYPE raceless_module_calls_total counter\n")
	for _, k := range sortedKeys(m.calls) {
		fmt.Fprintf(&b, "raceless_module_calls_total{module=\"%s\"} %d\n", label(k), m.calls[k])
	}
	b.WriteString("# HELP raceless_module_failures_total Failed loads, unloads and calls.\n# TYPE raceless_module_failures_total counter\n")
	fk := make([][2]string, 0, len(m.failures))
	for k := range m.failures {
		fk = append(fk, k)
	}
	sort.Slice(fk, func(i, j int) bool {
		if fk[i][0] != fk[j][0] {
			return fk[i][0] < fk[j][0]
		}
		return fk[i][1] < fk[j][1]
	})
	for _, k := range fk {
		fmt.Fprintf(&b, "raceless_module_failures_total{module=\"%s\",op=\"%s\"} %d\n", label(k[0]), label(k[1]), m.failures[k])
	}
	b.WriteString("# HELP raceless_control_requests_total Control socket requests.\n# TYPE raceless_control_requests_total counter\n")
	for _, k := range sortedKeys(m.requests) {
		fmt.Fprintf(&b, "raceless_control_requests_total{op=\"%s\"} %d\n", label(k), m.requests[k])
	}
	b.WriteString("# HELP raceless_control_errors_total Control socket requests that failed.\n# TYPE raceless_control_errors_total counter\n")
	for _, k := range sortedKeys(m.requestErrors) {
		fmt.Fprintf(&b, "raceless_control_errors_total{op=\"%s\"} %d\n", label(k), m.requestErrors[k])
	}
	m.mu.Unlock()
	_, _ = w.Write([]byte(b.String()))
}
