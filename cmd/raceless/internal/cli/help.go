package cli

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/raceless/raceless/cmd/raceless/internal/control"
)

// globalFlags are accepted by every command but serve (which has its own
// --socket); printHelp lists those that apply to the command.
var globalFlags = []flagSpec{
	{long: "socket", kind: requiredValue, arg: "PATH", help: "the daemon's control socket (default $RACELESS_SOCKET, else $XDG_RUNTIME_DIR/raceless.sock; see docs/cli.md)"},
	{long: "json", kind: noValue},
	{short: "h", long: "help", help: "print this help and exit"},
}

// optionColumn is where an option's description starts.
const optionColumn = 28

// writeOption writes one option of a help: its spellings, then its
// description from optionColumn (on the next line when they are longer).
func writeOption(w io.Writer, left, help string) {
	left = "  " + left
	if len(left) >= optionColumn {
		fmt.Fprintf(w, "%s\n%s%s\n", left, strings.Repeat(" ", optionColumn), help)
		return
	}
	fmt.Fprintf(w, "%-*s%s\n", optionColumn, left, help)
}

// spelling is a flag as the help writes it: "-w, --wait[=DURATION]".
func (s flagSpec) spelling() string {
	var b strings.Builder
	if s.short != "" {
		b.WriteString("-" + s.short)
		if s.long != "" {
			b.WriteString(", ")
		}
	} else {
		b.WriteString("    ")
	}
	if s.long != "" {
		b.WriteString("--" + s.long)
	}
	switch {
	case s.kind == requiredValue:
		b.WriteString(" " + s.arg)
	case s.kind == optionalValue:
		b.WriteString("[=" + s.arg + "]")
	}
	return b.String()
}

// printHelp writes the complete help of command name: its usage, its
// options, then the global options that apply to it.
func printHelp(w io.Writer, prefix, name string) {
	cmd := commands[name]
	if name == "serve" {
		serveHelp(w, prefix)
		return
	}
	fmt.Fprintf(w, "Usage: %s\n", prefix+cmd.usage)
	fmt.Fprintf(w, "%s%s.\n", strings.ToUpper(cmd.what[:1]), cmd.what[1:])
	if len(cmd.flags) > 0 {
		fmt.Fprintln(w, "Options:")
		for _, f := range cmd.flags {
			writeOption(w, f.spelling(), f.help)
		}
	}
	fmt.Fprintln(w, "Global options:")
	for _, f := range globalFlags {
		help := f.help
		switch f.long {
		case "socket":
			if !cmd.daemon {
				continue
			}
		case "json":
			if cmd.json == "" {
				continue
			}
			help = cmd.json
		}
		writeOption(w, f.spelling(), help)
	}
	fmt.Fprintln(w, "Exit statuses: see raceless --help.")
}

// printUsage writes the help of raceless itself: every command, and the
// global options.
func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: raceless COMMAND [ARGS]")
	fmt.Fprintln(w, "   or: insmod, rmmod, lsmod, modprobe, modinfo, depmod, mount, umount ARGS (through a link of that name)")
	fmt.Fprintln(w, "Commands:")
	for _, n := range order {
		c := commands[n]
		writeOption(w, n, c.what)
	}
	writeOption(w, "help [COMMAND]", "print this help, or COMMAND's (also COMMAND --help)")
	writeOption(w, "version", "print the version (also --version)")
	fmt.Fprintln(w, "Global options:")
	writeOption(w, globalFlags[0].spelling(), globalFlags[0].help+"; every command that talks to the daemon")
	writeOption(w, globalFlags[1].spelling(), "machine-readable output, where the command's help lists it")
	writeOption(w, globalFlags[2].spelling(), "print help and exit")
	fmt.Fprintln(w, "Exit statuses:")
	for exit := 0; exit <= ExitKeyRejected; exit++ {
		var meanings []string
		for _, c := range control.Classes {
			if c.Exit == exit {
				meanings = append(meanings, c.Meaning)
			}
		}
		writeOption(w, fmt.Sprint(exit), strings.Join(meanings, "; "))
	}
	fmt.Fprintln(w, "Run raceless COMMAND --help for a command's usage and options. See docs/cli.md.")
}

// versionLine is raceless --version's line: the module version, the VCS
// revision, time and modified flag recorded in the binary (each "unknown"
// when the build did not record it), the Go version and the protocol.
func versionLine() string {
	bi, ok := debug.ReadBuildInfo()
	return formatVersion(bi, ok)
}

func formatVersion(bi *debug.BuildInfo, ok bool) string {
	if !ok || bi == nil {
		return fmt.Sprintf("raceless (unknown: no build information in the binary) protocol=%d", control.Version)
	}
	v := bi.Main.Version
	if v == "" {
		v = "(unknown)"
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	var b strings.Builder
	b.WriteString("raceless " + v)
	for _, k := range []string{"vcs.revision", "vcs.time", "vcs.modified"} {
		val, ok := settings[k]
		if !ok {
			val = "unknown"
		}
		fmt.Fprintf(&b, " %s=%s", k, val)
	}
	gov := bi.GoVersion
	if gov == "" {
		gov = "go=unknown"
	}
	fmt.Fprintf(&b, " %s protocol=%d", gov, control.Version)
	return b.String()
}
