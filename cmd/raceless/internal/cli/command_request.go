package cli

import (
	"fmt"
	"strconv"

	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
)

var requestFlags = []flagSpec{{short: "t", long: "threads", kind: requiredValue, arg: "N", help: "goroutines per name (default 1)"}}

func runRequest(e *env) error {
	if len(e.args.pos) == 0 {
		return usageErrorf("missing module name")
	}
	threads := 1
	if v := e.args.val("threads"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return usageErrorf("bad --threads %q (1 to 1000)", v)
		}
		threads = n
	}
	var res []daemon.RequestResult
	if err := e.callInto(&control.Request{Op: "request", Names: e.args.pos, Threads: threads}, &res); err != nil {
		return err
	}
	if e.args.has("json") {
		return e.printJSON(res)
	}
	fmt.Fprintf(e.stdout, "%d requests succeeded\n", len(res))
	return nil
}
