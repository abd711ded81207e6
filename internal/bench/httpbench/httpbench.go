// Package httpbench is `raceless bench http`: one handler ("hello,
// world") served as a plain net/http handler (nethttp_native) and as a
// native module route through raceless (module_native, package web), and
// an http-wasm guest built by Go (examples/wasm/httpbench) served through
// raceless's instance pool (module_wasm, package wasm/httpwasm) and with
// a fresh instance per request (wazero_naive), all measured in one run on
// loopback by one load generator (this package's own: Concurrency
// goroutines, each a keep-alive client issuing GET requests back to
// back), the same handler in a process-based plugin with
// hashicorp/go-plugin over net/rpc (rpc_plugin, plugin.go), plus two swap
// rows: Host.Replace of the wasm route module, repeated under the same
// load, paced over the row's duration (swap) and back to back
// (swap_back_to_back).
package httpbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm/httpwasm"
	"github.com/raceless/raceless/web"
)

// Options size the run.
type Options struct {
	Concurrency int           // load goroutines (default 16)
	Duration    time.Duration // per row (default 3s)
	// NativeDuration is the time of each of the two native rows
	// (default 20s), measured in alternating slices of SliceDuration:
	// their ratio, the tightest target, is a few percent, and one slice
	// on this shared 2-core machine reads anywhere within ±20% of it, so
	// the standard error of the ratio is about 0.17·√(slice/time): 1.2%
	// at 20 s, 3% at 3 s.
	NativeDuration time.Duration
	Swaps          int // replaces in the swap row (default 100)
}

// SliceDuration is the length of one alternating slice of the native
// rows.
const SliceDuration = 100 * time.Millisecond

// Quick is a tiny budget: checks that the benchmark runs.
func Quick() Options {
	return Options{Concurrency: 2, Duration: 100 * time.Millisecond, NativeDuration: 2 * SliceDuration, Swaps: 3}
}

// Row is one measured configuration.
type Row struct {
	Name string  `json:"name"`
	RPS  float64 `json:"rps"`
	P50  float64 `json:"p50_us"`
	P99  float64 `json:"p99_us"`
}

// SwapRow is the swap measurement.
type SwapRow struct {
	Name        string  `json:"name"`
	Swaps       int     `json:"swaps"`
	Requests    int64   `json:"requests"`
	Failed      int64   `json:"failed"`
	P99Steady   float64 `json:"p99_steady_us"`
	P99During   float64 `json:"p99_during_us"`
	SwapsPerSec float64 `json:"-"`
}

var body = []byte("hello, world\n")

func handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})
}

type load struct {
	lat     []time.Duration
	n       int64
	failed  int64
	elapsed time.Duration // from the first request's start to the last one's end
}

// add appends m's measurements to l's.
func (l *load) add(m load) {
	l.lat = append(l.lat, m.lat...)
	l.n += m.n
	l.failed += m.failed
	l.elapsed += m.elapsed
}

func (l load) rps() float64 { return float64(l.n) / l.elapsed.Seconds() }

// generator is the load: concurrency keep-alive clients, each issuing
// GET requests back to back. Its connections last across drives, so
// that a row measured in slices does not pay for new connections in
// each one.
type generator struct {
	clients []*http.Client
}

func newGenerator(concurrency int) *generator {
	g := &generator{}
	for range concurrency {
		g.clients = append(g.clients, &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}})
	}
	return g
}

// close closes the clients' idle connections.
func (g *generator) close() {
	for _, c := range g.clients {
		c.Transport.(*http.Transport).CloseIdleConnections()
	}
}

// drive runs the load against url until stop is closed (or for d when
// stop is nil) and returns what it measured. Throughput is counted
// against the time it took, not d: a timer fires late on a busy machine,
// and the requests begun before it ends in the count.
func (g *generator) drive(url string, d time.Duration, stop <-chan struct{}) load {
	var mu sync.Mutex
	var all load
	var wg sync.WaitGroup
	var done atomic.Bool
	start := time.Now()
	if stop == nil {
		t := time.AfterFunc(d, func() { done.Store(true) })
		defer t.Stop()
	} else {
		go func() { <-stop; done.Store(true) }()
	}
	for _, c := range g.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var l load
			for !done.Load() {
				t0 := time.Now()
				resp, err := c.Get(url)
				if err != nil {
					l.failed++
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				l.lat = append(l.lat, time.Since(t0))
				l.n++
				if resp.StatusCode != 200 {
					l.failed++
				}
			}
			mu.Lock()
			all.add(l)
			mu.Unlock()
		}()
	}
	wg.Wait()
	all.elapsed = time.Since(start)
	return all
}

// drive runs a load of conc new clients against url (see
// generator.drive) and closes their connections.
func drive(url string, conc int, d time.Duration, stop <-chan struct{}) load {
	g := newGenerator(conc)
	defer g.close()
	return g.drive(url, d, stop)
}

func pct(lat []time.Duration, p float64) float64 {
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	return float64(lat[int(float64(len(lat)-1)*p)].Nanoseconds()) / 1e3
}

