package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/control"
	"github.com/raceless/raceless/internal/daemon"
)

// kmodReason is the strerror text kmod prints for an error class.
func kmodReason(err error) string {
	switch ExitCode(err) {
	case ExitNotFound:
		return "No such file or directory"
	case ExitExists:
		return "File exists"
	case ExitBusy:
		return "Device or resource busy"
	case ExitPermission:
		return "Operation not permitted"
	case ExitInvalid:
		var we *control.Error
		if errors.As(err, &we) && we.Reason == "format" {
			return "Invalid module format"
		}
		return "Invalid parameters"
	}
	return ""
}

func params(args []string) (map[string]string, error) {
	p, err := raceless.ParseParams(args)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	return p, nil
}

func runInsmod(e *env) error {
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
	if err := e.callInto(&control.Request{Op: "load", Path: abs, Params: p}, &st); err != nil {
		if errors.Is(err, control.ErrNoDaemon) {
			return err
		}
		if r := kmodReason(err); r != "" {
			return e.fail(err, "could not insert module %s: %s (%v)", file, r, err)
		}
		return e.fail(err, "could not insert module %s: %v", file, err)
	}
	if e.args.has("json") {
		return e.printJSON(st)
	}
	return nil
}

var rmmodFlags = []flagSpec{
	{short: "f", long: "force"},
	{short: "w", long: "wait", kind: optionalValue},
	{short: "a", long: "all"},
	{short: "v", long: "verbose"},
	{short: "s", long: "syslog"},
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
		_, err := e.call(&req, func(raw json.RawMessage) {
			var p raceless.Progress
			if json.Unmarshal(raw, &p) != nil {
				return
			}
			line := fmt.Sprintf("rmmod: waiting for %s: %d references", p.Module, p.Refs)
			if len(p.Holders) > 0 {
				line += ", used by: " + joinComma(p.Holders)
			}
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
		}
		return e.fail(err, "Module %s is in use", name)
	}
	return e.generic(err)
}

func runLsmod(e *env) error {
	if len(e.args.pos) > 0 {
		return usageErrorf("unexpected argument %q", e.args.pos[0])
	}
	var mods []daemon.ModuleStatus
	if err := e.callInto(&control.Request{Op: "list"}, &mods); err != nil {
		return err
	}
	if e.args.has("json") {
		return e.printJSON(mods)
	}
	fmt.Fprint(e.stdout, FormatLsmod(mods))
	return nil
}

// FormatLsmod formats modules as kmod's lsmod does: a header, then
// printf("%-19s %8ld  %d", name, size, refcnt) and " h1,h2" when the module
// has holders.
func FormatLsmod(mods []daemon.ModuleStatus) string {
	var b strings.Builder
	b.WriteString("Module                  Size  Used by\n")
	for _, m := range mods {
		fmt.Fprintf(&b, "%-19s %8d  %d", m.Name, m.Size, m.Refs)
		if len(m.Holders) > 0 {
			b.WriteString(" " + joinComma(m.Holders))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

var modinfoFlags = []flagSpec{{short: "F", long: "field", kind: requiredValue}}

// isFile says whether a modinfo/insmod argument names a file rather than a
// module: it contains a slash, ends in .wasm, or exists.
func isFile(arg string) bool {
	if strings.Contains(arg, "/") || strings.HasSuffix(arg, ".wasm") {
		return true
	}
	_, err := os.Stat(arg)
	return err == nil
}

func runModinfo(e *env) error {
	if len(e.args.pos) == 0 {
		return usageErrorf("missing module name or filename")
	}
	var firstErr error
	for _, arg := range e.args.pos {
		var mi daemon.ModInfo
		var err error
		if isFile(arg) {
			abs, _ := filepath.Abs(arg)
			mi.Filename = abs
			mi.Info, err = readInfo(abs)
		} else {
			err = e.callInto(&control.Request{Op: "modinfo", Name: arg}, &mi)
		}
		if err != nil {
			switch {
			case errors.Is(err, control.ErrNoDaemon):
				err = e.generic(err)
			case ExitCode(err) == ExitNotFound:
				err = e.fail(err, "Module %s not found.", arg)
			default:
				err = e.fail(err, "%s: %v", arg, err)
			}
			if firstErr != nil {
				fmt.Fprintln(e.stderr, firstErr.Error())
			}
			firstErr = err
			continue
		}
		if e.args.has("json") {
			if err := e.printJSON(mi); err != nil {
				return err
			}
			continue
		}
		fmt.Fprint(e.stdout, FormatModinfo(mi, e.args.val("field")))
	}
	return firstErr
}

// FormatModinfo formats a module's metadata as kmod's modinfo does: one
// "%-16s%s\n" line per field ("field:" padded to 16 columns); with field
// set, only that field's values, one per line.
func FormatModinfo(mi daemon.ModInfo, field string) string {
	type kv struct{ k, v string }
	info := mi.Info
	rows := []kv{{"filename", mi.Filename}, {"name", info.Name}}
	for _, f := range []kv{{"version", info.Version}, {"license", info.License}, {"description", info.Description}, {"author", info.Author}} {
		if f.v != "" {
			rows = append(rows, f)
		}
	}
	rows = append(rows, kv{"depends", joinComma(info.Depends)})
	for _, a := range info.Aliases {
		rows = append(rows, kv{"alias", a})
	}
	for _, p := range info.Params {
		rows = append(rows, kv{"parm", fmt.Sprintf("%s:%s (%s)", p.Name, p.Description, p.Type)})
	}
	var b strings.Builder
	for _, r := range rows {
		switch {
		case field == "":
			fmt.Fprintf(&b, "%-16s%s\n", r.k+":", r.v)
		case field == r.k:
			b.WriteString(r.v + "\n")
		}
	}
	return b.String()
}

var modprobeFlags = []flagSpec{
	{short: "r", long: "remove"},
	{short: "n", long: "dry-run"},
	{short: "v", long: "verbose"},
	{long: "first-time"},
	{short: "q", long: "quiet"},
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
	}
	if !remove && we != nil && we.Module != "" {
		return e.fail(err, "could not insert '%s': %s", we.Module, msg)
	}
	return e.fatal(err, "%s", msg)
}

var requestFlags = []flagSpec{{short: "t", long: "threads", kind: requiredValue}}

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
