package cli

import (
	"github.com/raceless/raceless/internal/control"
)

var tortureFlags = []flagSpec{
	{long: "duration", kind: requiredValue},
	{long: "seed", kind: requiredValue},
}

func runBench(e *env) error {
	if len(e.args.pos) != 1 {
		return usageErrorf("want calls or wasm")
	}
	switch e.args.pos[0] {
	case "calls":
		return e.fail(control.ErrUnsupported, "bench calls: not built in this version")
	case "wasm":
		return e.fail(control.ErrUnsupported, "bench wasm: not built in this version")
	}
	return usageErrorf("unknown benchmark %q (calls or wasm)", e.args.pos[0])
}

func runTorture(e *env) error {
	return e.fail(control.ErrUnsupported, "torture: not built in this version")
}
