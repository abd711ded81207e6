package main_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/raceless/raceless/internal/testdeadline"
)

// startDaemonAt is startDaemon on a given socket path, where a file may
// already be (a stale socket): it waits for the daemon's ready line, not
// for the socket file.
func startDaemonAt(t *testing.T, sock string, extra ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, dir: filepath.Dir(sock), sock: sock, log: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(bin, append([]string{"serve", "--socket", sock, "--log-level", "debug"}, extra...)...)
	d.cmd.Stderr = d.log
	d.cmd.Env = append(os.Environ(), "RACELESS_SOCKET=", "XDG_CACHE_HOME="+cacheHome)
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.waitEr = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() { d.stop() })
	waitFor(t, "the daemon's ready line", func() bool {
		select {
		case <-d.done:
			t.Fatalf("daemon exited early: %v\n%s", d.waitEr, d.log.String())
		default:
		}
		return strings.Contains(d.log.String(), "raceless daemon ready")
	})
	return d
}

// kill9 kills the daemon as a crash would (SIGKILL: no cleanup at all).
func (d *daemon) kill9() {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		d.t.Fatal(err)
	}
	<-d.done
}

// serveFails runs `raceless serve --socket sock extra...`, which must fail
// at once, and returns its exit status and the last line of its output
// (the error; the log lines of the start-up and shutdown come before it).
func serveFails(t *testing.T, sock string, extra ...string) (int, string) {
	t.Helper()
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"serve", "--socket", sock}, extra...)...)
	cmd.Env = append(os.Environ(), "RACELESS_SOCKET=", "XDG_CACHE_HOME="+cacheHome)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("serve %v was still running at the test's deadline (it should have failed at once)\n%s", extra, out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("serve %v: %v (it should have failed)\n%s", extra, err, out)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(out), "\n"), "\n")
	return ee.ExitCode(), lines[len(lines)-1] + "\n"
}

// Something that is not a socket at the socket path is reported as what it
// is (and left alone), not as "address already in use"; a stale socket
// file, left by a daemon killed with SIGKILL, is replaced.
func TestServeSocketPath(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "sock")
	if err := os.WriteFile(sock, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := serveFails(t, sock)
	if want := "serve: ERROR: cannot start: " + sock + " exists and is not a socket (a regular file)\n"; code != 4 || out != want {
		t.Fatalf("serve over a regular file: exit %d, output %q; want exit 4, %q", code, out, want)
	}
	if data, err := os.ReadFile(sock); err != nil || string(data) != "mine" {
		t.Fatalf("the regular file was touched: %q %v", data, err)
	}

	sock = filepath.Join(t.TempDir(), "sock")
	d := startDaemonAt(t, sock)
	d.kill9()
	if st, err := os.Lstat(sock); err != nil || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("no stale socket after SIGKILL to test with: %v", err)
	}
	d = startDaemonAt(t, sock)
	if got := d.run("ping").ok(t).stdout; !strings.HasPrefix(got, "raceless daemon pid ") {
		t.Fatalf("ping after the restart: %q", got)
	}
	// A live daemon's socket is not replaced.
	code, out = serveFails(t, sock)
	if code == 0 || !strings.Contains(out, "a daemon is already listening on this socket") {
		t.Fatalf("a second daemon on a live socket: exit %d, %q", code, out)
	}
}

// needFuse skips the test unless FUSE mounts can be made here, as
// vfs/fusefs's tests decide: root (go-fuse's DirectMount) and /dev/fuse.
func needFuse(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("FUSE tests need root (DirectMount)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
}

// After `kill -9` of `serve --fuse DIR`, the dead FUSE mount left at DIR
// is detached by the next `serve --fuse DIR`, which says so and serves.
func TestFuseRestartAfterKill(t *testing.T) {
	needFuse(t)
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "sock")
	d := startDaemonAt(t, sock, "--fuse", dir)
	if _, err := os.ReadFile(filepath.Join(dir, "proc", "modules")); err != nil {
		t.Fatalf("/proc/modules through FUSE: %v", err)
	}
	d.kill9()
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) }) // if the test fails before the restart
	if _, err := os.Stat(dir); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after SIGKILL, stat of the FUSE directory: %v; want ENOTCONN (a dead FUSE mount)", err)
	}
	d = startDaemonAt(t, sock, "--fuse", dir)
	if log := d.log.String(); !strings.Contains(log, `msg="detached a stale FUSE mount left by a daemon that died" dir=`+dir+" type=fuse.raceless source=raceless") {
		t.Fatalf("the restart did not say it detached the stale mount:\n%s", log)
	}
	if mods, err := os.ReadFile(filepath.Join(dir, "proc", "modules")); err != nil || !strings.Contains(string(mods), "procfs ") {
		t.Fatalf("/proc/modules through FUSE after the restart: %q %v", mods, err)
	}
}

// A mount at the FUSE directory that is not raceless's is refused with one
// line naming its type and source, and left alone.
func TestFuseRefusesForeignMount(t *testing.T) {
	needFuse(t)
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("racelesstest", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("cannot mount a tmpfs to test with: %v", err)
	}
	t.Cleanup(func() {
		syscall.Unmount(dir, syscall.MNT_DETACH) // a FUSE mount over it, if serve ever made one
		syscall.Unmount(dir, syscall.MNT_DETACH)
	})
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := serveFails(t, filepath.Join(t.TempDir(), "sock"), "--fuse", dir)
	want := "serve: ERROR: cannot start: --fuse " + dir + ": " + dir + " is already a mount point (type tmpfs, source racelesstest), not a raceless FUSE mount: unmount it or choose another directory: device or resource busy\n"
	if code != 5 || out != want {
		t.Fatalf("serve --fuse over a tmpfs: exit %d, output %q; want exit 5, %q", code, out, want)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(data) != "x" {
		t.Fatalf("the tmpfs was touched: %q %v", data, err)
	}
}
