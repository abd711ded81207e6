package fusefs_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"github.com/raceless/raceless"
	ramfsmod "github.com/raceless/raceless/modules/ramfs"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/vfs/fusefs"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var ctx = context.Background()

// setup gives a host with a ramfs root and a "tmpfs" module (module
// "tmpmod") mounted at /mnt, exposed through FUSE at a temporary directory.
func setup(t *testing.T) (*raceless.Host, *vfs.Namespace, *fusefs.Server, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("FUSE tests need root (DirectMount)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	h := raceless.New()
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
		t.Skipf("cannot mount FUSE: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			// a test left something open: detach it like umount -l
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
			srv.Wait()
		}
		ms := ns.Mounts()
		for i := len(ms) - 1; i > 0; i-- {
			_ = ns.Unmount(ms[i].Target, vfs.MNT_DETACH)
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := h.Shutdown(sctx); err != nil {
			t.Error(err)
		}
	})
	return h, ns, srv, dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond (observing server-side state, never to synchronize
// with our own actions) until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
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
	cmd := exec.Command("sh", "-c", `exec 3<"$1"; read x; read y <&3; echo "$y"`, "sh", filepath.Join(dir, "mnt/held"))
	stdin, err := cmd.StdinPipe()
	must(t, err)
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	eventually(t, "the child's open", func() bool { return srv.OpenFiles() == 1 })

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
	buf := make([]byte, 64)
	n, _ := out.Read(buf)
	must(t, cmd.Wait())
	if string(buf[:n]) != "held data\n" {
		t.Fatalf("child read %q", buf[:n])
	}
	eventually(t, "the kernel's release", func() bool { return srv.OpenFiles() == 0 })
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

// skipPosix lists the go-fuse POSIX tests that cannot pass, and why.
var skipPosix = map[string]string{
	"XAttr":               "extended attributes are not implemented by the VFS",
	"XAttrLarge":          "extended attributes are not implemented by the VFS",
	"Fallocate":           "fallocate(2) is not implemented by the VFS (ENOTSUP is the correct answer)",
	"FallocateKeepSize":   "fallocate(2) is not implemented by the VFS (ENOTSUP is the correct answer)",
	"FcntlFlockLocksFile": "file locks are not implemented by the server (go-fuse EnableLocks off); the kernel's local locking does not give the conflict this test expects",
}

func TestPosix(t *testing.T) {
	_, ns, _, dir := setup(t)
	names := make([]string, 0, len(posixtest.All))
	for n := range posixtest.All {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		fn := posixtest.All[name]
		t.Run(name, func(t *testing.T) {
			if why, ok := skipPosix[name]; ok {
				t.Skip(why)
			}
			sub := "/mnt/" + name
			must(t, ns.Mkdir(sub, 0o755))
			fn(t, filepath.Join(dir, sub))
		})
	}
}
