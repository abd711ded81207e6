// Package calls measures the fast paths side by side: a call through a
// function value unprotected, under the grace domain (reader handle and
// anonymous), under a module reference, and under the protections a Go
// program would otherwise use; then the latency of Synchronize, and of
// loading and unloading an idle native module. The CLI's "bench calls"
// runs Run.
package calls

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/primitives/grace"
	"github.com/raceless/raceless/internal/primitives/ref"
)

// Options tunes Run. Zero values select the defaults.
type Options struct {
	// MaxGoroutines is the largest goroutine count measured (1..Max);
	// default GOMAXPROCS. Raise it to draw scaling curves on a big machine.
	MaxGoroutines int
	// Duration is the target wall time of one measurement; default 100ms.
	Duration time.Duration
	// Repeats is how many measurements each figure is the median of;
	// default 5.
	Repeats int
	// SyncSamples is how many Synchronize calls, and how many load/unload
	// cycles, each latency figure is drawn from; default 2000.
	SyncSamples int
}

// Quick returns options for a smoke run: every benchmark, each with a
// tiny budget (milliseconds in all; the figures mean nothing). The CLI's
// "bench calls --quick" uses them.
func Quick() Options {
	return Options{MaxGoroutines: 2, Duration: time.Millisecond, Repeats: 1, SyncSamples: 20}
}

func (o Options) withDefaults() Options {
	if o.MaxGoroutines <= 0 {
		o.MaxGoroutines = runtime.GOMAXPROCS(0)
	}
	if o.Duration <= 0 {
		o.Duration = 100 * time.Millisecond
	}
	if o.Repeats <= 0 {
		o.Repeats = 5
	}
	if o.SyncSamples <= 0 {
		o.SyncSamples = 2000
	}
	return o
}

// CallResult is one protected-call figure: ns per call, aggregate (wall time
// divided by the calls of all goroutines together), median of the repeats.
type CallResult struct {
	Name       string  `json:"name"`
	Goroutines int     `json:"goroutines"`
	NsPerOp    float64 `json:"ns_per_op"`
}

// SyncResult is the latency of Synchronize with Readers goroutines cycling
// through read sections.
type SyncResult struct {
	Name    string  `json:"name"` // "synchronize"
	Readers int     `json:"readers"`
	P50Ns   float64 `json:"p50_ns"`
	P99Ns   float64 `json:"p99_ns"`
}

// LifecycleResult is the latency of loading or unloading an idle native
// module (one symbol, one hook): Name is "load_native" or
// "unload_idle_native".
type LifecycleResult struct {
	Name  string  `json:"name"`
	P50Ns float64 `json:"p50_ns"`
	P99Ns float64 `json:"p99_ns"`
}

// Names lists the call benchmarks in table order.
var Names = []string{"unprotected", "grace_reader", "grace_anonymous", "ref_tryget_put", "ref_word", "rwmutex", "atomic_counter", "mutex_counter"}

// target is the protected function: tiny, not inlined, called through a
// package variable so the call stays indirect.
//
//go:noinline
func target(x int) int { return x + 1 }

var call = target

// sinks keeps results alive, one padded slot per goroutine.
var sinks [256]struct {
	v int
	_ [120]byte
}

// worker runs n protected calls; setup makes one per goroutine.
type worker func(n int) int

type benchmark struct {
	name  string
	setup func() (w func(g int) worker, teardown func())
}

// perGoroutine is a setup's result for a path with a per-goroutine handle
// (a grace Reader, a ref Word): each worker registers its own and runs
// body with it; teardown closes them all.
func perGoroutine[H any](register func() H, closeH func(H), body func(H) worker) (func(int) worker, func()) {
	var mu sync.Mutex // guards hs
	var hs []H
	return func(int) worker {
			h := register()
			mu.Lock()
			hs = append(hs, h)
			mu.Unlock()
			return body(h)
		}, func() {
			for _, h := range hs {
				closeH(h)
			}
		}
}

