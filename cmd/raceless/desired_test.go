package main_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/raceless/raceless/internal/testdeadline"
	"github.com/raceless/raceless/internal/wasmtest"
)

// The desired state end to end: serve --config reconciles at start;
// diff and apply; SIGHUP re-reads the file; a bad file changes nothing
// (apply exits 7 naming the line and field); a digest mismatch is an item
// that failed (exit 1); a daemon started again with the same --config
// runs the same modules, parameters and mounts; a bad --config stops the
// start (exit 7).
func TestDesiredStateFile(t *testing.T) {
	dir := t.TempDir()
	wasm, err := os.ReadFile(wasmtest.Build(t, "examples/wasm/provider"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "mods"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mods", "provider.wasm"), wasm, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(wasm)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	config := filepath.Join(dir, "host.toml")
	write := func(path, text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	state := `[[module]]
file = "mods/provider.wasm"
digest = "` + digest + `"

[[module]]
name = "hello_consumer"

[[mount]]
target = "/data"
type = "ramfs"
mkdir = true
`
	write(config, state)
	d := startDaemon(t, "--config", config)
	lsmod := func() string { return d.run("lsmod").ok(t).stdout }
	first := lsmod()
	for _, m := range []string{"\nprovider ", "\nhello_consumer "} {
		if !strings.Contains(first, m) {
			t.Fatalf("lsmod lacks %q:\n%s", m, first)
		}
	}
	if out := d.run("cat", "/proc/mounts").ok(t).stdout; !strings.Contains(out, "none /data ramfs ") {
		t.Fatalf("/proc/mounts:\n%s", out)
	}
	if r := d.run("diff").ok(t); r.stdout != "" {
		t.Fatalf("diff of the state just applied: %q", r.stdout)
	}
	if r := d.run("apply").ok(t); r.stdout != "module provider: keep\nmodule hello_consumer: keep\nmount /data: keep\n" {
		t.Fatalf("apply again: %q", r.stdout)
	}

	// SIGHUP re-reads the file.
	write(config, strings.Replace(state, `name = "hello_consumer"`, `name = "hello"
params = { greeting = "salut" }`, 1))
	if r := d.run("diff").ok(t); r.stdout != "module hello_consumer: unload\nmodule hello: replace\n" {
		t.Fatalf("diff: %q", r.stdout)
	}
	reconciled := strings.Count(d.log.String(), "msg=reconciled ")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reconciliation after SIGHUP", func() bool {
		return strings.Count(d.log.String(), "msg=reconciled ") > reconciled
	})
	if out := lsmod(); strings.Contains(out, "hello_consumer") {
		t.Fatalf("hello_consumer still loaded after SIGHUP:\n%s", out)
	}
	if out := d.run("cat", "/proc/hello/parameters/greeting").ok(t).stdout; strings.TrimSpace(out) != "salut" {
		t.Fatalf("hello's greeting: %q", out)
	}

	// A bad file: refused whole, with the line and field; nothing changes.
	before := lsmod()
	write(config, state+"\n[[mount]]\ntarget = \"/x\"\ntype = \"ramfs\"\nmkdri = true\n")
	r := d.run("apply")
	if want := "apply: ERROR: " + config + ":16: mount[1].mkdri: unknown key: invalid desired state\n"; r.code != 7 || r.stderr != want {
		t.Fatalf("apply of a bad file: exit %d, stderr %q; want 7, %q", r.code, r.stderr, want)
	}
	refused := strings.Count(d.log.String(), "desired state refused")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "SIGHUP's refusal of the bad file", func() bool {
		return strings.Count(d.log.String(), "desired state refused") > refused
	})
	if after := lsmod(); after != before {
		t.Fatalf("a bad file changed the modules:\n%s\nwas:\n%s", after, before)
	}

	// apply FILE: a digest mismatch fails its item; the module is left.
	other := filepath.Join(dir, "other.toml")
	write(other, strings.Replace(state, digest, "sha256:"+strings.Repeat("0", 64), 1))
	r = d.run("apply", other)
	if r.code != 1 || r.stderr != "apply: ERROR: not converged: 1 of 3 items failed, 0 left busy\n" ||
		!strings.Contains(r.stdout, "module provider: replace: module provider: digest mismatch: the file is "+digest) {
		t.Fatalf("apply with a bad digest: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// A restart with the same --config: the same modules, parameters and
	// mounts.
	write(config, state+"\n[[module]]\nname = \"hello\"\nparams = { greeting = \"bonjour\" }\n")
	d.run("apply").ok(t)
	first = lsmod()
	params := d.run("cat", "/proc/hello/parameters/greeting").ok(t).stdout
	d.stop()
	d = startDaemon(t, "--config", config)
	if again := lsmod(); !sameLines(again, first) {
		t.Fatalf("after a restart:\n%s\nbefore:\n%s", again, first)
	}
	if again := d.run("cat", "/proc/hello/parameters/greeting").ok(t).stdout; again != params || strings.TrimSpace(params) != "bonjour" {
		t.Fatalf("hello's greeting after a restart: %q, before %q", again, params)
	}
	if out := d.run("cat", "/proc/mounts").ok(t).stdout; !strings.Contains(out, "none /data ramfs ") {
		t.Fatalf("/proc/mounts after a restart:\n%s", out)
	}
	d.stop()

	// A bad --config stops the start, naming the line and field.
	write(config, "[[module]]\nname = \"hello\"\ndigest = \"sha256:1\"\n")
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "--socket", filepath.Join(t.TempDir(), "sock"), "--config", config)
	cmd.Env = append(os.Environ(), "RACELESS_SOCKET=", "XDG_CACHE_HOME="+cacheHome)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	want := "serve: ERROR: cannot start: --config " + config + ": " + config + `:3: module[0].digest: "sha256:1" is not "sha256:" and 64 lowercase hex digits: invalid desired state` + "\n"
	if !errors.As(err, &ee) || ee.ExitCode() != 7 || !strings.HasSuffix(string(out), want) {
		t.Fatalf("serve with a bad --config: %v\n%s\nwant exit 7 and %q", err, out, want)
	}
}

// sameLines reports whether a and b hold the same lines in any order
// (lsmod lists modules newest first, and a replace makes an instance new).
func sameLines(a, b string) bool {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}
