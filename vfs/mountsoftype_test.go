package vfs_test

import (
	"reflect"
	"testing"

	"github.com/raceless/raceless/vfs"
)

// TestMountsOfType: the mounts of a type, attached (with their users),
// bind mounts included, then lazily detached ones kept by an open file
// (with the path they left), until the last close; mounts of other types
// are not listed.
func TestMountsOfType(t *testing.T) {
	h, ns := setup(t)
	loadFS(t, h, "tmpmod", "tmpfs")
	must(t, ns.MkdirAll("/a/sub", 0o755))
	must(t, ns.Mkdir("/b", 0o755))
	must(t, ns.Mkdir("/c", 0o755))
	must(t, ns.Mount(ctx, "none", "/a", "tmpfs", ""))
	must(t, ns.Mkdir("/a/in", 0o755))
	must(t, ns.Mount(ctx, "none", "/a/in", "tmpfs", ""))
	must(t, ns.Mount(ctx, "none", "/c", "ramfs", ""))
	must(t, ns.Bind("/a/in", "/b", false))
	type tm struct {
		Target   string
		Detached bool
		Users    int64
	}
	list := func() []tm {
		var out []tm
		for _, m := range ns.MountsOfType("tmpfs") {
			out = append(out, tm{m.Target, m.Detached, m.Users})
		}
		return out
	}
	if got, want := list(), []tm{{"/a", false, 0}, {"/a/in", false, 0}, {"/b", false, 0}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("mounts of tmpfs: %+v, want %+v", got, want)
	}
	if got := ns.MountsOfType("nosuchfs"); len(got) != 0 {
		t.Fatalf("mounts of nosuchfs: %+v", got)
	}
	f, err := ns.Create("/a/in/f")
	must(t, err)
	if got, want := list(), []tm{{"/a", false, 0}, {"/a/in", false, 1}, {"/b", false, 0}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("with a file open: %+v, want %+v", got, want)
	}
	must(t, ns.Unmount("/b", 0))
	must(t, ns.Unmount("/a", vfs.MNT_DETACH)) // /a and /a/in leave; the file keeps /a/in
	if got, want := list(), []tm{{"/a/in", true, 1}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after umount -l /a: %+v, want %+v", got, want)
	}
	mustErr(t, ns.Unmount("/a", 0), vfs.EINVAL)
	must(t, f.Close())
	if got := list(); len(got) != 0 {
		t.Fatalf("after the last close: %+v", got)
	}
	if got := ns.MountsOfType("ramfs"); len(got) != 2 || got[0].Target != "/" || got[1].Target != "/c" {
		t.Fatalf("mounts of ramfs: %+v", got)
	}
	must(t, ns.Unmount("/c", 0))
	must(t, unload(h, "tmpmod"))
}
