package wasmfs_test

import (
	"errors"
	"syscall"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/testdeadline"
	ramfsmod "github.com/raceless/raceless/modules/ramfs"
	"github.com/raceless/raceless/vfs"
)

// TestForcedUnload: a forced unload of memfs with a file open tears the
// instance down; every later operation on the file and the mount fails
// with ENODEV, the close succeeds, and the mount can be unmounted.
func TestForcedUnload(t *testing.T) {
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
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
	must(t, ns.WriteFile("/m/f", []byte("data"), 0o644))
	f, err := ns.Open("/m/f", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Unload(ctx, "memfs", raceless.UnloadOptions{Force: true}); err != nil {
		t.Fatalf("rmmod -f memfs: %v", err)
	}
	if _, err := f.Read(make([]byte, 4)); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("read after the forced unload: %v, want ENODEV", err)
	}
	if _, err := ns.Stat("/m/f"); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("stat after the forced unload: %v, want ENODEV", err)
	}
	if err := ns.WriteFile("/m/g", []byte("x"), 0o644); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("create after the forced unload: %v, want ENODEV", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("close after the forced unload: %v", err)
	}
	must(t, ns.Unmount("/m", 0))
	must(t, ns.Unmount("/", vfs.MNT_DETACH))
	if _, err := h.Shutdown(ctx); err != nil {
		t.Error(err)
	}
}
