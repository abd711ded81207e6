package main_test

// Filesystems from wasm modules through the command line and FUSE
// (issue 17): examples/wasm/memfs and the test module faultfs
// (wasm/wasmfs/testdata/faultfs), loaded with insmod into a real
// `serve --fuse` daemon, used by real processes.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/internal/testdeadline"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm"
)

// fuseDaemon starts a daemon exposing its namespace at a fresh directory
// through FUSE, and returns both.
func fuseDaemon(t *testing.T, extra ...string) (*daemon, string) {
	t.Helper()
	needFuse(t)
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return startDaemon(t, append([]string{"--fuse", dir}, extra...)...), dir
}

// metricsAddr returns the address of the daemon's metrics listener
// (--metrics-addr 127.0.0.1:0), from its ready line.
func (d *daemon) metricsAddr() string {
	d.t.Helper()
	var addr string
	re := regexp.MustCompile(`metrics=(127\.0\.0\.1:\d+)`)
	waitFor(d.t, "the ready line", func() bool {
		m := re.FindStringSubmatch(d.log.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	return addr
}

// metricKiB returns the value of the unlabelled metric name at the metrics
// address addr, divided by 1024.
func metricKiB(t *testing.T, addr, name string) int64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in the metrics:\n%s", name, body)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return int64(v) >> 10
}

// vmRSS returns the resident set of process pid in KiB (VmRSS of
// /proc/PID/status).
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// lsmodSize returns the Size column of module name in lsmod, -1 if it is
// not listed.
func (d *daemon) lsmodSize(name string) int64 {
	d.t.Helper()
	for _, l := range strings.Split(d.run("lsmod").ok(d.t).stdout, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == name {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				d.t.Fatalf("lsmod: %q", l)
			}
			return n
		}
	}
	return -1
}

// mountRefs returns the references of the mount at target (mount
// --json), -1 if nothing is mounted there.
func (d *daemon) mountRefs(target string) int64 {
	d.t.Helper()
	var ms []struct {
		Target control.Bytes
		Refs   int64
	}
	if err := json.Unmarshal([]byte(d.run("mount", "--json").ok(d.t).stdout), &ms); err != nil {
		d.t.Fatal(err)
	}
	refs := int64(-1)
	for _, m := range ms {
		if string(m.Target) == target {
			refs = m.Refs // the last one: the top of a stack
		}
	}
	return refs
}

// holder is a child process (sh) that opens a file on the FUSE mount as
// its descriptor 3 and holds it until told (a line on its stdin), then
// runs then (with the descriptor still open) and exits. Its stderr is
// the test's: then redirects what it checks.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func startHolder(t *testing.T, ctx context.Context, file, then string) *holder {
	t.Helper()
	script := `exec 3<"$1" || exit 1; echo open; read x; ` + then
	cmd := exec.CommandContext(ctx, "sh", "-c", script, "sh", file)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &holder{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(func() { h.stdin.Close(); h.cmd.Wait() })
	if line, err := h.out.ReadString('\n'); err != nil || line != "open\n" {
		t.Fatalf("the child did not open %s: %q, %v", file, line, err)
	}
	return h
}

// finish lets the child go on, and returns what it printed after "open"
// once it has exited.
func (h *holder) finish(t *testing.T) string {
	t.Helper()
	if _, err := io.WriteString(h.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	h.stdin.Close()
	rest, err := io.ReadAll(h.out)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Wait(); err != nil {
		t.Fatalf("child: %v (output %q)", err, rest)
	}
	return string(rest)
}

// TestWasmfsPinnedThroughCLI is the scenario through the command
// line: insmod memfs.wasm, mount -t memfs, 32 MiB written through FUSE,
// and a child process holding the file open. umount is busy (exit 5);
// rmmod refuses naming the mount (and the control error carries it in
// mounts); umount -l detaches at once; rmmod still refuses, naming the
// detached mount with its open file; the child exits, and rmmod --wait
// unloads at the release of the child's file. The daemon's Go heap in
// use (go_memstats_heap_inuse_bytes of --metrics-addr) and, without
// -race, its RSS fall back after the unload: the linear memory is
// returned. (The race detector's shadow memory of the heap is never
// returned, so with -race the RSS figures are only logged.)
func TestWasmfsPinnedThroughCLI(t *testing.T) {
	mod := wasmtest.Build(t, "examples/wasm/memfs")
	d, dir := fuseDaemon(t, "--metrics-addr", "127.0.0.1:0")
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	pid := d.cmd.Process.Pid
	maddr := d.metricsAddr()
	const heapMetric = "go_memstats_heap_inuse_bytes"
	rss0, heap0 := vmRSS(t, pid), metricKiB(t, maddr, heapMetric)

	d.run("insmod", mod).ok(t)
	d.run("mount", "-t", "memfs", "-o", "X-mount.mkdir", "none", "/m").ok(t)
	const dataSize = 32 << 20
	file := filepath.Join(dir, "m", "f")
	data := bytes.Repeat([]byte("0123456789abcdef"), dataSize/16)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatalf("write through FUSE: %v", err)
	}
	if size := d.lsmodSize("memfs"); size < dataSize {
		t.Fatalf("lsmod: memfs holds %d bytes of linear memory with a %d-byte file", size, dataSize)
	}
	h := startHolder(t, ctx, file, `exit 0`)
	rss1, heap1 := vmRSS(t, pid), metricKiB(t, maddr, heapMetric)

	d.run("umount", "/m").fails(t, 5, "umount: ERROR: umount /m: device or resource busy")
	d.run("rmmod", "memfs").fails(t, 5, "rmmod: ERROR: Module memfs is in use: mounted at /m")
	var we *control.Error
	_, err := control.Call(ctx, d.sock, &control.Request{Op: "unload", Name: "memfs"}, nil)
	if !errors.As(err, &we) || we.Code != "busy" || len(we.Mounts) != 1 || we.Mounts[0] != "/m" ||
		!strings.HasSuffix(we.Message, "; mounted at /m") {
		t.Fatalf("unload over the control socket: %#v, want code busy and mounts [/m]", err)
	}

	d.run("umount", "-l", "/m").ok(t)
	if refs := d.mountRefs("/m"); refs != -1 {
		t.Fatalf("/m still listed after umount -l (%d references)", refs)
	}
	d.run("rmmod", "memfs").fails(t, 5, "rmmod: ERROR: Module memfs is in use: mounted at /m (detached with open files: 1)")
	if d.lsmodSize("memfs") < 0 {
		t.Fatal("memfs unloaded while the child holds its file")
	}

	if out := h.finish(t); out != "" {
		t.Fatalf("child: %q", out)
	}
	// The kernel sends the child's RELEASE after its exit; the wait ends
	// at exactly the last reference's drop (or fails at the deadline).
	d.run("rmmod", "--wait", "memfs").ok(t)
	if d.lsmodSize("memfs") >= 0 {
		t.Fatal("memfs still listed after rmmod --wait")
	}
	rss2, heap2 := vmRSS(t, pid), metricKiB(t, maddr, heapMetric)
	t.Logf("daemon memory (KiB), race detector %v: before insmod heap %d, VmRSS %d; memfs mounted, %d KiB written through FUSE, the file held open: heap %d, VmRSS %d; after rmmod: heap %d, VmRSS %d",
		raceEnabled, heap0, rss0, dataSize>>10, heap1, rss1, heap2, rss2)
	for _, f := range []struct {
		what                  string
		before, during, after int64
		check                 bool
	}{{"Go heap in use", heap0, heap1, heap2, true}, {"RSS", rss0, rss1, rss2, !raceEnabled}} {
		if !f.check {
			continue
		}
		if grew := f.during - f.before; grew < dataSize>>10 {
			t.Errorf("the daemon's %s grew by %d KiB with %d KiB in the memfs", f.what, grew, dataSize>>10)
		}
		if kept := f.after - f.before; kept > (f.during-f.before)/2 {
			t.Errorf("after the unload the daemon keeps %d KiB of the %d KiB of %s the memfs took: want at most half", kept, f.during-f.before, f.what)
		}
	}
	d.run("lsmod").ok(t)
}

// TestWasmfsForcedThroughCLI: rmmod -f of memfs while a child holds a
// file open through FUSE: the child's next read fails ENODEV; the daemon
// answers commands, other mounts work through FUSE, new operations on
// the memfs mount fail ENODEV; once the child has exited umount works.
func TestWasmfsForcedThroughCLI(t *testing.T) {
	mod := wasmtest.Build(t, "examples/wasm/memfs")
	d, dir := fuseDaemon(t)
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	d.run("insmod", mod).ok(t)
	d.run("mount", "-t", "memfs", "-o", "X-mount.mkdir", "none", "/m").ok(t)
	d.run("mount", "-t", "ramfs", "-o", "X-mount.mkdir", "none", "/r").ok(t)
	file := filepath.Join(dir, "m", "f")
	if err := os.WriteFile(file, []byte("data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := startHolder(t, ctx, file, `cat <&3 2>&1; echo "rc=$?"`)

	d.run("rmmod", "-f", "memfs").ok(t)
	out := h.finish(t)
	if !strings.Contains(strings.ToLower(out), syscall.ENODEV.Error()) || !strings.HasSuffix(out, "rc=1\n") {
		t.Fatalf("the child's read after rmmod -f: %q, want %q and rc=1", out, syscall.ENODEV.Error())
	}
	if _, err := os.Stat(file); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("stat through FUSE after rmmod -f: %v, want ENODEV", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "m", "g"), []byte("x"), 0o644); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("create through FUSE after rmmod -f: %v, want ENODEV", err)
	}
	// The daemon and the other mounts are healthy.
	other := filepath.Join(dir, "r", "x")
	if err := os.WriteFile(other, []byte("still here"), 0o644); err != nil {
		t.Fatalf("write to another mount after rmmod -f: %v", err)
	}
	if b, err := os.ReadFile(other); err != nil || string(b) != "still here" {
		t.Fatalf("read of another mount after rmmod -f: %q, %v", b, err)
	}
	// R (8, TAINT_FORCED_RMMOD) besides E (8192: an unsigned module)
	if got := d.run("cat", "/proc/sys/kernel/tainted").ok(t).stdout; got != "8200\n" {
		t.Errorf("taint after rmmod -f: %q, want 8200 (R and E)", got)
	}
	if d.lsmodSize("memfs") >= 0 {
		t.Error("memfs listed after rmmod -f")
	}
	// The child's RELEASE comes after its exit: umount then works.
	waitFor(t, "the release of the child's file", func() bool { return d.mountRefs("/m") == 1 })
	d.run("umount", "/m").ok(t)
	d.run("umount", "/r").ok(t)
}

// TestWasmfsFaultThroughFUSE: a trap (faultfs's "trap") or a call past
// its deadline (its "spin", with the daemon's --call-timeout at 3 s, less
// than the 10 s default) in a read through FUSE fails the read with EIO
// within a bound;
// the instance is aborted and every later operation on the mount fails
// EIO; the daemon answers; umount and rmmod work.
func TestWasmfsFaultThroughFUSE(t *testing.T) {
	mod := wasmtest.Build(t, "wasm/wasmfs/testdata/faultfs")
	for _, name := range []string{"trap", "spin"} {
		t.Run(name, func(t *testing.T) {
			const callTimeout = 3 * time.Second
			d, dir := fuseDaemon(t, "--call-timeout", callTimeout.String())
			d.run("insmod", mod).ok(t)
			d.run("mount", "-t", "faultfs", "-o", "X-mount.mkdir", "none", "/x").ok(t)
			// A child reads, so that a hang would be killed, not the test's.
			const bound = 2 * time.Minute
			ctx, cancel := context.WithTimeout(context.Background(), bound)
			defer cancel()
			start := time.Now()
			out, err := exec.CommandContext(ctx, "cat", filepath.Join(dir, "x", name)).CombinedOutput()
			took := time.Since(start)
			if ctx.Err() != nil {
				t.Fatalf("cat of %s through FUSE did not end within %s", name, bound)
			}
			t.Logf("cat of %s through FUSE failed after %s: %s", name, took.Round(time.Millisecond), bytes.TrimSpace(out))
			if name == "spin" && (took < callTimeout || took >= wasm.DefaultCallTimeout) {
				t.Errorf("the spin failed after %s: want the --call-timeout of %s (not the default %s)", took, callTimeout, wasm.DefaultCallTimeout)
			}
			if err == nil || !strings.Contains(strings.ToLower(string(out)), syscall.EIO.Error()) {
				t.Fatalf("cat of %s through FUSE: %v %q, want an input/output error", name, err, out)
			}
			// Aborted: every later operation fails EIO, without running
			// the module (the spin would take the deadline again).
			start = time.Now()
			if _, err := os.ReadFile(filepath.Join(dir, "x", "trap")); !errors.Is(err, syscall.EIO) {
				t.Errorf("open of trap after the fault: %v, want EIO", err)
			}
			if _, err := os.Stat(filepath.Join(dir, "x", "nope")); !errors.Is(err, syscall.EIO) {
				t.Errorf("stat after the fault: %v, want EIO", err)
			}
			if _, err := os.ReadDir(filepath.Join(dir, "x")); !errors.Is(err, syscall.EIO) {
				t.Errorf("readdir after the fault: %v, want EIO", err)
			}
			t.Logf("three operations after the fault failed in %s", time.Since(start).Round(time.Millisecond))
			if !regexp.MustCompile(`(?m)^faultfs `).MatchString(d.run("lsmod").ok(t).stdout) {
				t.Error("faultfs not listed after the fault")
			}
			waitFor(t, "the release of cat's file", func() bool { return d.mountRefs("/x") == 1 })
			d.run("umount", "/x").ok(t)
			d.run("rmmod", "faultfs").ok(t)
		})
	}
}
