package main_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const (
	lsmodHeader = "Module                  Size  Used by\n"
	// ramfsLine ends every lsmod: ramfs and procfs are loaded first at
	// boot, and each holds one reference for its mount (/ and /proc).
	ramfsLine = "procfs                     0  1\n" + "ramfs                      0  1\n"
)

func TestLsmodByteExact(t *testing.T) {
	d := startDaemon(t)
	if got, want := d.run("lsmod").ok(t).stdout, lsmodHeader+"hello                   4096  0\n"+ramfsLine; got != want {
		t.Fatalf("lsmod:\n%q\nwant\n%q", got, want)
	}
	d.run("modprobe", "hello_consumer").ok(t)
	want := lsmodHeader +
		"hello_consumer          2048  0\n" +
		"hello                   4096  1 hello_consumer\n" + ramfsLine
	if got := d.runAs("lsmod").ok(t).stdout; got != want {
		t.Fatalf("lsmod:\n%q\nwant\n%q", got, want)
	}
	var mods []struct {
		Name    string   `json:"name"`
		Refs    int64    `json:"refs"`
		Holders []string `json:"holders"`
		State   string   `json:"state"`
	}
	if err := json.Unmarshal([]byte(d.run("lsmod", "--json").ok(t).stdout), &mods); err != nil {
		t.Fatal(err)
	}
	if len(mods) != 4 || mods[1].Name != "hello" || mods[1].Refs != 1 || mods[1].Holders[0] != "hello_consumer" || mods[1].State != "live" {
		t.Fatalf("lsmod --json: %+v", mods)
	}
}

func TestRmmod(t *testing.T) {
	d := startDaemon(t)
	d.run("modprobe", "hello_consumer").ok(t)
	d.run("rmmod", "hello").fails(t, 5, "rmmod: ERROR: Module hello is in use by: hello_consumer")
	d.runAs("rmmod", "nope").fails(t, 3, "rmmod: ERROR: Module nope is not currently loaded")
	d.run("rmmod").fails(t, 2, "rmmod: ERROR: missing module name (usage: rmmod [-f|--force] [-w|--wait[=DURATION]] [-v] NAME ... | rmmod -a)")
	d.run("rmmod", "--bogus", "hello").fails(t, 2, "rmmod: ERROR: unrecognized option '--bogus' (usage: rmmod [-f|--force] [-w|--wait[=DURATION]] [-v] NAME ... | rmmod -a)")
	d.runAs("rmmod", "hello_consumer").ok(t)
	d.runAs("rmmod", "hello").ok(t)
	if got := d.run("lsmod").ok(t).stdout; got != lsmodHeader+ramfsLine {
		t.Fatalf("lsmod after rmmod: %q", got)
	}
}

// holdRef starts `raceless call hello_sleep 600000` (a call that holds a
// reference on hello until cancelled) and waits until lsmod shows it.
func holdRef(t *testing.T, d *daemon, line ...string) (release func()) {
	t.Helper()
	cmd := exec.Command(bin, "call", "hello_sleep", "600000")
	cmd.Env = append(os.Environ(), "RACELESS_SOCKET="+d.sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	release = func() {
		cmd.Process.Kill()
		<-done
	}
	t.Cleanup(release)
	want := "hello                   4096  1"
	if len(line) > 0 {
		want = line[0]
	}
	waitFor(t, "hello to hold a reference", func() bool {
		return strings.Contains(d.run("lsmod").ok(t).stdout, "\n"+want+"\n")
	})
	return release
}

func TestRmmodWaitAndForce(t *testing.T) {
	d := startDaemon(t)
	release := holdRef(t, d)
	d.run("rmmod", "hello").fails(t, 5, "rmmod: ERROR: Module hello is in use")
	r := d.run("rmmod", "-v", "--wait=300ms", "hello")
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if r.code != 5 || len(lines) < 2 || lines[0] != "rmmod: waiting for hello: 1 references" ||
		lines[len(lines)-1] != "rmmod: ERROR: Module hello is in use: timed out after 300ms with 1 references held" {
		t.Fatalf("rmmod --wait: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	// The cancelled wait restored the module: still live, still counted.
	if got := d.run("lsmod").ok(t).stdout; got != lsmodHeader+"hello                   4096  1\n"+ramfsLine {
		t.Fatalf("after a timed-out wait: %q", got)
	}
	// A wait with no deadline ends when the reference goes: release it
	// once the wait is reported as begun.
	cmd := exec.Command(bin, "rmmod", "-v", "-w", "hello")
	cmd.Env = append(os.Environ(), "RACELESS_SOCKET="+d.sock)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rmmod -w to report progress", func() bool {
		return strings.Contains(stderr.String(), "rmmod: waiting for hello: 1 references")
	})
	release()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("rmmod -w: %v\n%s", err, stderr.String())
	}
	if got := d.run("lsmod").ok(t).stdout; got != lsmodHeader+ramfsLine {
		t.Fatalf("after rmmod -w: %q", got)
	}

	// --force unloads with a reference held, and taints the host: in
	// ping's plain line and JSON, and /proc/sys/kernel/tainted's way.
	if got := d.run("ping").ok(t).stdout; !strings.HasSuffix(got, " tainted 0\n") {
		t.Fatalf("ping of an untainted daemon: %q", got)
	}
	d.run("modprobe", "hello").ok(t)
	holdRef(t, d)
	d.run("rmmod", "--force", "hello").ok(t)
	var ping struct {
		Tainted    uint64   `json:"tainted"`
		TaintFlags string   `json:"taint_flags"`
		Taints     []string `json:"taints"`
	}
	if err := json.Unmarshal([]byte(d.run("ping", "--json").ok(t).stdout), &ping); err != nil {
		t.Fatal(err)
	}
	if len(ping.Taints) == 0 || ping.Tainted != 8 || ping.TaintFlags != "R" {
		t.Fatalf("forced unload: ping says %+v, want tainted 8 (R) with a reason", ping)
	}
	if got := d.run("ping").ok(t).stdout; !strings.HasSuffix(got, " tainted 8 (R)\n") {
		t.Fatalf("ping after a forced unload: %q", got)
	}
	if got := d.run("cat", "/proc/sys/kernel/tainted").ok(t).stdout; got != "8\n" {
		t.Fatalf("/proc/sys/kernel/tainted: %q", got)
	}
}

