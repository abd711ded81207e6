package cli

import (
	"os"
	"strconv"
	"time"

	"github.com/raceless/raceless/cmd/raceless/internal/fleet/fleetbench"
	"github.com/raceless/raceless/internal/bench/calls"
	"github.com/raceless/raceless/internal/bench/hotswap"
	"github.com/raceless/raceless/internal/bench/httpbench"
	"github.com/raceless/raceless/internal/bench/scale"
	"github.com/raceless/raceless/internal/bench/wasmcalls"
	"github.com/raceless/raceless/internal/check/torture"
)

var tortureFlags = []flagSpec{
	{long: "duration", kind: requiredValue, arg: "D", help: "how long to run (a Go duration)"},
	{long: "seed", kind: requiredValue, arg: "S", help: "random seed (printed on a violation, to replay it)"},
	{long: "ops", kind: requiredValue, arg: "N", help: "stop after N operations"},
	{long: "wasm", kind: noValue, help: "add a WebAssembly module (built from the source tree) to the mix"},
}

var benchFlags = []flagSpec{
	{long: "quick", kind: noValue, help: "a tiny budget per measurement: checks that the benchmark runs"},
}

// runBench runs a benchmark in this process (no daemon). --quick runs
// each measurement with a tiny budget: the figures mean nothing, the run
// checks that the benchmark works (the tests' smoke run, under -race too).
func runBench(e *env) error {
	if len(e.args.pos) != 1 {
		return usageErrorf("want calls, wasm, swap, scale, http or fleet")
	}
	quick := e.args.has("quick")
	switch e.args.pos[0] {
	case "calls":
		opts := calls.Options{}
		if quick {
			opts = calls.Quick()
		}
		if err := calls.Run(e.stdout, e.args.has("json"), opts); err != nil {
			return e.fail(err, "bench calls: %v", err)
		}
		return nil
	case "wasm":
		opts := wasmcalls.Options{}
		if quick {
			opts = wasmcalls.Quick()
		}
		if err := wasmcalls.Run(e.ctx, e.stdout, e.args.has("json"), opts); err != nil {
			return e.fail(err, "bench wasm: %v", err)
		}
		return nil
	case "swap":
		opts := hotswap.Options{}
		if quick {
			opts = hotswap.Quick()
		}
		if err := hotswap.Run(e.ctx, e.stdout, e.args.has("json"), opts); err != nil {
			return e.fail(err, "bench swap: %v", err)
		}
		return nil
	case "http":
		opts := httpbench.Options{}
		if quick {
			opts = httpbench.Quick()
		}
		if err := httpbench.Run(e.ctx, e.stdout, e.args.has("json"), opts); err != nil {
			return e.fail(err, "bench http: %v", err)
		}
		return nil
	case "fleet":
		opts := fleetbench.Options{}
		if quick {
			opts = fleetbench.Quick()
		}
		if err := fleetbench.Run(e.ctx, e.stdout, e.args.has("json"), opts); err != nil {
			return e.fail(err, "bench fleet: %v", err)
		}
		return nil
	case "scale":
		opts := scale.Options{}
		if quick {
			opts = scale.Quick()
		}
		if err := scale.Run(e.ctx, e.stdout, e.args.has("json"), opts); err != nil {
			return e.fail(err, "bench scale: %v", err)
		}
		return nil
	}
	return usageErrorf("unknown benchmark %q (calls, wasm, swap, scale, http or fleet)", e.args.pos[0])
}

// runTorture runs the torture test in this process; violations exit 1.
func runTorture(e *env) error {
	if len(e.args.pos) > 0 {
		return usageErrorf("unexpected argument %q", e.args.pos[0])
	}
	var opts torture.Options
	if v := e.args.val("duration"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return usageErrorf("bad --duration %q", v)
		}
		opts.Duration = d
	}
	if v := e.args.val("seed"); v != "" {
		s, err := strconv.ParseInt(v, 0, 64)
		if err != nil {
			return usageErrorf("bad --seed %q", v)
		}
		opts.Seed = s
	}
	if v := e.args.val("ops"); v != "" {
		n, err := strconv.ParseInt(v, 0, 64)
		if err != nil || n <= 0 {
			return usageErrorf("bad --ops %q", v)
		}
		opts.Ops = n
	}
	if e.args.has("wasm") {
		// examples/wasm/provider, built from this source tree (as bench
		// wasm does), loaded, unloaded and called alongside the natives.
		cache, err := os.MkdirTemp("", "raceless-torture-")
		if err != nil {
			return e.fail(err, "torture: %v", err)
		}
		defer os.RemoveAll(cache)
		m, closeLoader, err := torture.ProviderModule(e.ctx, cache)
		if err != nil {
			return e.fail(err, "torture: wasm module: %v", err)
		}
		defer closeLoader()
		opts.Wasm = []torture.WasmModule{m}
	}
	rep, err := torture.Run(e.ctx, opts)
	if err != nil {
		return e.fail(err, "torture: %v", err)
	}
	if e.args.has("json") {
		err = rep.WriteJSON(e.stdout)
	} else {
		err = rep.WriteText(e.stdout)
	}
	if err != nil {
		return err
	}
	if !rep.OK() {
		return e.fail(nil, "torture: %d invariant violations (seed %d)", rep.Violations, rep.Seed)
	}
	return nil
}