func serve(h http.Handler) (url string, closeFn func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ConnContext: web.ConnContext}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String() + "/hello", func() { srv.Close() }, nil
}

func routeSource(version string) raceless.Source {
	return raceless.Native(raceless.Info{Name: "bench_route", Version: version}, func() raceless.Module { return routeMod{} })
}

type routeMod struct{}

// routePattern is the pattern of the measured route, native and plain.
const routePattern = "GET /hello"

func (routeMod) Init(k *raceless.Kernel) error { return web.Register(k, routePattern, handler()) }
func (routeMod) Exit() (int, error)            { return 0, nil }

// measureAlternating measures handler a and handler b for d each, in
// slices of SliceDuration taken in turn (a, b, b, a, ...), one server and
// one generator each, and returns their rows and the standard error of
// b's rps ratio to a's (over the pairs of slices: a slice of each, next
// to each other in time).
func measureAlternating(conc int, d time.Duration, names [2]string, hs [2]http.Handler) (rows [2]Row, ratioSE float64, err error) {
	var urls [2]string
	var gens [2]*generator
	for i, h := range hs {
		url, closeFn, err := serve(h)
		if err != nil {
			return rows, 0, err
		}
		defer closeFn()
		urls[i] = url
		gens[i] = newGenerator(conc)
		defer gens[i].close()
	}
	var loads [2]load
	pairs := max(1, int(d/SliceDuration))
	ratios := make([]float64, 0, pairs)
	for k := range pairs {
		// a, b, then b, a: each row follows the other as often as
		// itself, so that what a slice leaves behind (garbage for the
		// collector, cold caches) weighs on both alike.
		order := [2]int{0, 1}
		if k%2 == 1 {
			order = [2]int{1, 0}
		}
		var pair [2]load
		for _, i := range order {
			pair[i] = gens[i].drive(urls[i], SliceDuration, nil)
			loads[i].add(pair[i])
		}
		ratios = append(ratios, pair[1].rps()/pair[0].rps())
	}
	for i, l := range loads {
		if l.failed > 0 {
			return rows, 0, fmt.Errorf("%s: %d of %d requests failed", names[i], l.failed, l.n)
		}
		rows[i] = Row{Name: names[i], RPS: l.rps(), P50: pct(l.lat, .5), P99: pct(l.lat, .99)}
	}
	return rows, stddev(ratios) / math.Sqrt(float64(len(ratios))), nil
}

// stddev is the sample standard deviation of xs (0 for fewer than two).
func stddev(xs []float64) float64 {
	if len(xs) < 2 {
		return 0
	}
	var mean float64
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	var v float64
	for _, x := range xs {
		v += (x - mean) * (x - mean)
	}
	return math.Sqrt(v / float64(len(xs)-1))
}

