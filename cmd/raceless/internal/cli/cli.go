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

	"github.com/raceless/raceless/cmd/raceless/internal/control"
)

// Exit statuses (control.Classes maps every error to one of them).
const (
	ExitOK          = 0  // success
	ExitFailure     = 1  // any other failure
	ExitUsage       = 2  // bad command line
	ExitNotFound    = 3  // no such module, file, alias, symbol or mount (ENOENT)
	ExitExists      = 4  // already loaded / already exists (EEXIST)
	ExitBusy        = 5  // in use, or a wait timed out (EBUSY)
	ExitPermission  = 6  // refused: not the daemon's owner (EPERM)
	ExitInvalid     = 7  // invalid parameters, module or index (EINVAL, ENOEXEC)
	ExitNoDaemon    = 8  // the daemon is not running (cannot connect)
	ExitUnsupported = 9  // not built in this version
	ExitKeyRejected = 10 // the module's signature refuses it (EKEYREJECTED)
)

// ExitCode maps an error to an exit status: a usage error of the command
// line is ExitUsage, any other error the status of its class in
// control.Classes.
func ExitCode(err error) int {
	var ue *usageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	return control.ClassOf(err).Exit
}

// env is what a command runs with.
type env struct {
	ctx    context.Context
	name   string // the command's name, for messages ("rmmod")
	prefix string // "raceless " before the command's usage, "" when run through its link
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
	// what is a one-line description for --help.
	what string
	// daemon: the command talks to the daemon (--socket applies).
	daemon bool
	// json is what --json does for this command; "" when it does nothing.
	json string
}

var commands map[string]command

// order is the order of the commands in the help.
var order = []string{"serve", "insmod", "replace", "rmmod", "lsmod", "modinfo", "modprobe", "depmod", "keygen", "sign", "sig-enforce", "mount", "umount", "apply", "diff", "request", "call", "hook", "cat", "ls", "bench", "torture", "ping", "fleet"}

func init() {
	commands = map[string]command{
		"serve": {run: runServe, usage: "serve [--socket PATH] [--modules DIR] [--fuse DIR] [--metrics-addr HOST:PORT] [--autoclean INTERVAL] [--no-autoload] [--shutdown-timeout D] [--call-timeout D] [--cache-dir DIR|off] [--keyring DIR] [--sig-enforce] [--policy FILE] [--config PATH] [--etcd ENDPOINTS --fleet NAME [--host NAME] [--blob-dir DIR]] [--log-format text|json] [--log-level LEVEL]",
			what: "run the daemon"},
		"insmod": {run: runInsmod, usage: "insmod FILE [key=value ...]",
			what: "load a module file", daemon: true, json: "print the loaded module's status as JSON"},
		"replace": {run: runReplace, flags: replaceFlags, usage: "replace [-f|--force] FILE [key=value ...]",
			what: "hot swap: replace the live module of the same name without failing a call", daemon: true, json: "print the new instance's status as JSON"},
		"rmmod": {run: runRmmod, flags: rmmodFlags, usage: "rmmod [-f|--force] [-w|--wait[=DURATION]] [-v] NAME ... | rmmod -a",
			what: "unload modules", daemon: true, json: "with -a: print the removed modules as JSON"},
		"lsmod": {run: runLsmod, usage: "lsmod [--json]",
			what: "list the loaded modules", daemon: true, json: "print the modules' status as JSON"},
		"modinfo": {run: runModinfo, flags: modinfoFlags, usage: "modinfo [-F FIELD] [--keyring DIR] [--json] FILE|NAME",
			what: "show a module's information (a FILE is read without the daemon)", daemon: true, json: "print the information as JSON"},
		"modprobe": {run: runModprobe, flags: modprobeFlags, usage: "modprobe [-r] [-n] [-v] [-q] [--first-time] NAME|ALIAS [key=value ...]",
			what: "load (or remove) a module and its dependencies", daemon: true, json: "print the module and the actions as JSON"},
		"depmod": {run: runDepmod, flags: depmodFlags, usage: "depmod [-n] [--json] DIR",
			what: "write DIR's modules.dep and modules.alias (without the daemon)", json: "print the index as JSON instead of writing it"},
		"keygen": {run: runKeygen, usage: "keygen NAME",
			what: "make an Ed25519 key pair for signing modules, NAME.key (private) and NAME.pub (public, for a keyring) (without the daemon)"},
		"sign": {run: runSign, flags: signFlags, usage: "sign --key KEY [-o OUT] FILE",
			what: "sign a module file with a private key, replacing any signature it had (without the daemon)"},
		"sig-enforce": {run: runSigEnforce, usage: "sig-enforce [on]",
			what: "print whether the daemon enforces module signatures, or turn enforcement on (nothing turns it off)", daemon: true, json: "print the state as JSON"},
		"mount": {run: runMount, flags: mountFlags, usage: "mount [-t TYPE] SRC DIR [-o OPTS] | mount --bind|--rbind SRC DIR | mount --move SRC DIR | mount [--json]",
			what: "list the mounts, or mount in the daemon's namespace", daemon: true, json: "list the mounts as JSON"},
		"umount": {run: runUmount, flags: umountFlags, usage: "umount [-l] DIR",
			what: "unmount in the daemon's namespace", daemon: true},
		"apply": {run: runApply, usage: "apply [FILE]",
			what: "reconcile the daemon with the desired state FILE (or directory), or with its --config read again; print what was done per item", daemon: true, json: "print the report as JSON"},
		"diff": {run: runDiff, usage: "diff [FILE]",
			what: "print what apply would change, changing nothing", daemon: true, json: "print the report, every item, as JSON"},
		"request": {run: runRequest, flags: requestFlags, usage: "request [--threads N] NAME|ALIAS ...",
			what: "demand-load names as request_module does, from N goroutines each", daemon: true, json: "print each request's module as JSON"},
		"call": {run: runCall, flags: callFlags, usage: "call [--raw] SYMBOL [ARG ...]",
			what: "call an exported symbol (ARG: integers, negatives, floats for f32/f64)", daemon: true, json: "print the results as a JSON array"},
		"hook": {run: runHook, usage: "hook EVENT [ARG ...]",
			what: "call every hook subscribed to EVENT", daemon: true},
		"cat": {run: runCat, usage: "cat PATH ...",
			what: "print a file of the daemon's namespace, e.g. /proc/modules", daemon: true},
		"ls": {run: runLs, flags: lsFlags, usage: "ls [-l] [-p] [PATH ...]",
			what: "list a directory of the daemon's namespace, one name per line, e.g. /proc/hello/holders", daemon: true},
		"bench": {run: runBench, flags: benchFlags, usage: "bench calls|wasm|swap|scale|http|fleet [--quick] [--json]",
			what: "run a benchmark in this process (without the daemon)", json: "print the results as JSON"},
		"torture": {run: runTorture, flags: tortureFlags, usage: "torture [--duration D] [--seed S] [--ops N] [--wasm] [--json]",
			what: "run the rcutorture-style invariant check in this process (without the daemon)", json: "print the report as JSON"},
		"ping": {run: runPing, usage: "ping",
			what: "report the daemon's pid, uid, protocol and taints", daemon: true, json: "print the report as JSON"},
		"fleet": {run: runFleet, flags: fleetFlags, usage: "fleet set FILE [--canary HOST|--canary-percent P] [--batch N] [--health PATH] [--requests N] [--max-error-rate R] [--timeout D] | fleet status | fleet drain [--timeout D] HOST | fleet undrain HOST | fleet etcd --data-dir DIR [--listen HOST:PORT|PATH] (each with [--etcd ENDPOINTS] [--fleet NAME])",
			what: "run a fleet of daemons from one desired state in etcd: set it and roll it out, show each host, drain a host, or run a single-node etcd to try it (without the daemon; docs/fleet.md)", json: "print the status (set: the rollout's end) as JSON"},
	}
}

