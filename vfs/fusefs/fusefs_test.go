//go:build linux

package fusefs_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/testdeadline"
	ramfsmod "github.com/raceless/raceless/modules/ramfs"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/vfs/fusefs"
	"github.com/raceless/raceless/vfs/internal/panicfs"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var ctx = context.Background()

// needFuse skips the test unless its preconditions hold: root (DirectMount)
// and /dev/fuse. Where they hold, as in CI, the FUSE tests must run: any
// later failure, the mount's included, fails the test.
func needFuse(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("FUSE tests need root (DirectMount)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
}

// setup gives a host with a ramfs root and a "tmpfs" module (module
// "tmpmod") mounted at /mnt, exposed through FUSE at a temporary directory.
func setup(t *testing.T, opts ...raceless.Option) (*raceless.Host, *vfs.Namespace, *fusefs.Server, string) {
	t.Helper()
	needFuse(t)
	h := raceless.New(opts...)
	for _, src := range []raceless.Source{ramfsmod.Source(), ramfsmod.SourceAs("tmpmod", "tmpfs")} {
		if _, err := h.Load(ctx, src, nil); err != nil {
			t.Fatal(err)
		}
	}
	ns := vfs.NewNamespace(h)
	must(t, ns.Mount(ctx, "none", "/", "ramfs", ""))
	must(t, ns.Mkdir("/mnt", 0o755))
	must(t, ns.Mount(ctx, "tmp", "/mnt", "tmpfs", ""))
	dir := t.TempDir()
	srv, err := fusefs.Mount(dir, ns.Proc, nil)
	if err != nil {
		// root with /dev/fuse: nothing excuses a failed mount
		t.Fatalf("cannot mount FUSE (as root, with /dev/fuse): %v", err)
	}
	t.Cleanup(func() {
		// the releases of the files the test closed, which an unmount
		// would lose (a file still open fails the wait at the deadline)
		ctx, cancel := testdeadline.Context(t)
		defer cancel()
		if err := srv.WaitOpenFiles(ctx, 0); err != nil {
			t.Errorf("%d FUSE files still open at the end of the test", srv.OpenFiles())
		}
		if err := srv.Unmount(); err != nil {
			// a test left something open: detach it like umount -l
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
			srv.Wait()
		}
		ms := ns.Mounts()
		for i := len(ms) - 1; i > 0; i-- {
			_ = ns.Unmount(ms[i].Target, vfs.MNT_DETACH)
		}
		sctx, cancel := testdeadline.Context(t)
		defer cancel()
		if _, err := h.Shutdown(sctx); err != nil {
			t.Error(err)
		}
	})
	return h, ns, srv, dir
}

// syncBuffer is a log the FUSE server's goroutines write while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// released waits until at most n FUSE files are open (the kernel sends
// RELEASE after close returns), failing the test at its deadline.
func released(t *testing.T, srv *fusefs.Server, n int64, what string) {
	t.Helper()
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	if err := srv.WaitOpenFiles(ctx, n); err != nil {
		t.Fatalf("gave up at the test's deadline waiting for %s (%d files open, want %d)", what, srv.OpenFiles(), n)
	}
}

func refs(h *raceless.Host, name string) int64 {
	m, ok := h.Module(name)
	if !ok {
		return -1
	}
	return m.Refs()
}

// TestProcessPinsModule: a child process holding a file open through FUSE
// makes umount and the module's unload fail busy; a lazy umount detaches
// the mount; when the process exits, the module unloads.
func TestProcessPinsModule(t *testing.T) {
	h, ns, srv, dir := setup(t)
	must(t, os.WriteFile(filepath.Join(dir, "mnt/held"), []byte("held data\n"), 0o644))
	// The child opens the file, says so on its stdout, then waits for a
	// line on its stdin before reading through the descriptor it holds.
	cmd := exec.Command("sh", "-c", `exec 3<"$1" || exit 1; echo opened; read x; read y <&3; echo "$y"`, "sh", filepath.Join(dir, "mnt/held"))
	stdin, err := cmd.StdinPipe()
	must(t, err)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	out := bufio.NewReader(stdout)
	// The child's open(2) returned, so its FUSE OPEN was answered and its
	// handle is counted. Our own write handle's RELEASE is asynchronous
	// (the kernel sends it after close returns): it may still be counted,
	// so wait until the child's handle is the only one.
	if line, err := out.ReadString('\n'); err != nil || line != "opened\n" {
		t.Fatalf("child: %q %v", line, err)
	}
	released(t, srv, 1, "our write handle's release (the child's open is the only one)")

	if err := ns.Unmount("/mnt", 0); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("umount with a process holding a file: %v", err)
	}
	if err := h.Unload(ctx, "tmpmod", raceless.UnloadOptions{}); !errors.Is(err, raceless.ErrBusy) {
		t.Fatalf("unload: %v", err)
	}
	must(t, ns.Unmount("/mnt", vfs.MNT_DETACH))
	if _, err := os.Stat(filepath.Join(dir, "mnt/held")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after lazy umount: %v", err)
	}
	if err := h.Unload(ctx, "tmpmod", raceless.UnloadOptions{}); !errors.Is(err, raceless.ErrBusy) {
		t.Fatalf("unload after detach: %v", err)
	}
	stdin.Close() // the child reads its file (still working) and exits
	got, _ := io.ReadAll(out)
	must(t, cmd.Wait())
	if string(got) != "held data\n" {
		t.Fatalf("child read %q", got)
	}
	released(t, srv, 0, "the kernel's release")
	if r := refs(h, "tmpmod"); r != 0 {
		t.Fatalf("tmpmod refs %d", r)
	}
	must(t, h.Unload(ctx, "tmpmod", raceless.UnloadOptions{}))
}

