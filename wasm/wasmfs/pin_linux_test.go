package wasmfs_test

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/testdeadline"
	ramfsmod "github.com/raceless/raceless/modules/ramfs"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/vfs/fusefs"
)

func needFuse(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("FUSE mounts need root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
}

// memFigures is the Go heap in use and the process's RSS, in KiB, after
// a collection.
func memFigures() (heapKiB, rssKiB int64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				rssKiB, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	return int64(ms.HeapInuse >> 10), rssKiB
}

// TestPinnedByChildThroughFUSE is the scenario: a child process
// holds a file of a memfs (a wasm module) open through FUSE; umount is
// busy and the unload refused; umount -l detaches at once; the module
// unloads when the child has exited and its file is released, and the
// instance's memory is returned.
func TestPinnedByChildThroughFUSE(t *testing.T) {
	needFuse(t)
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	heap0, rss0 := memFigures()

	h := quietHost()
	if _, err := h.Load(ctx, ramfsmod.Source(), nil); err != nil {
		t.Fatal(err)
	}
	if err := load(ctx, h, "examples/wasm/memfs"); err != nil {
		t.Fatal(err)
	}
	ns := vfs.NewNamespace(h)
	must(t, ns.Mount(ctx, "none", "/", "ramfs", ""))
	must(t, ns.Mkdir("/m", 0o755))
	must(t, ns.Mount(ctx, "none", "/m", "memfs", ""))
	// 32 MiB of file data, in the guest's linear memory.
	const dataSize = 32 << 20
	must(t, ns.WriteFile("/m/f", bytes.Repeat([]byte("x"), dataSize), 0o644))

	dir := t.TempDir()
	srv, err := fusefs.Mount(dir, ns.Proc, nil)
	if err != nil {
		t.Fatalf("cannot mount FUSE (as root, with /dev/fuse): %v", err)
	}
	defer func() {
		// the child's release, which an unmount would lose (a file
		// still open fails the wait at the deadline)
		if err := srv.WaitOpenFiles(ctx, 0); err != nil {
			t.Errorf("%d FUSE files still open at the end of the test", srv.OpenFiles())
		}
		if err := srv.Unmount(); err != nil {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
			srv.Wait()
		}
		if err := ns.Unmount("/", vfs.MNT_DETACH); err != nil {
			t.Errorf("umount -l /: %v", err)
		}
		if _, err := h.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()
	heap1, rss1 := memFigures()

	// The child opens the file, says so, and holds it until its stdin
	// closes.
	child := exec.CommandContext(ctx, "sh", "-c", `exec 3<"$1" && echo open && read x; exit 0`, "sh", filepath.Join(dir, "m", "f"))
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "open\n" {
		_ = stdin.Close()
		_ = child.Wait()
		t.Fatalf("child: %q, %v", line, err)
	}

	if err := ns.Unmount("/m", 0); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("umount /m with a file open by the child: %v, want EBUSY", err)
	}
	if err := h.Unload(ctx, "memfs", raceless.UnloadOptions{}); !errors.Is(err, raceless.ErrBusy) {
		t.Errorf("rmmod memfs with a file open: %v, want ErrBusy", err)
	} else {
		t.Logf("rmmod memfs refused: %v", err)
	}
	must(t, ns.Unmount("/m", vfs.MNT_DETACH))
	for _, m := range ns.Mounts() {
		if m.Target == "/m" {
			t.Errorf("/m still mounted after umount -l: %+v", m)
		}
	}
	if err := h.Unload(ctx, "memfs", raceless.UnloadOptions{}); !errors.Is(err, raceless.ErrBusy) {
		t.Errorf("rmmod memfs after umount -l, the file still open: %v, want ErrBusy", err)
	}

	_ = stdin.Close()
	if err := child.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	if err := srv.WaitOpenFiles(ctx, 0); err != nil {
		t.Fatalf("waiting for the child's file to be released: %v", err)
	}
	// The superblock goes with its last file: the unload waits for
	// exactly that (and fails at the test's deadline if it never comes).
	if err := h.Unload(ctx, "memfs", raceless.UnloadOptions{Wait: true}); err != nil {
		t.Fatalf("rmmod memfs after the child exited: %v", err)
	}
	heap2, rss2 := memFigures()
	t.Logf("memory (KiB): before load heap %d rss %d; loaded with %d KiB in a file: heap %d rss %d; after unload heap %d rss %d",
		heap0, rss0, dataSize>>10, heap1, rss1, heap2, rss2)
	if heap1-heap2 < dataSize>>10/2 {
		t.Errorf("the unload returned %d KiB of heap, want at least half the %d KiB the memfs held", heap1-heap2, dataSize>>10)
	}
}