// links are the commands also reachable as argv[0].
var links = []string{"insmod", "rmmod", "lsmod", "modprobe", "modinfo", "depmod", "mount", "umount"}

// Main runs the command line and returns the exit status. Help (raceless
// --help, raceless help [COMMAND], COMMAND --help) and the version go to
// stdout with status 0; a usage error goes to stderr with ExitUsage.
func Main(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer, isTerminal bool) int {
	prog := "raceless"
	if len(argv) > 0 {
		prog = filepath.Base(argv[0])
	}
	var name string
	var args []string
	prefix := "" // "raceless " before a command's usage, unless run through its link
	if _, ok := commands[prog]; ok && isLink(prog) {
		name, args = prog, argv[1:]
	} else {
		prefix = "raceless "
		if len(argv) < 2 {
			fmt.Fprintln(stderr, "raceless: ERROR: no command given")
			printUsage(stderr)
			return ExitUsage
		}
		name, args = argv[1], argv[2:]
		switch name {
		case "-h", "--help":
			printUsage(stdout)
			return ExitOK
		case "help":
			switch {
			case len(args) == 0:
				printUsage(stdout)
				return ExitOK
			case len(args) > 1:
				fmt.Fprintln(stderr, "raceless: ERROR: help takes at most one command (usage: raceless help [COMMAND])")
				return ExitUsage
			}
			if _, ok := commands[args[0]]; !ok {
				fmt.Fprintf(stderr, "raceless: ERROR: unknown command %q (see raceless --help)\n", args[0])
				return ExitUsage
			}
			printHelp(stdout, prefix, args[0])
			return ExitOK
		case "version", "--version":
			if len(args) > 0 {
				fmt.Fprintf(stderr, "raceless: ERROR: unexpected argument %q (usage: raceless version)\n", args[0])
				return ExitUsage
			}
			fmt.Fprintln(stdout, versionLine())
			return ExitOK
		}
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "raceless: ERROR: unknown command %q (see raceless --help)\n", name)
		return ExitUsage
	}
	e := &env{ctx: ctx, name: name, prefix: prefix, stdin: stdin, stdout: stdout, stderr: stderr, isTerminal: isTerminal}
	var err error
	if name == "serve" {
		e.args = &parsed{set: map[string]bool{}, vals: map[string]string{}, pos: args}
	} else {
		e.args, err = parseArgs(args, cmd.flags...)
	}
	if err == nil && e.args.has("help") {
		printHelp(stdout, prefix, name)
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
		// A failure with no line is one the user asked not to hear
		// about (modprobe -q): the exit status still says it.
		if line := oneLine(e.generic(err).Error()); line != "" {
			fmt.Fprintln(stderr, line)
		}
	}
	return ExitCode(err)
}

// oneLine folds a message that spans lines (wazero's validation errors do)
// into the one line every failure prints.
func oneLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return strings.NewReplacer("\n\t", " ", "\n", "; ").Replace(s)
}

func isLink(name string) bool {
	for _, l := range links {
		if l == name {
			return true
		}
	}
	return false
}

func joinComma(s []string) string { return strings.Join(s, ",") }

func asWire(err error, we **control.Error) bool { return errors.As(err, we) }
