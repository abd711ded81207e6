package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/control"
)

var rmmodFlags = []flagSpec{
	{short: "f", long: "force", help: "unload even while in use (taints the host)"},
	{short: "w", long: "wait", kind: optionalValue, arg: "DURATION", help: "wait for the references to drain (at most DURATION)"},
	{short: "a", long: "all", help: "run one autoclean sweep"},
	{short: "v", long: "verbose", help: "print the wait's progress as lines, even when stderr is not a terminal"},
	{short: "s", long: "syslog", help: "accepted as kmod's rmmod accepts it; does nothing"},
}

func runRmmod(e *env) error {
	if e.args.has("all") {
		if len(e.args.pos) > 0 {
			return usageErrorf("-a takes no module names")
		}
		var removed []string
		if err := e.callInto(&control.Request{Op: "autoclean"}, &removed); err != nil {
			return err
		}
		if e.args.has("json") {
			return e.printJSON(removed)
		}
		if e.args.has("verbose") {
			for _, r := range removed {
				fmt.Fprintln(e.stdout, "rmmod "+r)
			}
		}
		return nil
	}
	if len(e.args.pos) == 0 {
		return usageErrorf("missing module name")
	}
	req := control.Request{Op: "unload", Force: e.args.has("force"), Wait: e.args.has("wait")}
	if req.Wait {
		req.Timeout = e.args.val("wait")
		req.Progress = e.isTerminal || e.args.has("verbose")
	}
	var firstErr error
	for _, name := range e.args.pos {
		name = strings.TrimSuffix(filepath.Base(name), ".wasm") // rmmod accepts a path, as kmod does
		req.Name = name
		shown := false
		last := "" // the last progress line printed: the daemon reports ten times a second, changed or not
		_, err := e.call(&req, func(raw json.RawMessage) {
			var p raceless.Progress
			if json.Unmarshal(raw, &p) != nil {
				return
			}
			line := fmt.Sprintf("rmmod: waiting for %s: %d references", p.Module, p.Refs)
			if len(p.Holders) > 0 {
				line += ", used by: " + joinComma(p.Holders)
			}
			if line == last {
				return
			}
			last = line
			if e.isTerminal {
				fmt.Fprintf(e.stderr, "\r\033[K%s", line)
				shown = true
			} else {
				fmt.Fprintln(e.stderr, line)
			}
		})
		if shown {
			fmt.Fprint(e.stderr, "\r\033[K")
		}
		if err != nil {
			err = e.rmmodError(name, err)
			if firstErr != nil {
				fmt.Fprintln(e.stderr, firstErr.Error())
			}
			firstErr = err
		}
	}
	return firstErr
}

func (e *env) rmmodError(name string, err error) error {
	var we *control.Error
	errors.As(err, &we)
	switch ExitCode(err) {
	case ExitNotFound:
		return e.fail(err, "Module %s is not currently loaded", name)
	case ExitBusy:
		switch {
		case we != nil && we.Reason == "timed out":
			return e.fail(err, "Module %s is in use: timed out after %s with %d references held", name, e.args.val("wait"), we.Refs)
		case we != nil && len(we.Holders) > 0:
			return e.fail(err, "Module %s is in use by: %s", name, joinComma(we.Holders))
		case we != nil && we.Reason != "" && !strings.HasPrefix(we.Reason, "in use"):
			return e.fail(err, "could not remove module %s: %s", name, we.Message)
		case we != nil && (len(we.Routes) > 0 || len(we.Mounts) > 0):
			var uses []string
			if len(we.Routes) > 0 {
				uses = append(uses, "requests in flight on routes: "+strings.Join(we.Routes, ", "))
			}
			if len(we.Mounts) > 0 {
				uses = append(uses, "mounted at "+strings.Join(we.Mounts, ", "))
			}
			return e.fail(err, "Module %s is in use: %s", name, strings.Join(uses, "; "))
		}
		return e.fail(err, "Module %s is in use", name)
	}
	return e.generic(err)
}
