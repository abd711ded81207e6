package wasmfs_test

import (
	"context"
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/testdeadline"
	"github.com/raceless/raceless/internal/wasmtest"
	ramfsmod "github.com/raceless/raceless/modules/ramfs"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/wasm"
)

// TestFault: a trap, or a call past its deadline, in a filesystem
// operation fails it with EIO, aborts the instance, and the mount
// answers EIO until it is unmounted; the unmount and the unload work.
func TestFault(t *testing.T) {
	for _, file := range []string{"trap", "spin"} {
		t.Run(file, func(t *testing.T) {
			ctx, cancel := testdeadline.Context(t)
			defer cancel()
			l, err := wasm.NewLoader(ctx, wasm.Config{CallTimeout: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := l.Close(context.Background()); err != nil {
					t.Error(err)
				}
			}()
			src, err := l.Open(wasmtest.Build(t, "wasm/wasmfs/testdata/faultfs"))
			if err != nil {
				t.Fatal(err)
			}
			h := quietHost()
			if _, err := h.Load(ctx, ramfsmod.Source(), nil); err != nil {
				t.Fatal(err)
			}
			if _, err := h.Load(ctx, src, nil); err != nil {
				t.Fatal(err)
			}
			ns := vfs.NewNamespace(h)
			must(t, ns.Mount(ctx, "none", "/", "ramfs", ""))
			must(t, ns.Mkdir("/x", 0o755))
			must(t, ns.Mount(ctx, "none", "/x", "faultfs", ""))
			f, err := ns.Open("/x/"+file, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Read(make([]byte, 1)); !errors.Is(err, syscall.EIO) {
				t.Errorf("read of %s: %v, want EIO", file, err)
			}
			if _, err := f.Read(make([]byte, 1)); !errors.Is(err, syscall.EIO) && err != io.EOF {
				t.Errorf("second read of %s: %v, want EIO", file, err)
			}
			if _, err := ns.Stat("/x/trap"); !errors.Is(err, syscall.EIO) {
				t.Errorf("stat after the fault: %v, want EIO", err)
			}
			if _, err := ns.ReadDir("/x"); !errors.Is(err, syscall.EIO) {
				t.Errorf("readdir after the fault: %v, want EIO", err)
			}
			_ = f.Close() // the release fails (EIO): the instance runs no more code
			must(t, ns.Unmount("/x", 0))
			if err := h.Unload(ctx, "faultfs", raceless.UnloadOptions{}); err != nil {
				t.Errorf("rmmod faultfs after the fault and the unmount: %v", err)
			}
			must(t, ns.Unmount("/", vfs.MNT_DETACH))
			if _, err := h.Shutdown(ctx); err != nil {
				t.Error(err)
			}
		})
	}
}
