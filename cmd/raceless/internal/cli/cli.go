// Package cli is the raceless command line: one binary whose subcommands
// are also reachable through links named after them (argv[0] = insmod,
// rmmod, lsmod, modprobe, modinfo, depmod, mount, umount), as kmod's tools
// are links to kmod. docs/cli.md documents every command, flag, exit status
// and the control protocol.
//
// Every failure prints exactly one line to stderr, "<cmd>: ERROR: ..." (or
// kmod's "modprobe: FATAL: ..."), and exits with a status from the table
// below, chosen with errors.Is from the core's sentinels.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/control"
)

// Exit statuses.
const (
	ExitOK          = 0 // success
	ExitFailure     = 1 // any other failure
	ExitUsage       = 2 // bad command line
	ExitNotFound    = 3 // no such module, file, alias, symbol or mount (ENOENT)
	ExitExists      = 4 // already loaded / already exists (EEXIST)
	ExitBusy        = 5 // in use, or a wait timed out (EBUSY)
	ExitPermission  = 6 // refused: not the daemon's owner (EPERM)
	ExitInvalid     = 7 // invalid parameters, module or index (EINVAL)
	ExitNoDaemon    = 8 // the daemon is not running (cannot connect)
	ExitUnsupported = 9 // not built in this version
)

// ExitCode maps an error to an exit status.
func ExitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue):
		return ExitUsage
	case errors.Is(err, raceless.ErrPermission), errors.Is(err, os.ErrPermission):
		return ExitPermission
	case errors.Is(err, control.ErrNoDaemon):
		return ExitNoDaemon
	case errors.Is(err, control.ErrUnsupported):
		return ExitUnsupported
	case errors.Is(err, raceless.ErrBusy):
		return ExitBusy
	case errors.Is(err, raceless.ErrNotFound), errors.Is(err, os.ErrNotExist):
		return ExitNotFound
	case errors.Is(err, raceless.ErrExists):
		return ExitExists
	case errors.Is(err, raceless.ErrInvalid):
		return ExitInvalid
	}
	var we *control.Error
	if errors.As(err, &we) && we.Code == control.CodeUsage {
		return ExitUsage
	}
	return ExitFailure
}

// env is what a command runs with.
type env struct {
	ctx    context.Context
	name   string // the command's name, for messages ("rmmod")
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	// isTerminal reports whether stderr is a terminal (rmmod --wait's
	// progress display).
	isTerminal bool
	args       *parsed
}

// failure is an error whose message is already the full stderr line.
type failure struct {
	line string
	err  error
}

func (f *failure) Error() string { return f.line }
func (f *failure) Unwrap() error { return f.err }

// fail returns an error printed as "<cmd>: ERROR: <msg>", exiting with the
// status of err.
func (e *env) fail(err error, format string, a ...any) error {
	return &failure{line: e.name + ": ERROR: " + fmt.Sprintf(format, a...), err: err}
}

// fatal is fail with kmod modprobe's "FATAL".
func (e *env) fatal(err error, format string, a ...any) error {
	return &failure{line: e.name + ": FATAL: " + fmt.Sprintf(format, a...), err: err}
}

func (e *env) socket() string {
	if s := e.args.val("socket"); s != "" {
		return s
	}
	return control.DefaultSocketPath()
}

// call sends a request to the daemon.
func (e *env) call(req *control.Request, onProgress func(json.RawMessage)) (json.RawMessage, error) {
	return control.Call(e.ctx, e.socket(), req, onProgress)
}

