package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/raceless/raceless/internal/control"
	"github.com/raceless/raceless/internal/daemon"
)

func runCall(e *env) error {
	if len(e.args.pos) == 0 {
		return usageErrorf("missing symbol name")
	}
	var args []uint64
	for _, a := range e.args.pos[1:] {
		n, err := strconv.ParseUint(a, 0, 64)
		if err != nil {
			return usageErrorf("bad argument %q (unsigned integers only)", a)
		}
		args = append(args, n)
	}
	var res []uint64
	if err := e.callInto(&control.Request{Op: "call", Name: e.args.pos[0], Args: args}, &res); err != nil {
		return err
	}
	if e.args.has("json") {
		return e.printJSON(res)
	}
	s := make([]string, len(res))
	for i, r := range res {
		s[i] = strconv.FormatUint(r, 10)
	}
	fmt.Fprintln(e.stdout, strings.Join(s, " "))
	return nil
}

func runPing(e *env) error {
	var p daemon.Ping
	if err := e.callInto(&control.Request{Op: "ping"}, &p); err != nil {
		return err
	}
	if e.args.has("json") {
		return e.printJSON(p)
	}
	fmt.Fprintf(e.stdout, "raceless daemon pid %d uid %d protocol %d\n", p.PID, p.UID, p.Protocol)
	return nil
}

// runHook calls every hook subscribed to EVENT (the non-counting
// interface), with the remaining arguments joined as its argument.
func runHook(e *env) error {
	if len(e.args.pos) == 0 {
		return usageErrorf("missing event name")
	}
	_, err := e.call(&control.Request{Op: "hook", Name: e.args.pos[0], Names: e.args.pos[1:]}, nil)
	return err
}