func TestModprobe(t *testing.T) {
	d := startDaemon(t)
	d.run("modprobe", "--first-time", "hello").fails(t, 4, "modprobe: ERROR: could not insert 'hello': Module already in kernel")
	d.run("modprobe", "hello").ok(t) // already loaded: success
	d.run("modprobe", "-r", "hello").ok(t)
	d.run("modprobe", "-r", "hello").fails(t, 3, "modprobe: FATAL: Module hello is not in kernel.")
	if got := d.run("modprobe", "-n", "greeter").ok(t).stdout; got != "builtin hello\n" {
		t.Fatalf("modprobe -n greeter: %q", got)
	}
	if got := d.run("lsmod").ok(t).stdout; got != lsmodHeader+ramfsLine {
		t.Fatalf("dry run loaded something: %q", got)
	}
	// An alias resolves to its module, with parameters.
	d.runAs("modprobe", "greeter", "greeting=Salut").ok(t)
	d.run("modprobe", "hello", "bogus=1").ok(t) // already loaded: parameters not checked, as kmod
	d.run("rmmod", "hello").ok(t)
	d.run("modprobe", "hello", "bogus=1").fails(t, 7, `modprobe: ERROR: could not insert 'hello': param hello: unknown parameter "bogus": invalid argument`)
	d.run("modprobe", "nope").fails(t, 3, "modprobe: FATAL: Module nope not found.")
	if r := d.run("modprobe", "-q", "nope"); r.code != 3 || r.stderr != "" {
		t.Fatalf("modprobe -q nope: exit %d, stderr %q; want exit 3 and nothing said", r.code, r.stderr)
	}
	if r := d.run("modprobe", "-q", "-r", "nope"); r.code != 3 || r.stderr != "" {
		t.Fatalf("modprobe -q -r nope: exit %d, stderr %q; want exit 3 and nothing said", r.code, r.stderr)
	}
	d.run("modprobe", "").fails(t, 3, "modprobe: FATAL: empty module name")
	// Dependencies: hello_consumer pulls in hello; -r removes the module,
	// then its dependencies that became unused.
	if got := d.run("modprobe", "-v", "hello_consumer").ok(t).stdout; got != "builtin hello\nbuiltin hello_consumer\n" {
		t.Fatalf("modprobe -v: %q", got)
	}
	d.run("modprobe", "-r", "hello").fails(t, 5, "modprobe: FATAL: Module hello is in use.")
	if got := d.run("modprobe", "-r", "-v", "hello_consumer").ok(t).stdout; got != "rmmod hello_consumer\nrmmod hello\n" {
		t.Fatalf("modprobe -r -v: %q", got)
	}
	if got := d.run("lsmod").ok(t).stdout; got != lsmodHeader+ramfsLine {
		t.Fatalf("after modprobe -r: %q", got)
	}
}

