package procfs_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/testdeadline"
	procmod "github.com/raceless/raceless/modules/procfs"
	ramfsmod "github.com/raceless/raceless/modules/ramfs"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/vfs/procfs"
	"github.com/raceless/raceless/vfs/vfstest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	vfstest.Main()
	goleak.VerifyTestMain(m)
}

// TestConformance holds the procfs view to the filesystem suite, as a
// read-only type: it is the module modules/procfs showing the host it is
// loaded into.
func TestConformance(t *testing.T) {
	vfstest.Run(t, vfstest.Type{
		Name: "proc",
		Load: func(ctx context.Context, h *raceless.Host) error {
			_, err := h.Load(ctx, procmod.Source(h), nil)
			return err
		},
		ReadOnly: true,
		Files:    []string{"modules", "mounts", "filesystems", "sys/kernel/tainted", "procfs/refcnt", "procfs/initstate"},
	})
}

type symMod struct {
	imp string
}

func (s *symMod) Init(k *raceless.Kernel) error {
	if s.imp != "" {
		_, err := k.Import(context.Background(), s.imp)
		return err
	}
	return k.Export("base_fn", raceless.Func(func(context.Context, []uint64) ([]uint64, error) { return nil, nil }))
}
func (s *symMod) Exit() (int, error) { return 0, nil }

// heldMod exports held_fn, for a forced unload while it is held.
type heldMod struct{}

func (heldMod) Init(k *raceless.Kernel) error {
	return k.Export("held_fn", raceless.Func(func(context.Context, []uint64) ([]uint64, error) { return nil, nil }))
}
func (heldMod) Exit() (int, error) { return 0, nil }