// Run measures every row and writes them (a table, or JSON: a list of
// rows).
func Run(ctx context.Context, w io.Writer, asJSON bool, o Options) error {
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.Duration <= 0 {
		o.Duration = 3 * time.Second
	}
	if o.NativeDuration <= 0 {
		o.NativeDuration = 20 * time.Second
	}
	if o.Swaps <= 0 {
		o.Swaps = 100
	}
	var rows []any
	measure := func(name string, h http.Handler) (Row, error) {
		url, closeFn, err := serve(h)
		if err != nil {
			return Row{}, err
		}
		defer closeFn()
		l := drive(url, o.Concurrency, o.Duration, nil)
		if l.failed > 0 {
			return Row{}, fmt.Errorf("%s: %d of %d requests failed", name, l.failed, l.n)
		}
		return Row{Name: name, RPS: l.rps(), P50: pct(l.lat, .5), P99: pct(l.lat, .99)}, nil
	}
	h := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer h.Shutdown(context.WithoutCancel(ctx))
	rt := web.New(h, web.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer rt.Close()
	if _, err := h.Load(ctx, routeSource("0"), nil); err != nil {
		return err
	}
	// The limit is what a program without raceless would serve: the
	// handler on a plain http.ServeMux under the same pattern as the
	// module's route. The two rows are measured in alternating slices of
	// the same total time, so that a neighbour's load, which comes and
	// goes over seconds on a shared machine, weighs on both alike.
	mux := http.NewServeMux()
	mux.Handle(routePattern, handler())
	native, nativeSE, err := measureAlternating(o.Concurrency, o.NativeDuration,
		[2]string{"nethttp_native", "module_native"}, [2]http.Handler{mux, rt})
	if err != nil {
		return err
	}
	plain := native[0]
	rows = append(rows, native[0], native[1])

	// The wasm guest, built from this source tree.
	path, err := wasmtest.BuildCached(ctx, "examples/wasm/httpbench")
	if err != nil {
		return err
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	wrt, err := httpwasm.NewRuntime(ctx, httpwasm.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	defer wrt.Close(context.WithoutCancel(ctx))
	wasmSource := func(name, version string, fresh bool) (raceless.Source, error) {
		return wrt.Source(ctx, raceless.Info{Name: name, Version: version}, bin,
			httpwasm.Options{Patterns: []string{"GET /" + name}, FreshInstance: fresh})
	}
	for _, row := range []struct {
		name, module string
		fresh        bool
	}{{"module_wasm", "wasm_route", false}, {"wazero_naive", "wasm_naive", true}} {
		src, err := wasmSource(row.module, "0", row.fresh)
		if err != nil {
			return err
		}
		if _, err := h.Load(ctx, src, nil); err != nil {
			return err
		}
		url, closeFn, err := serve(rt)
		if err != nil {
			return err
		}
		url = strings.TrimSuffix(url, "/hello") + "/" + row.module
		l := drive(url, o.Concurrency, o.Duration, nil)
		closeFn()
		if l.failed > 0 {
			return fmt.Errorf("%s: %d of %d requests failed", row.name, l.failed, l.n)
		}
		r := Row{Name: row.name, RPS: l.rps(), P50: pct(l.lat, .5), P99: pct(l.lat, .99)}
		rows = append(rows, r)
		if row.fresh {
			if err := h.Unload(ctx, row.module, raceless.UnloadOptions{}); err != nil {
				return err
			}
		}
	}
	wasmRow := rows[2].(Row)

	// rpc_plugin: the handler in another process (go-plugin, net/rpc),
	// called once per request by a net/http front end.
	ph, kill, err := startPlugin()
	if err != nil {
		return err
	}
	pr, err := measure("rpc_plugin", ph)
	kill()
	if err != nil {
		return err
	}
	rows = append(rows, pr)

	// swap: the same load on the wasm route, with Replace of its module
	// repeated while it runs; p99_steady_us is module_wasm's. Two runs:
	// "swap", the swaps spread evenly over the row's duration (100 in
	// 3 s by default: one every 30 ms), and "swap_back_to_back", each
	// swap begun as soon as the previous one returned.
	url, closeFn, err := serve(rt)
	if err != nil {
		return err
	}
	defer closeFn()
	url = strings.TrimSuffix(url, "/hello") + "/wasm_route"
	version := 0
	swapRun := func(name string, interval time.Duration) (SwapRow, error) {
		stop := make(chan struct{})
		res := make(chan load, 1)
		go func() { res <- drive(url, o.Concurrency, 0, stop) }()
		var swapErr error
		start := time.Now()
		for i := 1; i <= o.Swaps; i++ {
			if interval > 0 {
				// Paced: the i-th swap begins at start+i*interval (later
				// if the previous one ran late), not sooner.
				if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
					time.Sleep(d)
				}
			}
			version++
			var src raceless.Source
			if src, swapErr = wasmSource("wasm_route", fmt.Sprint(version), false); swapErr != nil {
				break
			}
			if _, swapErr = h.Replace(ctx, "wasm_route", src, nil, raceless.ReplaceOptions{}); swapErr != nil {
				break
			}
		}
		took := time.Since(start)
		close(stop)
		l := <-res
		if swapErr != nil {
			return SwapRow{}, swapErr
		}
		return SwapRow{Name: name, Swaps: o.Swaps, Requests: l.n, Failed: l.failed, P99Steady: wasmRow.P99, P99During: pct(l.lat, .99),
			SwapsPerSec: float64(o.Swaps) / took.Seconds()}, nil
	}
	sw, err := swapRun("swap", o.Duration/time.Duration(o.Swaps))
	if err != nil {
		return err
	}
	rows = append(rows, sw)
	sb, err := swapRun("swap_back_to_back", 0)
	if err != nil {
		return err
	}
	rows = append(rows, sb)

	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	fmt.Fprintf(w, "load: %d keep-alive clients (this package's generator), loopback; %s per row, the two native rows %s each in alternating slices of %s\n",
		o.Concurrency, o.Duration, o.NativeDuration, SliceDuration)
	fmt.Fprintf(w, "%-16s %12s %10s %10s %8s %8s\n", "row", "rps", "p50_us", "p99_us", "rps/net", "p99/net")
	for _, r := range rows[:5] {
		r := r.(Row)
		fmt.Fprintf(w, "%-16s %12.0f %10.1f %10.1f %8.2f %8.2f\n", r.Name, r.RPS, r.P50, r.P99, r.RPS/plain.RPS, r.P99/plain.P99)
	}
	fmt.Fprintf(w, "module_native / nethttp_native: %.3f ± %.3f (standard error over %d pairs of slices)\n",
		native[1].RPS/plain.RPS, nativeSE, max(1, int(o.NativeDuration/SliceDuration)))
	for _, sw := range []SwapRow{sw, sb} {
		fmt.Fprintf(w, "%s (Host.Replace of the wasm route, %.0f swaps/s): %d swaps, %d requests, %d failed, p99 steady %.1fus, during swaps %.1fus (%.2fx)\n",
			sw.Name, sw.SwapsPerSec, sw.Swaps, sw.Requests, sw.Failed, sw.P99Steady, sw.P99During, sw.P99During/sw.P99Steady)
	}
	return nil
}