// TestMountChangesVisible: the kernel never caches what a mount hides.
func TestMountChangesVisible(t *testing.T) {
	_, ns, _, dir := setup(t)
	must(t, os.WriteFile(filepath.Join(dir, "mnt/a"), []byte("a"), 0o644))
	must(t, os.Mkdir(filepath.Join(dir, "other"), 0o755))
	// rename across internal mounts: EXDEV, as the VFS says
	err := os.Rename(filepath.Join(dir, "mnt/a"), filepath.Join(dir, "other/a"))
	if !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("rename across mounts: %v", err)
	}
	if err := os.Link(filepath.Join(dir, "mnt/a"), filepath.Join(dir, "other/a")); !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("link across mounts: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "mnt/a")); err != nil {
		t.Fatal(err)
	}
	must(t, ns.Mount(ctx, "over", "/mnt", "ramfs", ""))
	if _, err := os.Stat(filepath.Join(dir, "mnt/a")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stacked mount not visible: %v", err)
	}
	must(t, ns.Unmount("/mnt", 0))
	must(t, ns.Move("/mnt", "/other"))
	if b, err := os.ReadFile(filepath.Join(dir, "other/a")); err != nil || string(b) != "a" {
		t.Fatalf("after move: %q %v", b, err)
	}
	if err := os.Remove(filepath.Join(dir, "other")); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("rmdir of a mount point: %v", err)
	}
}

