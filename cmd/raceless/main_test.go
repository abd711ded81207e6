package main_test

// End-to-end tests: the real binary, a real daemon per test (a child
// process), real unix sockets. Nothing is mocked.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/raceless/raceless/internal/testdeadline"
	"go.uber.org/goleak"
)

var (
	binDir string // holds the binary and its links; mode 0755 so that other uids can run it
	bin    string
	// cacheHome is the daemons' XDG_CACHE_HOME: their default compilation
	// cache, shared by the tests (never the user's), as it is shared by
	// the daemons of one user.
	cacheHome string
)

var links = []string{"insmod", "rmmod", "lsmod", "modprobe", "modinfo", "depmod", "mount", "umount"}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	var err error
	binDir, err = os.MkdirTemp("", "raceless-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(binDir)
	os.Chmod(binDir, 0o755)
	bin = filepath.Join(binDir, "raceless")
	cacheHome = filepath.Join(binDir, "cache")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	for _, l := range links {
		if err := os.Symlink("raceless", filepath.Join(binDir, l)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	// A race-enabled child sleeps 1s at exit by default (atexit_sleep_ms);
	// a race it detects makes it exit 66, which the tests see.
	os.Setenv("GORACE", "atexit_sleep_ms=0 exitcode=66")
	// The tests' daemons serve no HTTP (and so do not load the default
	// route module, whose line every lsmod would show) unless a test asks:
	// the documents' daemons (docs_test.go) and TestServeHTTP serve it on
	// a port of their own, as tests run in parallel.
	os.Setenv("RACELESS_HTTP", "off")
	code := m.Run()
	if code == 0 {
		// Every child process was waited for, every helper goroutine ended.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}

// syncBuffer collects a child's stderr while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type daemon struct {
	t      *testing.T
	dir    string
	sock   string
	cmd    *exec.Cmd
	log    *syncBuffer
	done   chan struct{}
	waitEr error
}

// startDaemon runs `raceless serve --socket DIR/sock extra...` and waits
// (polling, with a deadline that fails the test) for the socket to appear.
// Cleanup stops it with SIGTERM and checks that it shut down cleanly.
func startDaemon(t *testing.T, extra ...string) *daemon {
	t.Helper()
	return startDaemonEnv(t, []string{"XDG_CACHE_HOME=" + cacheHome}, extra...)
}

// startDaemonEnv is startDaemon with env added to the daemon's environment.
func startDaemonEnv(t *testing.T, env []string, extra ...string) *daemon {
	t.Helper()
	dir := t.TempDir()
	d := &daemon{t: t, dir: dir, sock: filepath.Join(dir, "sock"), log: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(bin, append([]string{"serve", "--socket", d.sock, "--log-level", "debug"}, extra...)...)
	d.cmd.Stderr = d.log
	d.cmd.Env = append(append(os.Environ(), "RACELESS_SOCKET="), env...)
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.waitEr = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() { d.stop() })
	waitFor(t, "daemon socket "+d.sock, func() bool {
		select {
		case <-d.done:
			t.Fatalf("daemon exited early: %v\n%s", d.waitEr, d.log.String())
		default:
		}
		st, err := os.Stat(d.sock)
		return err == nil && st.Mode()&os.ModeSocket != 0
	})
	return d
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop() {
	d.t.Helper()
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	ctx, cancel := testdeadline.Context(d.t)
	defer cancel()
	select {
	case <-d.done:
	case <-ctx.Done():
		d.cmd.Process.Kill()
		<-d.done
		d.t.Errorf("daemon did not stop after SIGTERM by the test's deadline\n%s", d.log.String())
		return
	}
	if d.waitEr != nil {
		d.t.Errorf("daemon exit: %v\n%s", d.waitEr, d.log.String())
	}
	if !strings.Contains(d.log.String(), "shutdown complete") {
		d.t.Errorf("daemon log lacks \"shutdown complete\":\n%s", d.log.String())
	}
}

// waitFor polls cond every 10ms until it holds, failing the test at the
// test's deadline (see testdeadline.Deadline): how long something takes on a loaded
// machine is not the test's business, only that it happens.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	start := time.Now()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("gave up at the test's deadline, after %s, waiting for %s", time.Since(start).Round(time.Millisecond), what)
		}
	}
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs the binary (argv[0] = prog, a link name or "raceless") against
// the daemon, through RACELESS_SOCKET.
func (d *daemon) runAs(prog string, args ...string) result {
	d.t.Helper()
	return runCmd(d.t, d.sock, nil, prog, args...)
}

func (d *daemon) run(args ...string) result {
	d.t.Helper()
	return runCmd(d.t, d.sock, nil, "raceless", args...)
}

func runCmd(t *testing.T, sock string, attr *syscall.SysProcAttr, prog string, args ...string) result {
	t.Helper()
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, prog), args...)
	cmd.Env = append(os.Environ(), "RACELESS_SOCKET="+sock)
	cmd.SysProcAttr = attr
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		if ctx.Err() != nil {
			t.Fatalf("%s %v: killed at the test's deadline: %v\nstdout: %s\nstderr: %s", prog, args, err, out.String(), errb.String())
		}
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s %v: %v", prog, args, err)
		}
		code = ee.ExitCode()
	}
	return result{out.String(), errb.String(), code}
}

// ok fails the test unless r succeeded.
func (r result) ok(t *testing.T) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q, stdout %q", r.code, r.stderr, r.stdout)
	}
	return r
}

// fails checks the exit status and the exact single stderr line.
func (r result) fails(t *testing.T, code int, line string) {
	t.Helper()
	if r.code != code || r.stderr != line+"\n" {
		t.Fatalf("got exit %d, stderr %q; want exit %d, stderr %q", r.code, r.stderr, code, line+"\n")
	}
}