func benchmarks() []benchmark {
	return []benchmark{
		{"unprotected", func() (func(int) worker, func()) {
			return func(int) worker {
				return func(n int) int {
					acc := 0
					for i := 0; i < n; i++ {
						acc = call(acc)
					}
					return acc
				}
			}, func() {}
		}},
		{"grace_reader", func() (func(int) worker, func()) {
			d := grace.New()
			return perGoroutine(d.Register, (*grace.Reader).Close, func(r *grace.Reader) worker {
				return func(n int) int {
					acc := 0
					for i := 0; i < n; i++ {
						r.Lock()
						acc = call(acc)
						r.Unlock()
					}
					return acc
				}
			})
		}},
		{"grace_anonymous", func() (func(int) worker, func()) {
			d := grace.New()
			return func(int) worker {
				return func(n int) int {
					acc := 0
					for i := 0; i < n; i++ {
						t := d.Lock()
						acc = call(acc)
						d.Unlock(t)
					}
					return acc
				}
			}, func() {}
		}},
		{"ref_tryget_put", func() (func(int) worker, func()) {
			r := ref.New(false)
			return func(int) worker {
				return func(n int) int {
					acc := 0
					for i := 0; i < n; i++ {
						if r.TryGet() {
							acc = call(acc)
							r.Put()
						}
					}
					return acc
				}
			}, func() {}
		}},
		{"ref_word", func() (func(int) worker, func()) { // raceless.Caller's path
			var ws ref.Words
			r := ws.New(false)
			return perGoroutine(ws.Register, (*ref.Word).Close, func(h *ref.Word) worker {
				return func(n int) int {
					acc := 0
					for i := 0; i < n; i++ {
						if h.TryGet(r) {
							acc = call(acc)
							h.Put(r)
						}
					}
					return acc
				}
			})
		}},
		{"rwmutex", func() (func(int) worker, func()) {
			var mu sync.RWMutex
			return func(int) worker {
				return func(n int) int {
					acc := 0
					for i := 0; i < n; i++ {
						mu.RLock()
						acc = call(acc)
						mu.RUnlock()
					}
					return acc
				}
			}, func() {}
		}},
		{"atomic_counter", func() (func(int) worker, func()) {
			var c atomic.Int64
			return func(int) worker {
				return func(n int) int {
					acc := 0
					for i := 0; i < n; i++ {
						if c.Add(1) > 0 {
							acc = call(acc)
						}
						c.Add(-1)
					}
					return acc
				}
			}, func() {}
		}},
		{"mutex_counter", func() (func(int) worker, func()) {
			// The 2002 try_inc_mod_count: a spinlock-protected count, -1
			// meaning "unloading".
			var mu sync.Mutex
			count := 0
			return func(int) worker {
				return func(n int) int {
					acc := 0
					for i := 0; i < n; i++ {
						mu.Lock()
						ok := count >= 0
						if ok {
							count++
						}
						mu.Unlock()
						if ok {
							acc = call(acc)
							mu.Lock()
							count--
							mu.Unlock()
						}
					}
					return acc
				}
			}, func() {}
		}},
	}
}

// measure runs g goroutines of n calls each and returns aggregate ns/call.
func measure(ws []worker, n int) float64 {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			sinks[i%len(sinks)].v = w(n)
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	return float64(time.Since(t0).Nanoseconds()) / float64(n*len(ws))
}