func TestModinfo(t *testing.T) {
	d := startDaemon(t)
	want := "" +
		"filename:       (builtin)\n" +
		"name:           hello\n" +
		"version:        1.0.0\n" +
		"license:        Apache-2.0\n" +
		"description:    Example native module: a parameter, a symbol and a hook\n" +
		"author:         The raceless authors\n" +
		"depends:        \n" +
		"alias:          symbol:hello_greet\n" +
		"alias:          hello-*\n" +
		"alias:          greeter\n" +
		"parm:           greeting:what the module says (string)\n" +
		"parm:           repeat:how many times the hook says it (int)\n"
	if got := d.runAs("modinfo", "hello").ok(t).stdout; got != want {
		t.Fatalf("modinfo hello:\n%s\nwant:\n%s", got, want)
	}
	d.run("rmmod", "hello").ok(t)
	if got := d.run("modinfo", "greeter").ok(t).stdout; got != want { // not loaded, found by alias
		t.Fatalf("modinfo greeter:\n%s", got)
	}
	if got := d.run("modinfo", "-F", "alias", "hello").ok(t).stdout; got != "symbol:hello_greet\nhello-*\ngreeter\n" {
		t.Fatalf("modinfo -F alias: %q", got)
	}
	if got := d.run("modinfo", "-F", "depends", "hello_consumer").ok(t).stdout; got != "hello\n" {
		t.Fatalf("modinfo -F depends: %q", got)
	}
	d.run("modinfo", "nope").fails(t, 3, "modinfo: ERROR: Module nope not found.")
	d.run("modinfo", "./nope.wasm").fails(t, 3, "modinfo: ERROR: Module ./nope.wasm not found.")
}

func TestCallAndHooks(t *testing.T) {
	d := startDaemon(t)
	d.run("hook", "hello", "world").ok(t)
	// The daemon logs before it answers, but its stderr reaches d.log
	// through a pipe and a copying goroutine: wait for the line.
	waitFor(t, "the hook's log line with the module's name", func() bool {
		return strings.Contains(d.log.String(), `msg="Hello, world" module=hello repeat=1`)
	})
	if got := d.run("call", "hello_greet", "2", "3").ok(t).stdout; got != "1 5\n" {
		t.Fatalf("call: %q", got)
	}
	d.run("call", "nope").fails(t, 3, "call: ERROR: acquire nope: symbol: not found")
}

func TestNoDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	r := runCmd(t, sock, nil, "lsmod")
	if r.code != 8 || !strings.HasPrefix(r.stderr, "lsmod: ERROR: cannot connect to the raceless daemon at "+sock) || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("lsmod without a daemon: exit %d, %q", r.code, r.stderr)
	}
	r = runCmd(t, sock, nil, "raceless", "frobnicate")
	r.fails(t, 2, `raceless: ERROR: unknown command "frobnicate" (see raceless --help)`)
}

// TestPeerCredentials: a client running as another uid is refused by the
// daemon's SO_PEERCRED check. The test relaxes the socket's mode (and its
// directory's) first, so that the refusal provably comes from the uid
// check and not from file permissions: the two refusals have different
// messages, and both are shown.
func TestPeerCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	d := startDaemon(t)
	st, err := os.Stat(d.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", st.Mode().Perm())
	}
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	os.Chmod(d.dir, 0o755)
	os.Chmod(filepath.Dir(d.dir), 0o755)
	// 1. File permissions refuse first (connect fails with EACCES).
	r := runCmd(t, d.sock, nobody, "lsmod")
	if r.code != 6 || !strings.Contains(r.stderr, "cannot connect") || !strings.Contains(r.stderr, "permission denied") {
		t.Fatalf("uid 65534 with mode 0600: exit %d, %q", r.code, r.stderr)
	}
	// 2. With the file open to all, the daemon's uid check refuses.
	if err := os.Chmod(d.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	r = runCmd(t, d.sock, nobody, "lsmod")
	r.fails(t, 6, "lsmod: ERROR: permission denied: peer uid 65534 is not the daemon's owner (uid 0)")
	runCmd(t, d.sock, nobody, "rmmod", "hello").fails(t, 6, "rmmod: ERROR: permission denied: peer uid 65534 is not the daemon's owner (uid 0)")
	d.run("lsmod").ok(t) // the owner still can
	if !strings.Contains(d.run("lsmod").ok(t).stdout, "hello") {
		t.Fatal("hello was unloaded by a refused client")
	}
}

// Without demand loading, modprobe still loads a module's dependencies
// itself (as kmod's modprobe does), and -r removes them again.
func TestModprobeDepsWithoutAutoload(t *testing.T) {
	d := startDaemon(t, "--no-autoload")
	d.run("rmmod", "hello").ok(t)
	if got := d.run("modprobe", "-n", "hello_consumer").ok(t).stdout; got != "builtin hello\nbuiltin hello_consumer\n" {
		t.Fatalf("modprobe -n: %q", got)
	}
	d.run("modprobe", "hello_consumer").ok(t)
	d.run("modprobe", "-r", "hello_consumer").ok(t)
	if got := d.run("lsmod").ok(t).stdout; got != lsmodHeader+ramfsLine {
		t.Fatalf("lsmod: %q", got)
	}
}
