package main_test

// The documentation's command blocks, run as a reader following them would
// run them: every fenced ```sh, ```bash and ```console block of README.md
// and docs/cli.md, in order, each document against its own daemon, working
// directory and HOME.
//
// Conventions (the markers are HTML comments, invisible when rendered):
//
//   - In a ```sh or ```bash block every line is a command (a trailing "\"
//     continues it; blank and comment-only lines are skipped); each must
//     exit 0. Output is not checked.
//   - In a ```console block a line starting with "$ " is a command and the
//     lines after it, up to the next command, are its output (stdout and
//     stderr together), compared exactly; a line "..." matches any number
//     of lines, and a line ending in " ..." any line that starts with the
//     text before the "...". A command shown without output must exit 0 and print
//     nothing; a command shown with output may fail (the output is the
//     check: kmod's error lines).
//   - "<!-- doctest: skip REASON -->" on the line before a block: the
//     block is not run, and the test says so (a skipped subtest naming the
//     reason). For blocks that need root, FUSE, a tool the test machine
//     lacks, or that run for minutes.
//
// Set-up the test gives every document: the binary built from this tree
// (TestMain), "raceless" on PATH, a working directory holding mods/ with
// the example wasm modules provider, consumer and hello built, and HOME set
// to an empty directory. In the commands, "go run ./cmd/raceless ARGS" and
// "go build -o OUT ./cmd/raceless" stand for that binary (run, or copied to
// OUT, creating its directory as go build does); any other go command is
// refused (mark its block skip). A command whose program is "serve" (after
// "go run ./cmd/raceless", "raceless" or "./raceless") is the daemon "in
// another terminal": the test stops the document's running daemon, if any,
// and starts this one (its "./" arguments made absolute, its socket the
// test's), waiting for its socket; the other commands find it through
// RACELESS_SOCKET.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/raceless/raceless/internal/testdeadline"
	"github.com/raceless/raceless/internal/wasmtest"
)

// docBlock is one fenced command block of a document.
type docBlock struct {
	file string
	line int    // of the opening fence
	lang string // sh, bash or console
	skip string // the skip marker's reason
	body []string
}

var skipMarker = regexp.MustCompile(`^<!--\s*doctest:\s*skip\s+(.*?)\s*-->$`)

// docBlocks extracts the command blocks of a Markdown file.
func docBlocks(t *testing.T, file string) []docBlock {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []docBlock
	var cur *docBlock
	prev := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```"):
			lang := strings.TrimPrefix(trimmed, "```")
			blk := docBlock{file: file, line: n, lang: lang}
			if m := skipMarker.FindStringSubmatch(prev); m != nil {
				blk.skip = m[1]
			}
			cur = &blk
		case cur != nil && trimmed == "```":
			if cur.lang == "sh" || cur.lang == "bash" || cur.lang == "console" {
				out = append(out, *cur)
			}
			cur = nil
		case cur != nil:
			cur.body = append(cur.body, line)
		}
		if trimmed != "" {
			prev = trimmed
		}
	}
	if cur != nil {
		t.Fatalf("%s:%d: unterminated code block", file, cur.line)
	}
	return out
}

// docCommand is one command of a block and, in a console block, the
// output shown for it.
type docCommand struct {
	text   string
	output []string
	shown  bool // a console block: output is the check
}

func (b docBlock) commands() []docCommand {
	var cmds []docCommand
	cont := false
	for _, l := range b.body {
		if b.lang != "console" {
			if cont {
				cmds[len(cmds)-1].text += "\n" + l
			} else if s := strings.TrimSpace(l); s != "" && !strings.HasPrefix(s, "#") {
				cmds = append(cmds, docCommand{text: l})
			}
			cont = strings.HasSuffix(l, "\\")
			continue
		}
		switch {
		case cont:
			cmds[len(cmds)-1].text += "\n" + l
			cont = strings.HasSuffix(l, "\\")
		case strings.HasPrefix(l, "$ "):
			cmds = append(cmds, docCommand{text: strings.TrimPrefix(l, "$ "), shown: true})
			cont = strings.HasSuffix(l, "\\")
		case len(cmds) > 0:
			cmds[len(cmds)-1].output = append(cmds[len(cmds)-1].output, l)
		}
	}
	return cmds
}

// serveArgs returns the arguments of a `serve` command line.
func serveArgs(cmd string) ([]string, bool) {
	if i := strings.Index(cmd, " #"); i >= 0 {
		cmd = cmd[:i]
	}
	f := strings.Fields(cmd)
	switch {
	case len(f) >= 3 && f[0] == "go" && f[1] == "run" && f[2] == "./cmd/raceless":
		f = f[3:]
	case len(f) >= 1 && (f[0] == "raceless" || f[0] == "./raceless"):
		f = f[1:]
	default:
		return nil, false
	}
	if len(f) == 0 || f[0] != "serve" {
		return nil, false
	}
	return f[1:], true
}

// goShim stands for the go command in the documents' blocks.
const goShim = `go() {
	if [ "$1" = run ] && [ "$2" = ./cmd/raceless ]; then shift 2; raceless "$@"; return; fi
	if [ "$1" = build ] && [ "$2" = -o ] && [ "$4" = ./cmd/raceless ] && [ $# = 4 ]; then
		mkdir -p "$(dirname "$3")" && cp "$RACELESS_TEST_BIN" "$3"; return
	fi
	echo "doctest: go $* cannot run inside the test: mark the block skip" >&2; return 1
}
`

