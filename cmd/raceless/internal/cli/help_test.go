package cli

import (
	"bytes"
	"context"
	"runtime/debug"
	"strings"
	"testing"
)

func runMain(argv ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = Main(context.Background(), argv, strings.NewReader(""), &out, &errb, false)
	return out.String(), errb.String(), code
}

// Every command's --help, -h and "raceless help COMMAND" print the same
// complete usage on stdout and exit 0: the usage line, every option of the
// command, and the global options that apply to it.
func TestCommandHelp(t *testing.T) {
	for _, name := range order {
		cmd := commands[name]
		want, stderr, code := runMain("raceless", name, "--help")
		if code != 0 || stderr != "" {
			t.Errorf("%s --help: exit %d, stderr %q", name, code, stderr)
		}
		if !strings.HasPrefix(want, "Usage: raceless "+cmd.usage+"\n") {
			t.Errorf("%s --help does not start with its usage:\n%s", name, want)
		}
		for _, argv := range [][]string{{"raceless", name, "-h"}, {"raceless", "help", name}, {"raceless", name, "x", "--help"}} {
			if out, stderr, code := runMain(argv...); out != want || stderr != "" || code != 0 {
				t.Errorf("%q: exit %d, stderr %q, stdout differs from --help:\n%s", argv, code, stderr, out)
			}
		}
		for _, f := range cmd.flags {
			if !strings.Contains(want, "  "+f.spelling()+" ") || f.help == "" {
				t.Errorf("%s --help lacks %s (or its description):\n%s", name, f.spelling(), want)
			}
		}
		if name == "serve" {
			for _, f := range []string{"--socket PATH", "--modules DIR", "--fuse DIR", "--metrics-addr HOST:PORT", "--autoclean INTERVAL", "--no-autoload", "--shutdown-timeout D", "--call-timeout D", "--cache-dir DIR", "--keyring DIR", "--sig-enforce", "--policy FILE", "--log-format text|json", "--log-level LEVEL", "-h, --help"} {
				if !strings.Contains(want, "\n  "+f+" ") {
					t.Errorf("serve --help lacks %s:\n%s", f, want)
				}
			}
			if strings.Contains(want, "--json") {
				t.Errorf("serve --help lists --json, which serve does not take:\n%s", want)
			}
			continue
		}
		if got := strings.Contains(want, "--socket PATH"); got != cmd.daemon {
			t.Errorf("%s --help lists --socket: %v, the command talks to the daemon: %v", name, got, cmd.daemon)
		}
		if got := strings.Contains(want, "--json"); got != (cmd.json != "") {
			t.Errorf("%s --help lists --json: %v, --json does something: %v", name, got, cmd.json != "")
		}
		if !strings.Contains(want, "-h, --help") {
			t.Errorf("%s --help lacks -h, --help", name)
		}
	}
	// Through a link, the usage names the link.
	if out, _, code := runMain("/bin/rmmod", "--help"); code != 0 || !strings.HasPrefix(out, "Usage: "+commands["rmmod"].usage+"\n") {
		t.Errorf("rmmod --help through the link: exit %d\n%s", code, out)
	}
}

func TestTopLevelHelp(t *testing.T) {
	want, stderr, code := runMain("raceless", "--help")
	if code != 0 || stderr != "" || !strings.HasPrefix(want, "Usage: raceless COMMAND") {
		t.Fatalf("--help: exit %d, stderr %q\n%s", code, stderr, want)
	}
	for _, n := range append(append([]string{}, order...), "help [COMMAND]", "version") {
		if !strings.Contains(want, "\n  "+n+" ") {
			t.Errorf("--help lacks %s", n)
		}
	}
	for _, s := range []string{"--socket PATH", "--json", "-h, --help", "\n  7 "} {
		if !strings.Contains(want, s) {
			t.Errorf("--help lacks %q", s)
		}
	}
	for _, argv := range [][]string{{"raceless", "-h"}, {"raceless", "help"}} {
		if out, stderr, code := runMain(argv...); out != want || stderr != "" || code != 0 {
			t.Errorf("%q: exit %d, stderr %q, stdout differs from --help", argv, code, stderr)
		}
	}
	// Usage errors: stderr, status 2, nothing on stdout.
	for _, argv := range [][]string{{"raceless"}, {"raceless", "nope"}, {"raceless", "help", "nope"}, {"raceless", "help", "a", "b"}, {"raceless", "version", "x"}, {"raceless", "lsmod", "--nope"}, {"raceless", "serve", "--nope"}} {
		out, stderr, code := runMain(argv...)
		if code != ExitUsage || out != "" || !strings.HasPrefix(stderr, "raceless: ERROR: ") && !strings.Contains(stderr, ": ERROR: ") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", argv, code, out, stderr)
		}
	}
}

func TestVersion(t *testing.T) {
	out, stderr, code := runMain("raceless", "--version")
	if code != 0 || stderr != "" || !strings.HasPrefix(out, "raceless ") || !strings.HasSuffix(out, "\n") {
		t.Fatalf("--version: exit %d, stderr %q, stdout %q", code, stderr, out)
	}
	if out2, _, _ := runMain("raceless", "version"); out2 != out {
		t.Errorf("version %q, --version %q", out2, out)
	}
	bi := &debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Path: "github.com/raceless/raceless", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"}}}
	if got, want := formatVersion(bi, true), "raceless v1.2.3 vcs.revision=abc123 vcs.time=2026-01-02T03:04:05Z vcs.modified=true go1.26.1 protocol=1"; got != want {
		t.Errorf("complete build info:\n got %s\nwant %s", got, want)
	}
	bi.Settings = bi.Settings[1:2]
	bi.Main.Version = "(devel)"
	if got, want := formatVersion(bi, true), "raceless (devel) vcs.revision=unknown vcs.time=2026-01-02T03:04:05Z vcs.modified=unknown go1.26.1 protocol=1"; got != want {
		t.Errorf("missing fields:\n got %s\nwant %s", got, want)
	}
	if got, want := formatVersion(nil, false), "raceless (unknown: no build information in the binary) protocol=1"; got != want {
		t.Errorf("no build info:\n got %s\nwant %s", got, want)
	}
}
