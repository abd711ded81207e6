package cli

import (
	"errors"
	"os"
	"path/filepath"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
)

// kmodReason is the text kmod's insmod prints for an error's class
// (strerror, or "Invalid module format", "Invalid parameters"); "" when
// the class has none.
func kmodReason(err error) string { return control.ClassOf(err).Text }

func params(args []string) (map[string]string, error) {
	p, err := raceless.ParseParams(args)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	return p, nil
}

func runInsmod(e *env) error { return loadFile(e, "load", "insert") }

var replaceFlags = []flagSpec{
	{short: "f", long: "force", help: "let the new version drop symbols the old one exports that no module imports"},
}

// runReplace hot-swaps the live module of the same name for FILE.
func runReplace(e *env) error { return loadFile(e, "replace", "replace") }

// loadFile sends FILE and its parameters to the daemon as op.
func loadFile(e *env, op, verb string) error {
	pos := e.args.pos
	if len(pos) == 0 {
		return usageErrorf("missing filename")
	}
	file := pos[0]
	p, err := params(pos[1:])
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return e.fail(err, "could not load module %s: %v", file, err)
	}
	if _, err := os.Stat(abs); err != nil {
		return e.fail(err, "could not load module %s: No such file or directory", file)
	}
	var st daemon.ModuleStatus
	req := &control.Request{Op: op, Path: abs, Params: p, Force: e.args.has("force")}
	if err := e.callInto(req, &st); err != nil {
		if errors.Is(err, control.ErrNoDaemon) {
			return err
		}
		if r := kmodReason(err); r != "" {
			return e.fail(err, "could not %s module %s: %s (%v)", verb, file, r, err)
		}
		return e.fail(err, "could not %s module %s: %v", verb, file, err)
	}
	if e.args.has("json") {
		return e.printJSON(st)
	}
	return nil
}