// TestPanicReturnsEIO: a filesystem whose read panics, read through FUSE by
// another process: the process gets EIO, the module is tainted and named
// in the host's log, and the FUSE server and the mount stay up (the same
// file reads again once the module stops panicking; other filesystems
// were never affected).
func TestPanicReturnsEIO(t *testing.T) {
	var log syncBuffer
	h, ns, srv, dir := setup(t, raceless.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	src, trap := panicfs.Source("panicmod", "panicfs")
	inst, err := h.Load(ctx, src, nil)
	must(t, err)
	must(t, ns.Mkdir("/boom", 0o755))
	must(t, ns.Mount(ctx, "none", "/boom", "panicfs", ""))
	f := filepath.Join(dir, "boom/f")
	must(t, os.WriteFile(f, []byte("boom data\n"), 0o644))

	trap.Arm("read")
	out, err := exec.Command("cat", f).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(string(out), "Input/output error") {
		t.Fatalf("cat of a panicking file: %v, %q", err, out)
	}
	if _, err := os.ReadFile(f); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of a panicking file: %v", err)
	}
	trap.Disarm()
	if ts := inst.Taints(); len(ts) == 0 || ts[0] != "panic in filesystem panicfs read: "+panicfs.Value("read") {
		t.Fatalf("taints %q", ts)
	}
	if want := `level=WARN msg="module tainted" module=panicmod flag=D reason="panic in filesystem panicfs read: panicfs: read"`; !strings.Contains(log.String(), want) {
		t.Fatalf("the host's log lacks %s:\n%s", want, log.String())
	}
	if b, err := exec.Command("cat", f).Output(); err != nil || string(b) != "boom data\n" {
		t.Fatalf("after the panics: %q %v", b, err)
	}
	must(t, os.WriteFile(filepath.Join(dir, "mnt/other"), []byte("x"), 0o644))
	if b, err := os.ReadFile(filepath.Join(dir, "mnt/other")); err != nil || string(b) != "x" {
		t.Fatalf("another filesystem: %q %v", b, err)
	}
	released(t, srv, 0, "the kernel's releases")
	must(t, ns.Unmount("/boom", 0))
	must(t, h.Unload(ctx, "panicmod", raceless.UnloadOptions{}))
}

// TestNamesAreBytes: names from the kernel reach the VFS byte for byte, and
// back: two names differing in one byte that is not UTF-8 stay two files,
// two directories and two mount points.
func TestNamesAreBytes(t *testing.T) {
	_, ns, srv, dir := setup(t)
	must(t, os.WriteFile(filepath.Join(dir, "n\xff"), []byte("ff"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "n\xfe"), []byte("fe"), 0o644))
	for name, want := range map[string]string{"/n\xff": "ff", "/n\xfe": "fe"} {
		if b, err := ns.ReadFile(name); err != nil || string(b) != want {
			t.Fatalf("VFS %q: %q %v", name, b, err)
		}
	}
	if _, err := ns.Stat("/n\uFFFD"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("U+FFFD name: %v", err)
	}
	must(t, os.Rename(filepath.Join(dir, "n\xff"), filepath.Join(dir, "r\xff")))
	must(t, ns.Mkdir("/d\xff", 0o755))
	must(t, ns.Mkdir("/d\xfe", 0o755))
	must(t, ns.Mount(ctx, "m\xff", "/d\xff", "ramfs", ""))
	must(t, os.WriteFile(filepath.Join(dir, "d\xff", "x"), []byte("x"), 0o644))
	ents, err := os.ReadDir(dir)
	must(t, err)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	sort.Strings(got)
	if want := []string{"d\xfe", "d\xff", "mnt", "n\xfe", "r\xff"}; strings.Join(got, "/") != strings.Join(want, "/") {
		t.Fatalf("readdir through FUSE: %q, want %q", got, want)
	}
	if sub, err := os.ReadDir(filepath.Join(dir, "d\xfe")); err != nil || len(sub) != 0 {
		t.Fatalf("d\\xfe: %v %v", sub, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "r\xff")); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("readlink of a file: %q %v", l, err)
	}
	must(t, os.Symlink("d\xff/x", filepath.Join(dir, "s\xff")))
	if l, err := ns.Readlink("/s\xff"); err != nil || l != "d\xff/x" {
		t.Fatalf("symlink target in the VFS: %q %v", l, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "s\xff")); err != nil || string(b) != "x" {
		t.Fatalf("through the symlink: %q %v", b, err)
	}
	if err := ns.Unmount("/d\xfe", 0); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("umount of the other name: %v", err)
	}
	// the kernel sends RELEASE after close returns
	released(t, srv, 0, "the kernel's releases")
	must(t, ns.Unmount("/d\xff", 0))
}
