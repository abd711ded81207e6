package vfs_test

import (
	"fmt"
	"testing"
	"testing/fstest"

	"github.com/raceless/raceless"
	ramfsmod "github.com/raceless/raceless/modules/ramfs"
	"github.com/raceless/raceless/vfs"
)

func TestFSView(t *testing.T) {
	h, ns := setup(t)
	must(t, ns.MkdirAll("/etc/conf.d", 0o755))
	writeFile(t, ns.Proc, "/etc/hosts", "127.0.0.1 localhost\n")
	writeFile(t, ns.Proc, "/etc/conf.d/a", "a")
	must(t, ns.Mkdir("/mnt", 0o755))
	must(t, ns.Mount(ctx, "none", "/mnt", "ramfs", ""))
	writeFile(t, ns.Proc, "/mnt/inside", "across a mount point")
	if err := fstest.TestFS(ns.FS(), "etc/hosts", "etc/conf.d/a", "mnt/inside"); err != nil {
		t.Fatal(err)
	}
	if r := refs(t, h, "ramfs"); r != 2 {
		t.Fatalf("refs %d after TestFS (files left open?)", r)
	}
}

// Example mounts a ramfs provided by a module, writes a file and lists the
// mounts as /proc/mounts would.
func Example() {
	ctx := ctx
	h := raceless.New()
	if _, err := h.Load(ctx, ramfsmod.Source(), nil); err != nil {
		panic(err)
	}
	ns := vfs.NewNamespace(h)
	_ = ns.Mount(ctx, "none", "/", "ramfs", "")
	_ = ns.Mkdir("/tmp", 0o1777)
	_ = ns.Mount(ctx, "tmp", "/tmp", "ramfs", "mode=1777")
	_ = ns.WriteFile("/tmp/hello", []byte("hi"), 0o644)
	b, _ := ns.ReadFile("/tmp/hello")
	fmt.Printf("%s\n%s", b, ns.FormatMounts())
	fmt.Println(h.Unload(ctx, "ramfs", raceless.UnloadOptions{}) != nil) // busy: mounted
	_ = ns.Unmount("/tmp", 0)
	_ = ns.Unmount("/", 0)
	fmt.Println(h.Unload(ctx, "ramfs", raceless.UnloadOptions{}))
	// Output:
	// hi
	// rootfs / rootfs rw 0 0
	// none / ramfs rw 0 0
	// tmp /tmp ramfs rw,mode=1777 0 0
	// true
	// <nil>
}
