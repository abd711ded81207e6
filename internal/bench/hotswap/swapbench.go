// Package hotswap measures a hot swap (Host.Replace) under load: calls
// through the counting interface keep running on every core while a native
// module is replaced by a new version over and over. It reports failed calls
// (the target is zero) and call latency percentiles in the steady state and
// during swaps (the target: p99 during swaps at most 2x steady).
//
// Latencies are sampled per call with time.Now, which costs about as much as
// the call itself; the ratio between the two phases is what matters.
package hotswap

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raceless/raceless"
)

// Options size the run.
type Options struct {
	Goroutines int           // callers (default GOMAXPROCS)
	Phase      time.Duration // length of each phase (default 1s)
	Swaps      int           // swaps in the swap phase, spread over it (default 200)
}

// Quick returns options for a smoke run: two callers, short phases, a few
// swaps (the latencies mean little; failed calls must still be 0). The
// CLI's "bench swap --quick" uses them.
func Quick() Options { return Options{Goroutines: 2, Phase: 100 * time.Millisecond, Swaps: 10} }

// Result is one run's measurements.
type Result struct {
	Goroutines  int     `json:"goroutines"`
	Swaps       int     `json:"swaps"`
	Calls       int64   `json:"calls"`
	Failed      int64   `json:"failed_calls"`
	SteadyP50   float64 `json:"steady_p50_ns"`
	SteadyP99   float64 `json:"steady_p99_ns"`
	SwapP50     float64 `json:"swap_p50_ns"`
	SwapP99     float64 `json:"swap_p99_ns"`
	P99Ratio    float64 `json:"p99_ratio"`
	SwapMeanDur float64 `json:"swap_mean_us"`
}

type versionModule struct{ v int }

func (m *versionModule) Init(k *raceless.Kernel) error {
	return k.Export("version", func() int { return m.v })
}
func (m *versionModule) Exit() (int, error) { return 0, nil }

func source(v int) raceless.Source {
	return raceless.Native(raceless.Info{Name: "swapped", Version: fmt.Sprint(v)},
		func() raceless.Module { return &versionModule{v: v} })
}

// Measure runs the steady phase, then the swap phase.
func Measure(ctx context.Context, opts Options) (Result, error) {
	if opts.Goroutines <= 0 {
		opts.Goroutines = runtime.GOMAXPROCS(0)
	}
	if opts.Phase <= 0 {
		opts.Phase = time.Second
	}
	if opts.Swaps <= 0 {
		opts.Swaps = 200
	}
	h := raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if _, err := h.Load(ctx, source(0), nil); err != nil {
		return Result{}, err
	}
	defer h.Shutdown(ctx) //nolint:errcheck // best effort at the end of a benchmark

	var failed, calls atomic.Int64
	run := func(phase func()) []time.Duration {
		stop := make(chan struct{})
		lat := make([][]time.Duration, opts.Goroutines)
		var wg sync.WaitGroup
		for g := range opts.Goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				samples := make([]time.Duration, 0, 1<<16)
				for {
					select {
					case <-stop:
						lat[g] = samples
						return
					default:
					}
					t0 := time.Now()
					b, err := h.Acquire(raceless.KindSymbol, "version")
					if err != nil {
						failed.Add(1)
					} else {
						_ = b.Value().(func() int)()
						b.Release()
					}
					samples = append(samples, time.Since(t0))
					calls.Add(1)
				}
			}()
		}
		phase()
		close(stop)
		wg.Wait()
		var all []time.Duration
		for _, l := range lat {
			all = append(all, l...)
		}
		slices.Sort(all)
		return all
	}
	steady := run(func() { time.Sleep(opts.Phase) })
	var swapErr error
	var swapTotal time.Duration
	swapping := run(func() {
		gap := opts.Phase / time.Duration(opts.Swaps)
		for v := 1; v <= opts.Swaps; v++ {
			t0 := time.Now()
			if _, err := h.Replace(ctx, "swapped", source(v), nil, raceless.ReplaceOptions{}); err != nil {
				swapErr = err
				return
			}
			swapTotal += time.Since(t0)
			time.Sleep(gap)
		}
	})
	if swapErr != nil {
		return Result{}, swapErr
	}
	r := Result{
		Goroutines: opts.Goroutines, Swaps: opts.Swaps, Calls: calls.Load(), Failed: failed.Load(),
		SteadyP50: pct(steady, 50), SteadyP99: pct(steady, 99),
		SwapP50: pct(swapping, 50), SwapP99: pct(swapping, 99),
		SwapMeanDur: float64(swapTotal.Microseconds()) / float64(opts.Swaps),
	}
	if r.SteadyP99 > 0 {
		r.P99Ratio = r.SwapP99 / r.SteadyP99
	}
	return r, nil
}

func pct(sorted []time.Duration, p int) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[(len(sorted)-1)*p/100].Nanoseconds())
}

// Run measures and prints a table, or JSON (a list of {"name", "value",
// "unit"} objects, like the wasm benchmark).
func Run(ctx context.Context, w io.Writer, jsonOut bool, opts Options) error {
	r, err := Measure(ctx, opts)
	if err != nil {
		return err
	}
	if jsonOut {
		type row struct {
			Name  string  `json:"name"`
			Value float64 `json:"value"`
			Unit  string  `json:"unit"`
		}
		rows := []row{
			{"calls", float64(r.Calls), "calls"},
			{"failed_calls", float64(r.Failed), "calls"},
			{"steady_p50", r.SteadyP50, "ns"},
			{"steady_p99", r.SteadyP99, "ns"},
			{"swap_p50", r.SwapP50, "ns"},
			{"swap_p99", r.SwapP99, "ns"},
			{"p99_ratio", r.P99Ratio, "x"},
			{"swap_duration_mean", r.SwapMeanDur, "us"},
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	fmt.Fprintf(w, "hot swap under load: %d goroutines calling, %d swaps (Host.Replace), GOMAXPROCS=%d\n", r.Goroutines, r.Swaps, runtime.GOMAXPROCS(0))
	fmt.Fprintf(w, "  %-22s %12s %12s\n", "", "p50", "p99")
	fmt.Fprintf(w, "  %-22s %10.0fns %10.0fns\n", "steady state", r.SteadyP50, r.SteadyP99)
	fmt.Fprintf(w, "  %-22s %10.0fns %10.0fns\n", "during swaps", r.SwapP50, r.SwapP99)
	fmt.Fprintf(w, "  p99 ratio %.2fx (target <= 2x); %d calls, %d failed (target 0); mean swap %.0f µs\n",
		r.P99Ratio, r.Calls, r.Failed, r.SwapMeanDur)
	return nil
}
