// Package scale measures what one operation costs as the host holds more:
// for N loaded native modules (10 symbols each), the latency of loading and
// unloading one more, the cost of a symbol lookup, the heap each module
// takes and the time /proc/modules takes per module; for N sibling mounts
// in one namespace, the latency of a mount and an unmount, the cost of a
// path lookup and the time /proc/mounts takes per mount. Every N is measured in the
// same run, so that the ratio of a figure at the largest N to the same
// figure at the smallest (the targets: at most 2x) does not depend on the
// machine. The CLI's "bench scale" runs Run.
package scale

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/raceless/raceless"
	ramfsmod "github.com/raceless/raceless/modules/ramfs"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/vfs/procfs"
)

// Options size the run. Zero values select the defaults.
type Options struct {
	// Modules are the numbers of loaded modules measured (default 10,
	// 1,000, 10,000 and 100,000).
	Modules []int
	// Mounts are the numbers of sibling mounts measured (default 10,
	// 1,000, 10,000 and 30,000).
	Mounts []int
	// Samples is how many loads and unloads (mounts and unmounts) are
	// timed at each N (default 20,000), in rounds of Round; each latency
	// reported is the median of the quietest round (see Round). They take
	// a fraction of a second at each N: fewer, and a neighbour busy for
	// the whole window makes every round of one N slow.
	Samples int
	// Round is how many operations one round times (default 50). On a
	// shared machine a neighbour's load comes and goes over seconds and
	// doubles every latency while it lasts; the median of the round with
	// the lowest median is the figure of the machine without it, taken
	// the same way at every N, so that ratios compare like with like.
	Round int
	// Lookups is how many lookups each lookup cost is measured over
	// (default 1,000,000), in lookupRounds rounds: the figure is the
	// mean of the quietest round, as for the latencies (see Round).
	Lookups int
}

// Quick returns options for a smoke run: small N, few samples (the figures
// mean nothing). The CLI's "bench scale --quick" uses them.
func Quick() Options {
	return Options{Modules: []int{10, 100}, Mounts: []int{10, 100}, Samples: 10, Round: 5, Lookups: 1000}
}

func (o Options) withDefaults() Options {
	if len(o.Modules) == 0 {
		o.Modules = []int{10, 1000, 10000, 100000}
	}
	if len(o.Mounts) == 0 {
		o.Mounts = []int{10, 1000, 10000, 30000}
	}
	if o.Samples <= 0 {
		o.Samples = 20000
	}
	if o.Round <= 0 {
		o.Round = 50
	}
	o.Round = min(o.Round, o.Samples)
	if o.Lookups <= 0 {
		o.Lookups = 1000000
	}
	return o
}

// Row is one line of the table: kind "modules" fills the module fields,
// kind "mounts" the mount fields, and kind "heap-control" (for the largest
// module N) the load and unload latencies of 10 modules while another host
// holds N.
type Row struct {
	Kind string `json:"kind"`
	N    int    `json:"n"`

	LoadP50Us   float64 `json:"load_p50_us,omitempty"`
	UnloadP50Us float64 `json:"unload_p50_us,omitempty"`
	AcquireNs   float64 `json:"acquire_ns,omitempty"`
	// AcquireSpreadNs is an Acquire of 1,024 names spread over all N
	// modules (AcquireNs: of the same 100 names at every N).
	AcquireSpreadNs float64 `json:"acquire_spread_ns,omitempty"`
	HeapKBPerModule float64 `json:"heap_kb_per_module,omitempty"`

	MountP50Us  float64 `json:"mount_p50_us,omitempty"`
	UmountP50Us float64 `json:"umount_p50_us,omitempty"`
	LookupNs    float64 `json:"lookup_ns,omitempty"`
	// LookupSpreadNs is a lookup of 1,024 mount points spread over all N
	// (LookupNs: of the same 10 at every N).
	LookupSpreadNs float64 `json:"lookup_spread_ns,omitempty"`

	// ListUsPerItem is the time to list everything (/proc/modules for
	// modules, /proc/mounts for mounts) divided by N: constant when the
	// listing is linear.
	ListUsPerItem float64 `json:"list_us_per_item,omitempty"`
}