// callInto sends a request and decodes the answer into out.
func (e *env) callInto(req *control.Request, out any) error {
	data, err := e.call(req, nil)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// generic turns an error no command-specific message covers into one line.
func (e *env) generic(err error) error {
	var f *failure
	if errors.As(err, &f) {
		return err
	}
	if errors.Is(err, control.ErrNoDaemon) && !errors.Is(err, os.ErrPermission) {
		return e.fail(err, "%s (is `raceless serve` running? see --socket, RACELESS_SOCKET)", err)
	}
	return e.fail(err, "%s", err)
}

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

type command struct {
	run   func(e *env) error
	flags []flagSpec
	usage string
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"serve":    {runServe, nil, "serve [--socket PATH] [--modules DIR] [--fuse DIR] [--metrics-addr ADDR] [--autoclean INTERVAL] [--no-autoload] [--shutdown-timeout D] [--cache-dir DIR] [--log-format text|json] [--log-level LEVEL]"},
		"insmod":   {runInsmod, nil, "insmod FILE [key=value ...]"},
		"replace":  {runReplace, nil, "replace FILE [key=value ...]   (hot swap: the live module of the same name is replaced without failing a call)"},
		"rmmod":    {runRmmod, rmmodFlags, "rmmod [-f|--force] [-w|--wait[=DURATION]] [-v] NAME ... | rmmod -a"},
		"lsmod":    {runLsmod, nil, "lsmod [--json]"},
		"modinfo":  {runModinfo, modinfoFlags, "modinfo [-F FIELD] [--json] FILE|NAME"},
		"modprobe": {runModprobe, modprobeFlags, "modprobe [-r] [-n] [-v] [--first-time] NAME|ALIAS [key=value ...]"},
		"depmod":   {runDepmod, depmodFlags, "depmod [-n] [--json] DIR"},
		"mount":    {runMount, mountFlags, "mount [-t TYPE] SRC DIR [-o OPTS] | mount --bind|--rbind SRC DIR | mount --move SRC DIR | mount [--json]"},
		"umount":   {runUmount, umountFlags, "umount [-l] DIR"},
		"request":  {runRequest, requestFlags, "request [--threads N] NAME|ALIAS ..."},
		"call":     {runCall, callFlags, "call [--raw] SYMBOL [ARG ...]   (ARG: integers, negatives, floats for f32/f64)"},
		"hook":     {runHook, nil, "hook EVENT [ARG ...]"},
		"cat":      {runCat, nil, "cat PATH ...   (a file of the daemon's namespace, e.g. /proc/modules)"},
		"bench":    {runBench, benchFlags, "bench calls|wasm|swap [--quick] [--json]"},
		"torture":  {runTorture, tortureFlags, "torture [--duration D] [--seed S] [--ops N] [--wasm] [--json]"},
		"ping":     {runPing, nil, "ping"},
	}
}

// links are the commands also reachable as argv[0].
var links = []string{"insmod", "rmmod", "lsmod", "modprobe", "modinfo", "depmod", "mount", "umount"}

// Main runs the command line and returns the exit status.
func Main(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer, isTerminal bool) int {
	prog := "raceless"
	if len(argv) > 0 {
		prog = filepath.Base(argv[0])
	}
	var name string
	var args []string
	if _, ok := commands[prog]; ok && isLink(prog) {
		name, args = prog, argv[1:]
	} else {
		if len(argv) < 2 || argv[1] == "-h" || argv[1] == "--help" || argv[1] == "help" {
			printUsage(stderr)
			if len(argv) < 2 {
				return ExitUsage
			}
			return ExitOK
		}
		name, args = argv[1], argv[2:]
		if name == "version" || name == "--version" {
			fmt.Fprintln(stdout, "raceless (protocol", control.Version, ")")
			return ExitOK
		}
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "raceless: ERROR: unknown command %q (see raceless --help)\n", name)
		return ExitUsage
	}
	e := &env{ctx: ctx, name: name, stdin: stdin, stdout: stdout, stderr: stderr, isTerminal: isTerminal}
	var err error
	if name == "serve" {
		e.args = &parsed{set: map[string]bool{}, vals: map[string]string{}, pos: args}
	} else {
		e.args, err = parseArgs(args, cmd.flags...)
	}
	if err == nil && e.args.has("help") {
		fmt.Fprintln(stdout, "Usage: "+cmd.usage)
		return ExitOK
	}
	if err == nil {
		err = cmd.run(e)
	}
	if err == nil {
		return ExitOK
	}
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%s: ERROR: %s (usage: %s)\n", name, ue.msg, cmd.usage)
	default:
		fmt.Fprintln(stderr, e.generic(err).Error())
	}
	return ExitCode(err)
}

func isLink(name string) bool {
	for _, l := range links {
		if l == name {
			return true
		}
	}
	return false
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: raceless COMMAND [ARGS]  (or through a link named insmod, rmmod, lsmod, modprobe, modinfo, depmod, mount, umount)")
	for _, n := range []string{"serve", "insmod", "replace", "rmmod", "lsmod", "modinfo", "modprobe", "depmod", "mount", "umount", "request", "call", "hook", "cat", "bench", "torture", "ping"} {
		fmt.Fprintln(w, "  raceless "+commands[n].usage)
	}
	fmt.Fprintln(w, "Every client command takes --socket PATH (default $RACELESS_SOCKET, $XDG_RUNTIME_DIR/raceless.sock). See docs/cli.md.")
}

func joinComma(s []string) string { return strings.Join(s, ",") }

func asWire(err error, we **control.Error) bool { return errors.As(err, we) }

func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }
