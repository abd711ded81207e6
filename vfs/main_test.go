package vfs_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/testdeadline"
	ramfsmod "github.com/raceless/raceless/modules/ramfs"
	"github.com/raceless/raceless/vfs"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// setup returns a host with the ramfs module loaded and a namespace with a
// ramfs at "/". Cleanup checks that every module's references are back to
// zero (after unmounting everything the test left) and shuts the host down.
func setup(t *testing.T) (*raceless.Host, *vfs.Namespace) {
	t.Helper()
	h := raceless.New()
	ctx := context.Background()
	if _, err := h.Load(ctx, ramfsmod.Source(), nil); err != nil {
		t.Fatal(err)
	}
	ns := vfs.NewNamespace(h)
	if err := ns.Mount(ctx, "rootfs", "/", "ramfs", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// lazily unmount whatever is left, top first
		ms := ns.Mounts()
		for i := len(ms) - 1; i > 0; i-- {
			_ = ns.Unmount(ms[i].Target, vfs.MNT_DETACH)
		}
		for _, m := range h.Modules() {
			if r := m.Refs(); r != 0 {
				t.Errorf("module %s: %d references left", m.Name(), r)
			}
		}
		sctx, cancel := testdeadline.Context(t)
		defer cancel()
		if _, err := h.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return h, ns
}

func mustErr(t *testing.T, err error, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v is not a *fs.PathError", err)
	}
}

func mustIs(t *testing.T, err error, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func refs(t *testing.T, h *raceless.Host, name string) int64 {
	t.Helper()
	m, ok := h.Module(name)
	if !ok {
		return -1
	}
	return m.Refs()
}

func unload(h *raceless.Host, name string) error {
	return h.Unload(context.Background(), name, raceless.UnloadOptions{})
}

func readAll(t *testing.T, f *vfs.File) string {
	t.Helper()
	b := make([]byte, 100)
	n, err := f.ReadAt(b, 0)
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return string(b[:n])
}

func writeFile(t *testing.T, p *vfs.Proc, name, data string) {
	t.Helper()
	must(t, p.WriteFile(name, []byte(data), 0o644))
}

// loadFS loads another ramfs module registering fstype (module name m).
func loadFS(t *testing.T, h *raceless.Host, m, fstype string) {
	t.Helper()
	if _, err := h.Load(context.Background(), ramfsmod.SourceAs(m, fstype), nil); err != nil {
		t.Fatal(err)
	}
}

var _ = os.O_RDONLY