func TestProcfs(t *testing.T) {
	ctx := context.Background()
	h := raceless.New()
	defer func() {
		sctx, cancel := testdeadline.Context(t)
		defer cancel()
		if _, err := h.Shutdown(sctx); err != nil {
			t.Error(err)
		}
	}()
	for _, src := range []raceless.Source{
		ramfsmod.Source(), procmod.Source(h),
		raceless.Native(raceless.Info{Name: "base", Params: []raceless.ParamSpec{{Name: "debug", Type: raceless.ParamInt, Default: "3"}}},
			func() raceless.Module { return &symMod{} }),
		raceless.Native(raceless.Info{Name: "user"}, func() raceless.Module { return &symMod{imp: "base_fn"} }),
	} {
		if _, err := h.Load(ctx, src, nil); err != nil {
			t.Fatal(err)
		}
	}
	ns := vfs.NewNamespace(h)
	must(t, ns.Mount(ctx, "none", "/", "ramfs", ""))
	must(t, ns.Mkdir("/proc", 0o555))
	must(t, ns.Mount(ctx, "proc", "/proc", "proc", ""))

	mods := read(t, ns, "/proc/modules")
	if mods != procfs.FormatModules(h.Modules()) {
		t.Fatalf("modules differ:\n%s", mods)
	}
	line := regexp.MustCompile(`(?m)^base \d+ \d+ user, Live 0xffffffffa[0-9a-f]{4}000$`)
	if !line.MatchString(mods) {
		t.Fatalf("no base line in\n%s", mods)
	}
	if !regexp.MustCompile(`(?m)^ramfs \d+ 1 - Live 0xffffffffa[0-9a-f]{4}000$`).MatchString(mods) {
		t.Fatalf("no ramfs line in\n%s", mods)
	}
	if got := read(t, ns, "/proc/mounts"); got != "rootfs / rootfs rw 0 0\nnone / ramfs rw 0 0\nproc /proc proc rw 0 0\n" {
		t.Fatalf("mounts:\n%s", got)
	}
	if got := read(t, ns, "/proc/base/parameters/debug"); got != "3\n" {
		t.Fatalf("param %q", got)
	}
	if got := read(t, ns, "/proc/base/initstate"); got != "live\n" {
		t.Fatalf("initstate %q", got)
	}
	if got := read(t, ns, "/proc/ramfs/refcnt"); got != "1\n" {
		t.Fatalf("refcnt %q", got)
	}
	if got := read(t, ns, "/proc/procfs/refcnt"); got != "1\n" {
		t.Fatalf("procfs refcnt %q", got)
	}
	ents, err := ns.ReadDir("/proc/base/holders")
	must(t, err)
	if len(ents) != 1 || ents[0].Name() != "user" {
		t.Fatalf("holders %v", ents)
	}
	if !strings.Contains(read(t, ns, "/proc/filesystems"), "nodev\tproc\n") {
		t.Fatal("filesystems")
	}
	// Taints: the kernel's letters in the module's line and in its taint
	// file, the reasons beside them, the host's mask in sys/kernel/tainted.
	if got := read(t, ns, "/proc/sys/kernel/tainted"); got != "0\n" {
		t.Fatalf("tainted %q, want 0", got)
	}
	if got := read(t, ns, "/proc/base/taint"); got != "\n" {
		t.Fatalf("taint of an untainted module %q", got)
	}
	base, _ := h.Module("base")
	base.Taint(raceless.TaintDied, "oops")
	if !regexp.MustCompile(`(?m)^base \d+ \d+ user, Live 0xffffffffa[0-9a-f]{4}000 \(D\)$`).MatchString(read(t, ns, "/proc/modules")) {
		t.Fatalf("no tainted base line in\n%s", read(t, ns, "/proc/modules"))
	}
	if got := read(t, ns, "/proc/base/taint"); got != "D\n" {
		t.Fatalf("taint %q, want D", got)
	}
	if got := read(t, ns, "/proc/base/taint_reasons"); got != "oops\n" {
		t.Fatalf("taint_reasons %q", got)
	}
	_, err = h.Load(ctx, raceless.Native(raceless.Info{Name: "victim"}, func() raceless.Module { return &symMod{imp: "base_fn"} }), nil)
	must(t, err)
	must(t, h.Unload(ctx, "victim", raceless.UnloadOptions{}))
	if got := read(t, ns, "/proc/sys/kernel/tainted"); got != "0\n" {
		t.Fatalf("tainted %q after a plain unload, want 0", got)
	}
	if _, err := h.Load(ctx, raceless.Native(raceless.Info{Name: "held"}, func() raceless.Module { return &heldMod{} }), nil); err != nil {
		t.Fatal(err)
	}
	hb, err := h.Acquire(raceless.KindSymbol, "held_fn")
	must(t, err)
	must(t, h.Unload(ctx, "held", raceless.UnloadOptions{Force: true}))
	hb.Release()
	if got := read(t, ns, "/proc/sys/kernel/tainted"); got != "8\n" {
		t.Fatalf("tainted %q after a forced unload, want 8 (R, TAINT_FORCED_RMMOD)", got)
	}
	if _, err := ns.Create("/proc/modules"); err == nil {
		t.Fatal("writable /proc/modules")
	}
	if err := fstest.TestFS(ns.FS(), "proc/modules", "proc/mounts", "proc/base/parameters/debug", "proc/base/holders/user",
		"proc/sys/kernel/tainted", "proc/base/taint", "proc/base/taint_reasons"); err != nil {
		t.Fatal(err)
	}
	// procfs pins its module while mounted
	if err := h.Unload(ctx, "procfs", raceless.UnloadOptions{}); err == nil {
		t.Fatal("unloaded a mounted procfs")
	}
	must(t, ns.Unmount("/proc", 0))
	must(t, h.Unload(ctx, "procfs", raceless.UnloadOptions{}))
	must(t, ns.Unmount("/", 0))
}

func read(t *testing.T, ns *vfs.Namespace, name string) string {
	t.Helper()
	b, err := ns.ReadFile(name)
	must(t, err)
	return string(b)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ExampleFormatModules() {
	h := raceless.New()
	ctx := context.Background()
	_, _ = h.Load(ctx, ramfsmod.Source(), nil)
	line := procfs.FormatModules(h.Modules())
	fmt.Println(regexp.MustCompile(`^ramfs \d+ 0 - Live 0xffffffffa[0-9a-f]{7}\n$`).MatchString(line))
	_, _ = h.Shutdown(ctx)
	// Output: true
}
