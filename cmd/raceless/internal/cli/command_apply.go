package cli

import (
	"fmt"
	"path/filepath"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/desired"
)

// runApply is `raceless apply [FILE]`: the daemon reconciles the desired
// state at FILE (read by the daemon, as insmod's file is), or without FILE
// its --config read again; prints the report, one line per item. Exit 0
// when the host converged, ExitBusy when items were left busy (the daemon
// retries them) and no item failed, ExitFailure when an item failed.
func runApply(e *env) error { return applyOrDiff(e, "apply") }

// runDiff is `raceless diff [FILE]`: what apply would do, changing
// nothing; prints the items that would change (none: nothing).
func runDiff(e *env) error { return applyOrDiff(e, "diff") }

func applyOrDiff(e *env, op string) error {
	if len(e.args.pos) > 1 {
		return usageErrorf("unexpected argument %q", e.args.pos[1])
	}
	req := &control.Request{Op: op}
	if len(e.args.pos) == 1 {
		abs, err := filepath.Abs(e.args.pos[0])
		if err != nil {
			return e.fail(err, "%s: %v", e.args.pos[0], err)
		}
		req.Path = abs
	}
	var rep desired.Report
	if err := e.callInto(req, &rep); err != nil {
		return err
	}
	if e.args.has("json") {
		if err := e.printJSON(rep); err != nil {
			return err
		}
	} else {
		for _, it := range rep.Items {
			if op == "diff" && it.Action == "keep" && it.Err == "" {
				continue
			}
			fmt.Fprintln(e.stdout, formatItem(it))
		}
	}
	if op == "diff" {
		return nil
	}
	failed, busy := 0, 0
	for _, it := range rep.Items {
		switch {
		case it.Retry:
			busy++
		case it.Err != "":
			failed++
		}
	}
	switch {
	case failed > 0:
		return e.fail(fmt.Errorf("%d items failed", failed), "not converged: %d of %d items failed, %d left busy", failed, len(rep.Items), busy)
	case busy > 0:
		return e.fail(raceless.ErrBusy, "not converged: %d of %d items left busy: the daemon retries them", busy, len(rep.Items))
	}
	return nil
}

// formatItem is one report line: "KIND NAME: ACTION", then ": ERROR" and
// " (busy: retried)" for an item left as it was.
func formatItem(it desired.Item) string {
	s := fmt.Sprintf("%s %s: %s", it.Kind, it.Name, it.Action)
	if it.Err != "" {
		s += ": " + it.Err
	}
	if it.Retry {
		s += " (busy: left as it is, retried)"
	}
	return s
}