// iterations calibrates n so that one goroutine runs for about d.
func iterations(w worker, d time.Duration) int {
	n := 1000
	for {
		t0 := time.Now()
		sinks[0].v = w(n)
		el := time.Since(t0)
		if el >= d/10 || n >= 1<<30 {
			per := float64(el.Nanoseconds()) / float64(n)
			return max(1000, int(float64(d.Nanoseconds())/max(per, 0.1)))
		}
		n *= 4
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	sort.Float64s(s)
	return s[len(s)/2]
}

// Results runs the call, grace-period and lifecycle benchmarks and
// returns the figures (Run formats them).
func Results(opts Options) ([]CallResult, []SyncResult, []LifecycleResult, error) {
	o := opts.withDefaults()
	// Set every benchmark up first, then interleave the repeats (repeat k of
	// every benchmark and goroutine count before repeat k+1 of any), so that a
	// burst of background load lands on all figures alike instead of on
	// whichever benchmark happened to be running.
	bs := benchmarks()
	type state struct {
		ws []worker
		n  int
		xs [][]float64 // [g-1][repeat]
	}
	st := make([]state, len(bs))
	for i, b := range bs {
		mk, teardown := b.setup()
		defer teardown()
		ws := make([]worker, o.MaxGoroutines)
		for j := range ws {
			ws[j] = mk(j)
		}
		st[i] = state{ws: ws, n: iterations(ws[0], o.Duration), xs: make([][]float64, o.MaxGoroutines)}
	}
	for k := 0; k < o.Repeats; k++ {
		for g := 1; g <= o.MaxGoroutines; g++ {
			for i := range bs {
				per := max(1000, st[i].n/g) // same total work per measurement
				st[i].xs[g-1] = append(st[i].xs[g-1], measure(st[i].ws[:g], per))
			}
		}
	}
	var calls []CallResult
	for i, b := range bs {
		for g := 1; g <= o.MaxGoroutines; g++ {
			calls = append(calls, CallResult{Name: b.name, Goroutines: g, NsPerOp: median(st[i].xs[g-1])})
		}
	}
	var syncs []SyncResult
	for _, readers := range slices.Compact([]int{0, o.MaxGoroutines}) {
		r, err := syncLatency(readers, o.SyncSamples)
		if err != nil {
			return nil, nil, nil, err
		}
		syncs = append(syncs, r)
	}
	life, err := lifecycleLatency(o.SyncSamples)
	if err != nil {
		return nil, nil, nil, err
	}
	return calls, syncs, life, nil
}

// nativeModule exports a symbol and subscribes a hook, so that an unload
// unpublishes both and waits a grace period.
type nativeModule struct{}

func (nativeModule) Init(k *raceless.Kernel) error {
	if err := k.Export("bench_symbol", call); err != nil {
		return err
	}
	return k.Hook("bench_event", func(context.Context, any) error { return nil })
}

func (nativeModule) Exit() (int, error) { return 0, nil }

// lifecycleLatency loads and unloads an idle native module samples times.
func lifecycleLatency(samples int) ([]LifecycleResult, error) {
	h := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer h.Shutdown(context.Background())
	src := raceless.Native(raceless.Info{Name: "bench_native"}, func() raceless.Module { return nativeModule{} })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	load, unload := make([]float64, samples), make([]float64, samples)
	for i := range samples {
		t0 := time.Now()
		if _, err := h.Load(ctx, src, nil); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		t1 := time.Now()
		if err := h.Unload(ctx, "bench_native", raceless.UnloadOptions{}); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		load[i], unload[i] = float64(t1.Sub(t0).Nanoseconds()), float64(time.Since(t1).Nanoseconds())
	}
	var out []LifecycleResult
	for _, r := range []struct {
		name string
		xs   []float64
	}{{"load_native", load}, {"unload_idle_native", unload}} {
		sort.Float64s(r.xs)
		out = append(out, LifecycleResult{Name: r.name, P50Ns: r.xs[len(r.xs)/2], P99Ns: r.xs[min(len(r.xs)-1, len(r.xs)*99/100)]})
	}
	return out, nil
}

// syncLatency measures Synchronize with readers goroutines cycling through
// short read sections (half on reader handles, half anonymous).
func syncLatency(readers, samples int) (SyncResult, error) {
	d := grace.New()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := d.Register()
			defer r.Close()
			acc := 0
			for !stop.Load() {
				for k := 0; k < 64; k++ {
					if i%2 == 0 {
						r.Lock()
						acc = call(acc)
						r.Unlock()
					} else {
						t := d.Lock()
						acc = call(acc)
						d.Unlock(t)
					}
				}
			}
			sinks[i%len(sinks)].v = acc
		}(i)
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lat := make([]float64, samples)
	for i := range lat {
		t0 := time.Now()
		if err := d.Synchronize(ctx); err != nil {
			return SyncResult{}, fmt.Errorf("bench: synchronize with %d readers: %w", readers, err)
		}
		lat[i] = float64(time.Since(t0).Nanoseconds())
	}
	sort.Float64s(lat)
	return SyncResult{
		Name:    "synchronize",
		Readers: readers,
		P50Ns:   lat[len(lat)/2],
		P99Ns:   lat[min(len(lat)-1, len(lat)*99/100)],
	}, nil
}