// SymbolsPerModule is how many symbols each measured module exports.
const SymbolsPerModule = 10

// Run measures and writes the table (with the ratios of the largest N to
// the smallest), or with jsonOut the rows as a JSON list, to w.
func Run(ctx context.Context, w io.Writer, jsonOut bool, opts Options) error {
	rows, err := Measure(ctx, opts)
	if err != nil {
		return err
	}
	if jsonOut {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "modules\tload p50 µs\tunload p50 µs\tacquire ns\tspread ns\theap KB/module\tlist µs/module\t")
	var mods, mounts []Row
	for _, r := range rows {
		if r.Kind == "modules" {
			mods = append(mods, r)
			fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.2f\t%.3f\t\n", r.N, r.LoadP50Us, r.UnloadP50Us, r.AcquireNs, r.AcquireSpreadNs, r.HeapKBPerModule, r.ListUsPerItem)
		}
	}
	fmt.Fprintln(tw, "\t\t\t\t\t\t\t")
	fmt.Fprintln(tw, "mounts\tmount p50 µs\tumount p50 µs\tlookup ns\tspread ns\tlist µs/mount\t\t")
	for _, r := range rows {
		if r.Kind == "mounts" {
			mounts = append(mounts, r)
			fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.3f\t\t\n", r.N, r.MountP50Us, r.UmountP50Us, r.LookupNs, r.LookupSpreadNs, r.ListUsPerItem)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(mods) > 1 {
		a, b := mods[0], mods[len(mods)-1]
		fmt.Fprintf(w, "modules %d / %d: load %.2f×, unload %.2f× (target ≤ 2×); acquire %.2f× (spread %.2f×), list per module %.2f×\n",
			b.N, a.N, b.LoadP50Us/a.LoadP50Us, b.UnloadP50Us/a.UnloadP50Us, b.AcquireNs/a.AcquireNs, b.AcquireSpreadNs/a.AcquireSpreadNs, b.ListUsPerItem/a.ListUsPerItem)
		for _, r := range rows {
			if r.Kind == "heap-control" {
				fmt.Fprintf(w, "heap control: %d modules beside %d in another host: load %.1f µs (%.2f×), unload %.1f µs (%.2f×): the heap's share of the growth\n",
					a.N, r.N, r.LoadP50Us, r.LoadP50Us/a.LoadP50Us, r.UnloadP50Us, r.UnloadP50Us/a.UnloadP50Us)
			}
		}
	}
	if len(mounts) > 1 {
		a, b := mounts[0], mounts[len(mounts)-1]
		fmt.Fprintf(w, "mounts %d / %d: mount %.2f×, umount %.2f×, lookup %.2f× (spread %.2f×); list per mount %.2f×\n",
			b.N, a.N, b.MountP50Us/a.MountP50Us, b.UmountP50Us/a.UmountP50Us, b.LookupNs/a.LookupNs, b.LookupSpreadNs/a.LookupSpreadNs, b.ListUsPerItem/a.ListUsPerItem)
	}
	return nil
}

// Measure runs the measurements and returns the rows, modules first.
func Measure(ctx context.Context, opts Options) ([]Row, error) {
	opts = opts.withDefaults()
	var rows []Row
	for _, n := range opts.Modules {
		r, err := measureModules(ctx, n, opts)
		if err != nil {
			return nil, fmt.Errorf("%d modules: %w", n, err)
		}
		rows = append(rows, r)
	}
	if len(opts.Modules) > 1 {
		// The smallest N again, last: the ratios' denominator then has
		// had as many chances at a quiet machine as any other row
		// (each figure is the lower of its two runs).
		first := 0
		for i, r := range rows {
			if r.N < rows[first].N {
				first = i
			}
		}
		r, err := measureModules(ctx, rows[first].N, opts)
		if err != nil {
			return nil, fmt.Errorf("%d modules: %w", rows[first].N, err)
		}
		f := &rows[first]
		f.LoadP50Us, f.UnloadP50Us = min(f.LoadP50Us, r.LoadP50Us), min(f.UnloadP50Us, r.UnloadP50Us)
		f.AcquireNs, f.AcquireSpreadNs = min(f.AcquireNs, r.AcquireNs), min(f.AcquireSpreadNs, r.AcquireSpreadNs)
		f.ListUsPerItem = min(f.ListUsPerItem, r.ListUsPerItem)
	}
	if len(opts.Modules) > 1 {
		n := slices.Max(opts.Modules)
		r, err := measureHeapControl(ctx, n, opts)
		if err != nil {
			return nil, fmt.Errorf("heap control of %d modules: %w", n, err)
		}
		rows = append(rows, r)
	}
	for _, n := range opts.Mounts {
		r, err := measureMounts(ctx, n, opts)
		if err != nil {
			return nil, fmt.Errorf("%d mounts: %w", n, err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// symbols is an idle native module exporting SymbolsPerModule Funcs.
type symbols struct{ name string }

func (s symbols) Init(k *raceless.Kernel) error {
	for i := range SymbolsPerModule {
		if err := k.Export(symbolName(s.name, i), raceless.Func(func(_ context.Context, stack []uint64) ([]uint64, error) {
			return stack, nil
		})); err != nil {
			return err
		}
	}
	return nil
}

func (symbols) Exit() (int, error) { return 0, nil }

func symbolName(module string, i int) string { return fmt.Sprintf("%s_s%d", module, i) }

func moduleSource(i int) raceless.Source {
	name := fmt.Sprintf("m%d", i)
	return raceless.Native(raceless.Info{Name: name, License: "MIT"}, func() raceless.Module { return symbols{name} })
}

func quietHost() *raceless.Host {
	return raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func measureModules(ctx context.Context, n int, opts Options) (Row, error) {
	h := quietHost()
	defer h.Shutdown(context.WithoutCancel(ctx)) //nolint:errcheck // the measurements are taken
	// The sources exist before the heap is read: a module's cost is what
	// loading it adds.
	srcs := make([]raceless.Source, n+opts.Samples)
	for i := range srcs {
		srcs[i] = moduleSource(i)
	}
	before := heapAlloc()
	for _, src := range srcs[:n] {
		if _, err := h.Load(ctx, src, nil); err != nil {
			return Row{}, err
		}
	}
	row := Row{Kind: "modules", N: n, HeapKBPerModule: float64(int64(heapAlloc())-int64(before)) / float64(n) / 1024}

	var err error
	if row.LoadP50Us, row.UnloadP50Us, err = loadUnload(ctx, h, srcs[n:], opts.Round); err != nil {
		return Row{}, err
	}

	// Lookups, each Acquire and Release: of the same working set at every
	// N (the 10 symbols of 10 modules spread over the host: what a lookup
	// costs, in the cache), and of 1,024 names spread over every module
	// (at large N, a lookup missing the cache by design).
	acquire := func(names []string) (float64, error) {
		return quietestMean(opts.Lookups, func(i int) error {
			b, err := h.Acquire(raceless.KindSymbol, names[i%len(names)])
			if err != nil {
				return err
			}
			b.Release()
			return nil
		})
	}
	var hot, spread []string
	for j := range 10 {
		for s := range SymbolsPerModule {
			hot = append(hot, symbolName(fmt.Sprintf("m%d", j*n/10), s))
		}
	}
	for i := range 1024 {
		spread = append(spread, symbolName(fmt.Sprintf("m%d", (i*7919)%n), i%SymbolsPerModule))
	}
	// The loads and unloads left garbage: collect it now, or the
	// collector runs during the lookups at one N and not at another.
	runtime.GC()
	if row.AcquireNs, err = acquire(hot); err != nil {
		return Row{}, err
	}
	if row.AcquireSpreadNs, err = acquire(spread); err != nil {
		return Row{}, err
	}
	t0 := time.Now()
	if text := procfs.FormatModules(h.Modules()); len(text) == 0 {
		return Row{}, fmt.Errorf("/proc/modules is empty")
	}
	row.ListUsPerItem = float64(time.Since(t0).Nanoseconds()) / 1e3 / float64(n)
	return row, nil
}

// loadUnload times, round after round of `round` sources, the loading of
// each source one at a time, then their unloading idle, and returns the
// median latency of each, in µs, of the round where it was lowest (see
// Options.Round).
func loadUnload(ctx context.Context, h *raceless.Host, srcs []raceless.Source, round int) (load, unload float64, err error) {
	var loadRounds, unloadRounds []float64
	for len(srcs) > 0 {
		batch := srcs[:min(round, len(srcs))]
		srcs = srcs[len(batch):]
		loads := make([]float64, 0, len(batch))
		for _, src := range batch {
			t0 := time.Now()
			if _, err := h.Load(ctx, src, nil); err != nil {
				return 0, 0, err
			}
			loads = append(loads, float64(time.Since(t0).Nanoseconds())/1e3)
		}
		unloads := make([]float64, 0, len(batch))
		for _, src := range batch {
			t0 := time.Now()
			if err := h.Unload(ctx, src.Info().Name, raceless.UnloadOptions{}); err != nil {
				return 0, 0, err
			}
			unloads = append(unloads, float64(time.Since(t0).Nanoseconds())/1e3)
		}
		loadRounds = append(loadRounds, median(loads))
		unloadRounds = append(unloadRounds, median(unloads))
	}
	return slices.Min(loadRounds), slices.Min(unloadRounds), nil
}

// measureHeapControl measures loads and unloads in a host of 10 modules
// while another host holds n: the same heap as the "modules" row of n, a
// registry as small as the row of 10. What of the growth with n this row
// shows is the Go heap's (allocation in a large heap, cold caches), not
// the host's data structures.
func measureHeapControl(ctx context.Context, n int, opts Options) (Row, error) {
	ballast := quietHost()
	defer ballast.Shutdown(context.WithoutCancel(ctx)) //nolint:errcheck // the measurements are taken
	for i := range n {
		if _, err := ballast.Load(ctx, moduleSource(10+opts.Samples+i), nil); err != nil {
			return Row{}, err
		}
	}
	h := quietHost()
	defer h.Shutdown(context.WithoutCancel(ctx)) //nolint:errcheck // the measurements are taken
	srcs := make([]raceless.Source, 10+opts.Samples)
	for i := range srcs {
		srcs[i] = moduleSource(i)
	}
	for _, src := range srcs[:10] {
		if _, err := h.Load(ctx, src, nil); err != nil {
			return Row{}, err
		}
	}
	heapAlloc() // collect, as measureModules does before its samples
	row := Row{Kind: "heap-control", N: n}
	var err error
	if row.LoadP50Us, row.UnloadP50Us, err = loadUnload(ctx, h, srcs[10:], opts.Round); err != nil {
		return Row{}, err
	}
	return row, nil
}

func measureMounts(ctx context.Context, n int, opts Options) (Row, error) {
	h := quietHost()
	defer h.Shutdown(context.WithoutCancel(ctx)) //nolint:errcheck // the measurements are taken
	if _, err := h.Load(ctx, ramfsmod.Source(), nil); err != nil {
		return Row{}, err
	}
	ns := vfs.NewNamespace(h)
	if err := ns.Mount(ctx, "rootfs", "/", "ramfs", ""); err != nil {
		return Row{}, err
	}
	dir := func(i int) string { return fmt.Sprintf("/d%d", i) }
	for i := range n + opts.Samples {
		if err := ns.Mkdir(dir(i), 0o755); err != nil {
			return Row{}, err
		}
	}
	for i := range n {
		if err := ns.Mount(ctx, "none", dir(i), "ramfs", ""); err != nil {
			return Row{}, err
		}
	}
	row := Row{Kind: "mounts", N: n}
	// Setting up N mounts left garbage: collect it before timing, as
	// measureModules does (heapAlloc), so that no N is timed while the
	// collector works through its predecessor's.
	runtime.GC()
	var mountRounds, umountRounds []float64
	for first := n; first < n+opts.Samples; first += opts.Round {
		last := min(first+opts.Round, n+opts.Samples)
		mounts := make([]float64, 0, opts.Round)
		for i := first; i < last; i++ {
			t0 := time.Now()
			if err := ns.Mount(ctx, "none", dir(i), "ramfs", ""); err != nil {
				return Row{}, err
			}
			mounts = append(mounts, float64(time.Since(t0).Nanoseconds())/1e3)
		}
		umounts := make([]float64, 0, opts.Round)
		for i := first; i < last; i++ {
			t0 := time.Now()
			if err := ns.Unmount(dir(i), 0); err != nil {
				return Row{}, err
			}
			umounts = append(umounts, float64(time.Since(t0).Nanoseconds())/1e3)
		}
		mountRounds = append(mountRounds, median(mounts))
		umountRounds = append(umountRounds, median(umounts))
	}
	row.MountP50Us, row.UmountP50Us = slices.Min(mountRounds), slices.Min(umountRounds)
	// Path lookups (Stat) of the same working set at every N (10 mount
	// points spread over the N) and of 1,024 spread over all of them, as
	// for the modules' acquire.
	lookup := func(paths []string) (float64, error) {
		return quietestMean(opts.Lookups, func(i int) error {
			_, err := ns.Stat(paths[i%len(paths)])
			return err
		})
	}
	var hot, spread []string
	for j := range 10 {
		hot = append(hot, dir(j*n/10))
	}
	for i := range 1024 {
		spread = append(spread, dir((i*7919)%n))
	}
	var err error
	runtime.GC() // as for the modules' lookups
	if row.LookupNs, err = lookup(hot); err != nil {
		return Row{}, err
	}
	if row.LookupSpreadNs, err = lookup(spread); err != nil {
		return Row{}, err
	}
	t0 := time.Now()
	if text := ns.FormatMounts(); len(text) == 0 {
		return Row{}, fmt.Errorf("/proc/mounts is empty")
	}
	row.ListUsPerItem = float64(time.Since(t0).Nanoseconds()) / 1e3 / float64(n)
	// Unmount everything, last first, so that the host shuts down clean.
	for i := n - 1; i >= 0; i-- {
		if err := ns.Unmount(dir(i), vfs.MNT_DETACH); err != nil {
			return Row{}, err
		}
	}
	if err := ns.Unmount("/", vfs.MNT_DETACH); err != nil {
		return Row{}, err
	}
	return row, nil
}

// lookupRounds is how many rounds Options.Lookups are cut into.
const lookupRounds = 10

// quietestMean runs op(0) to op(n-1) in lookupRounds rounds and returns
// the mean time of one op, in ns, in the round where it was lowest.
func quietestMean(n int, op func(i int) error) (float64, error) {
	per := max(n/lookupRounds, 1)
	best := 0.0
	for r := range lookupRounds {
		t0 := time.Now()
		for i := r * per; i < (r+1)*per; i++ {
			if err := op(i); err != nil {
				return 0, err
			}
		}
		if mean := float64(time.Since(t0).Nanoseconds()) / float64(per); r == 0 || mean < best {
			best = mean
		}
	}
	return best, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
