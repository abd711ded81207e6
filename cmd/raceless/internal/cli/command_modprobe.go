package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
)

var modprobeFlags = []flagSpec{
	{short: "r", long: "remove", help: "remove the module, then the modules it needed that nothing uses any more"},
	{short: "n", long: "dry-run", help: "print what would be done, do nothing"},
	{short: "v", long: "verbose", help: "print what is done"},
	{long: "first-time", help: "fail if the module is already loaded"},
	{short: "q", long: "quiet", help: "print no error messages (the exit status still says what failed), as kmod's"},
}

func runModprobe(e *env) error {
	pos := e.args.pos
	if len(pos) == 0 {
		return usageErrorf("missing module name")
	}
	var res daemon.ProbeResult
	if e.args.has("remove") {
		for _, name := range pos {
			err := e.callInto(&control.Request{Op: "remove", Name: name, DryRun: e.args.has("dry-run")}, &res)
			if err != nil {
				return e.modprobeError(name, err, true)
			}
			if err := e.printProbe(res); err != nil {
				return err
			}
		}
		return nil
	}
	p, err := params(pos[1:])
	if err != nil {
		return err
	}
	name := pos[0]
	err = e.callInto(&control.Request{Op: "probe", Name: name, Params: p, FirstTime: e.args.has("first-time"), DryRun: e.args.has("dry-run")}, &res)
	if err != nil {
		return e.modprobeError(name, err, false)
	}
	return e.printProbe(res)
}

func (e *env) printProbe(res daemon.ProbeResult) error {
	if e.args.has("json") {
		return e.printJSON(res)
	}
	if e.args.has("verbose") || e.args.has("dry-run") {
		for _, a := range res.Actions {
			fmt.Fprintln(e.stdout, a)
		}
	}
	return nil
}

func (e *env) modprobeError(name string, err error, remove bool) error {
	if e.args.has("quiet") {
		// kmod's -q lowers its log level below every error message:
		// nothing is printed, the exit status still says what failed.
		return &failure{err: err}
	}
	if errors.Is(err, control.ErrNoDaemon) {
		return e.generic(err)
	}
	var we *control.Error
	errors.As(err, &we)
	msg := err.Error()
	switch ExitCode(err) {
	case ExitNotFound:
		switch {
		case name == "":
			return e.fatal(err, "empty module name")
		case remove && we != nil && strings.HasSuffix(we.Message, "is not in kernel."):
			return e.fatal(err, "%s", we.Message)
		case strings.Contains(msg, "not found in directory "):
			return e.fatal(err, "Module %s not found in directory %s", name, msg[strings.LastIndex(msg, "not found in directory ")+len("not found in directory "):strings.LastIndex(msg, ": ")])
		case strings.Contains(msg, "not found among the built-in modules"):
			return e.fatal(err, "Module %s not found.", name)
		}
		return e.fatal(err, "%s", msg)
	case ExitBusy:
		if remove {
			return e.fatal(err, "Module %s is in use.", name)
		}
	case ExitExists:
		if we != nil && strings.HasPrefix(we.Message, "could not insert") {
			return e.fail(err, "%s", we.Message)
		}
	case ExitKeyRejected: // kmod: could not insert 'm': Key was rejected by service
		return e.fail(err, "could not insert '%s': %s (%s)", name, kmodReason(err), msg)
	}
	if !remove && we != nil && we.Module != "" {
		return e.fail(err, "could not insert '%s': %s", we.Module, msg)
	}
	return e.fatal(err, "%s", msg)
}