// docEnv is one document's world: its working directory and daemon.
type docEnv struct {
	t    *testing.T
	work string
	path string // PATH
	d    *daemon
}

func newDocEnv(t *testing.T) *docEnv {
	t.Helper()
	work := t.TempDir()
	for _, d := range []string{"home", "bin", "mods"} {
		if err := os.Mkdir(filepath.Join(work, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(bin, filepath.Join(work, "bin", "raceless")); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"provider", "consumer", "hello"} {
		b, err := os.ReadFile(wasmtest.Build(t, "examples/wasm/"+m))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, "mods", m+".wasm"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &docEnv{t: t, work: work, path: filepath.Join(work, "bin") + string(os.PathListSeparator) + os.Getenv("PATH")}
}

// serve stops the running daemon and starts one with args.
func (e *docEnv) serve(t *testing.T, args []string) {
	if e.d != nil {
		e.d.stop()
	}
	abs := make([]string, len(args))
	for i, a := range args {
		abs[i] = a
		if strings.HasPrefix(a, "./") {
			abs[i] = filepath.Join(e.work, a)
		}
	}
	// The daemon belongs to the document, not to the block's subtest.
	// With HTTP as the real default serves it (and so the default route
	// module the documents show), on a port of its own.
	e.d = startDaemonEnv(e.t, []string{"XDG_CACHE_HOME=" + cacheHome, "RACELESS_HTTP=127.0.0.1:0"}, abs...)
	t.Logf("started: raceless serve %s", strings.Join(abs, " "))
}

// run runs one command line with bash and returns its combined output.
func (e *docEnv) run(cmd string) (string, int, error) {
	ctx, cancel := testdeadline.Context(e.t)
	defer cancel()
	c := exec.CommandContext(ctx, "bash", "-c", goShim+"exec 2>&1\n"+cmd)
	c.Dir = e.work
	sock := ""
	if e.d != nil {
		sock = e.d.sock
	}
	c.Env = append(os.Environ(), "HOME="+filepath.Join(e.work, "home"), "PATH="+e.path,
		"RACELESS_SOCKET="+sock, "RACELESS_TEST_BIN="+bin, "XDG_CACHE_HOME="+cacheHome)
	out, err := c.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode(), nil
	}
	if ctx.Err() != nil {
		return string(out), -1, fmt.Errorf("killed at the test's deadline")
	}
	return string(out), 0, err
}

// matchOutput compares got with the lines shown: "..." matches any number
// of lines, "TEXT ..." a line starting with "TEXT ".
func matchOutput(want []string, got []string) bool {
	if len(want) == 0 {
		return len(got) == 0
	}
	if want[0] == "..." {
		for i := 0; i <= len(got); i++ {
			if matchOutput(want[1:], got[i:]) {
				return true
			}
		}
		return false
	}
	if len(got) == 0 {
		return false
	}
	if p, ok := strings.CutSuffix(want[0], " ..."); ok {
		return strings.HasPrefix(got[0], p+" ") && matchOutput(want[1:], got[1:])
	}
	return got[0] == want[0] && matchOutput(want[1:], got[1:])
}

// runBlock runs a block's commands and returns the first failure.
func (e *docEnv) runBlock(t *testing.T, b docBlock) error {
	for _, c := range b.commands() {
		if args, ok := serveArgs(c.text); ok {
			e.serve(t, args)
			continue
		}
		out, code, err := e.run(c.text)
		if err != nil {
			return fmt.Errorf("%s: %v\n%s", c.text, err, out)
		}
		got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if out == "" {
			got = nil
		}
		switch {
		case !c.shown && code != 0:
			return fmt.Errorf("%s: exit %d:\n%s", c.text, code, out)
		case c.shown && len(c.output) == 0 && (code != 0 || out != ""):
			return fmt.Errorf("%s: shown without output, got exit %d:\n%s", c.text, code, out)
		case c.shown && !matchOutput(c.output, got):
			return fmt.Errorf("%s: output (exit %d):\n%s\nthe document shows:\n%s", c.text, code, out, strings.Join(c.output, "\n"))
		}
	}
	return nil
}

// docsKnownBroken lists the blocks of files this test may not fix, by
// file and first line, with what is wrong; such a block must still fail
// (the test fails once it passes, so that the entry goes).
var docsKnownBroken = map[string]string{}

func TestDocCommandBlocks(t *testing.T) {
	for _, file := range []string{"../../README.md", "../../docs/cli.md"} {
		name := strings.TrimPrefix(file, "../../")
		t.Run(name, func(t *testing.T) {
			e := newDocEnv(t)
			for _, b := range docBlocks(t, file) {
				first := ""
				if len(b.body) > 0 {
					first = b.body[0]
				}
				t.Run(fmt.Sprintf("line%d", b.line), func(t *testing.T) {
					if b.skip != "" {
						t.Skipf("%s:%d: marked skip: %s", name, b.line, b.skip)
					}
					err := e.runBlock(t, b)
					if why, ok := docsKnownBroken[name+": "+first]; ok {
						if err == nil {
							t.Fatalf("%s:%d passes now: remove it from docsKnownBroken", name, b.line)
						}
						t.Skipf("%s:%d: known broken (%s): %v", name, b.line, why, err)
					}
					if err != nil {
						t.Fatalf("%s:%d: %v", name, b.line, err)
					}
				})
			}
		})
	}
}