// Run runs the benchmarks and writes them to w: with jsonOut, a JSON list
// of CallResult and SyncResult objects; otherwise aligned tables.
func Run(w io.Writer, jsonOut bool, opts Options) error {
	calls, syncs, life, err := Results(opts)
	if err != nil {
		return err
	}
	if jsonOut {
		out := make([]any, 0, len(calls)+len(syncs)+len(life))
		for _, c := range calls {
			out = append(out, c)
		}
		for _, s := range syncs {
			out = append(out, s)
		}
		for _, l := range life {
			out = append(out, l)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	return writeTable(w, calls, syncs, life)
}

func writeTable(w io.Writer, calls []CallResult, syncs []SyncResult, life []LifecycleResult) error {
	maxG := 0
	base := map[int]float64{}
	byName := map[string]map[int]float64{}
	for _, c := range calls {
		maxG = max(maxG, c.Goroutines)
		if byName[c.Name] == nil {
			byName[c.Name] = map[int]float64{}
		}
		byName[c.Name][c.Goroutines] = c.NsPerOp
		if c.Name == "unprotected" {
			base[c.Goroutines] = c.NsPerOp
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "protected calls: aggregate ns per call (wall time / all calls), x = ratio to unprotected at the same N; GOMAXPROCS=%d\n", runtime.GOMAXPROCS(0))
	fmt.Fprint(tw, "name\t")
	for g := 1; g <= maxG; g++ {
		fmt.Fprintf(tw, "N=%d\t\t", g)
	}
	fmt.Fprint(tw, "over unprot. N=1\t")
	if maxG > 1 {
		fmt.Fprintf(tw, "scaling N=%d\t", maxG)
	}
	fmt.Fprintln(tw)
	for _, name := range Names {
		m := byName[name]
		if m == nil {
			continue
		}
		fmt.Fprintf(tw, "%s\t", name)
		for g := 1; g <= maxG; g++ {
			fmt.Fprintf(tw, "%.2f ns\t%.2fx\t", m[g], m[g]/base[g])
		}
		fmt.Fprintf(tw, "%+.2f ns\t", m[1]-base[1])
		if maxG > 1 {
			// Aggregate throughput at maxG relative to maxG x single.
			fmt.Fprintf(tw, "%.2f\t", m[1]/(m[maxG]*float64(maxG)))
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var rows [][3]string
	for _, s := range syncs {
		rows = append(rows, [3]string{fmt.Sprint(s.Readers), fmtNs(s.P50Ns), fmtNs(s.P99Ns)})
	}
	if err := latencyTable(w, "grace periods: Synchronize latency", "readers cycling", rows); err != nil {
		return err
	}
	rows = rows[:0]
	for _, l := range life {
		rows = append(rows, [3]string{l.Name, fmtNs(l.P50Ns), fmtNs(l.P99Ns)})
	}
	return latencyTable(w, "lifecycle: an idle native module with one symbol and one hook", "", rows)
}

// latencyTable writes a titled table of (what, p50, p99) rows.
func latencyTable(w io.Writer, title, what string, rows [][3]string) error {
	fmt.Fprintln(w)
	fmt.Fprintln(w, title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%s\tp50\tp99\t\n", what)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", r[0], r[1], r[2])
	}
	return tw.Flush()
}

func fmtNs(ns float64) string {
	return time.Duration(ns).Round(100 * time.Nanosecond).String()
}
