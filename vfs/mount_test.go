package vfs_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/vfs"
)

var ctx = context.Background()

func TestMountErrors(t *testing.T) {
	h, ns := setup(t)
	must(t, ns.Mkdir("/mnt", 0o755))
	writeFile(t, ns.Proc, "/file", "x")
	mustErr(t, ns.Mount(ctx, "none", "/mnt", "nosuchfs", ""), vfs.ENODEV)
	mustErr(t, ns.Mount(ctx, "none", "/mnt", "nosuchfs", ""), raceless.ErrNotFound)
	mustErr(t, ns.Mount(ctx, "none", "/missing", "ramfs", ""), os.ErrNotExist)
	mustErr(t, ns.Mount(ctx, "none", "/file", "ramfs", ""), vfs.ENOTDIR)
	mustErr(t, ns.Mount(ctx, "none", "/mnt", "ramfs", "bogus=1"), vfs.EINVAL)
	mustErr(t, ns.Unmount("/mnt", 0), vfs.EINVAL) // not a mount point
	mustErr(t, ns.Unmount("/mnt", vfs.MNT_EXPIRE|vfs.MNT_DETACH), vfs.EINVAL)
	if got := refs(t, h, "ramfs"); got != 1 { // only the root mount
		t.Fatalf("ramfs refs = %d, want 1", got)
	}
}

func TestMountOptionsAndProcMounts(t *testing.T) {
	_, ns := setup(t)
	must(t, ns.Mkdir("/mnt", 0o755))
	must(t, ns.Mount(ctx, "dev0", "/mnt", "ramfs", "mode=0700,size=4k"))
	fi, err := ns.Stat("/mnt")
	must(t, err)
	if fi.Mode().Perm() != 0o700 || !fi.IsDir() {
		t.Fatalf("mode %v, want drwx------", fi.Mode())
	}
	mustErr(t, ns.WriteFile("/mnt/big", make([]byte, 4097), 0o644), vfs.ENOSPC) // one page
	want := "rootfs / rootfs rw 0 0\nrootfs / ramfs rw 0 0\ndev0 /mnt ramfs rw,mode=0700,size=4k 0 0\n"
	if got := ns.FormatMounts(); got != want {
		t.Fatalf("mounts:\n%s\nwant:\n%s", got, want)
	}
	must(t, ns.Unmount("/mnt", 0))
}

func TestUnmountBusyOpenFile(t *testing.T) {
	h, ns := setup(t)
	loadFS(t, h, "tmpmod", "tmpfs")
	must(t, ns.Mkdir("/mnt", 0o755))
	must(t, ns.Mount(ctx, "none", "/mnt", "tmpfs", ""))
	mustIs(t, unload(h, "tmpmod"), raceless.ErrBusy)
	f, err := ns.Create("/mnt/f")
	must(t, err)
	mustErr(t, ns.Unmount("/mnt", 0), vfs.EBUSY)
	mustErr(t, ns.Unmount("/mnt", 0), raceless.ErrBusy)
	must(t, f.Close())
	mustErr(t, f.Close(), os.ErrClosed)
	must(t, ns.Unmount("/mnt", 0))
	if r := refs(t, h, "tmpmod"); r != 0 {
		t.Fatalf("tmpmod refs %d after umount", r)
	}
	must(t, unload(h, "tmpmod"))
	mustErr(t, ns.Mount(ctx, "none", "/mnt", "tmpfs", ""), vfs.ENODEV)
}

func TestUnmountBusyCwdAndChild(t *testing.T) {
	h, ns := setup(t)
	must(t, ns.MkdirAll("/a", 0o755))
	must(t, ns.Mount(ctx, "none", "/a", "ramfs", ""))
	must(t, ns.MkdirAll("/a/b/c", 0o755))
	p, err := ns.NewProc("/")
	must(t, err)
	must(t, p.Chdir("/a/b"))
	mustErr(t, ns.Unmount("/a", 0), vfs.EBUSY)
	// relative paths resolve from the working directory
	writeFile(t, p, "c/x", "rel")
	if b, err := ns.ReadFile("/a/b/c/x"); err != nil || string(b) != "rel" {
		t.Fatalf("read %q %v", b, err)
	}
	must(t, p.Chdir("/"))
	must(t, ns.Mount(ctx, "none", "/a/b", "ramfs", ""))
	mustErr(t, ns.Unmount("/a", 0), vfs.EBUSY) // child mount
	must(t, ns.Unmount("/a/b", 0))
	must(t, ns.Unmount("/a", 0))
	must(t, p.Close())
	mustErr(t, p.Close(), os.ErrClosed)
	if r := refs(t, h, "ramfs"); r != 1 {
		t.Fatalf("refs %d", r)
	}
}

func TestLazyUnmount(t *testing.T) {
	h, ns := setup(t)
	loadFS(t, h, "m1", "fs1")
	loadFS(t, h, "m2", "fs2")
	must(t, ns.Mkdir("/mnt", 0o755))
	must(t, ns.Mount(ctx, "none", "/mnt", "fs1", ""))
	must(t, ns.Mkdir("/mnt/sub", 0o755))
	must(t, ns.Mount(ctx, "none", "/mnt/sub", "fs2", ""))
	f, err := ns.Create("/mnt/sub/file")
	must(t, err)
	_, err = f.Write([]byte("hello"))
	must(t, err)
	mustErr(t, ns.Unmount("/mnt", 0), vfs.EBUSY)
	must(t, ns.Unmount("/mnt", vfs.MNT_DETACH))
	// the whole subtree is gone from the tree
	mustErr(t, stat(ns, "/mnt/sub/file"), os.ErrNotExist)
	if strings.Contains(ns.FormatMounts(), "/mnt") {
		t.Fatalf("mounts still show /mnt:\n%s", ns.FormatMounts())
	}
	mustErr(t, ns.Unmount("/mnt", 0), vfs.EINVAL)
	// the open file keeps working
	_, err = f.Write([]byte(" world"))
	must(t, err)
	if got := readAll(t, f); got != "hello world" {
		t.Fatalf("read %q", got)
	}
	if f.Mount().State() != "detached" {
		t.Fatalf("state %s", f.Mount().State())
	}
	// fs1 had nothing open: shut down now; fs2 waits for the file
	must(t, unload(h, "m1"))
	mustIs(t, unload(h, "m2"), raceless.ErrBusy)
	must(t, f.Close())
	if f.Mount().State() != "dead" {
		t.Fatalf("state %s", f.Mount().State())
	}
	must(t, unload(h, "m2"))
}

func stat(ns *vfs.Namespace, name string) error { _, err := ns.Stat(name); return err }

func TestExpire(t *testing.T) {
	_, ns := setup(t)
	must(t, ns.Mkdir("/mnt", 0o755))
	must(t, ns.Mount(ctx, "none", "/mnt", "ramfs", ""))
	mustErr(t, ns.Unmount("/mnt", vfs.MNT_EXPIRE), vfs.EAGAIN)
	must(t, stat(ns, "/mnt/.")) // access clears the mark
	mustErr(t, ns.Unmount("/mnt", vfs.MNT_EXPIRE), vfs.EAGAIN)
	f, err := ns.Create("/mnt/f")
	must(t, err)
	mustErr(t, ns.Unmount("/mnt", vfs.MNT_EXPIRE), vfs.EBUSY)
	must(t, f.Close())
	mustErr(t, ns.Unmount("/mnt", vfs.MNT_EXPIRE), vfs.EAGAIN)
	must(t, ns.Unmount("/mnt", vfs.MNT_EXPIRE))
	mustErr(t, ns.Unmount("/mnt", 0), vfs.EINVAL)
}

func TestStackedMounts(t *testing.T) {
	_, ns := setup(t)
	must(t, ns.Mkdir("/mnt", 0o755))
	must(t, ns.Mount(ctx, "one", "/mnt", "ramfs", ""))
	writeFile(t, ns.Proc, "/mnt/one", "1")
	must(t, ns.Mount(ctx, "two", "/mnt", "ramfs", ""))
	mustErr(t, stat(ns, "/mnt/one"), os.ErrNotExist)
	must(t, ns.Unmount("/mnt", 0)) // only the top
	must(t, stat(ns, "/mnt/one"))
	must(t, ns.Unmount("/mnt", 0))
	mustErr(t, stat(ns, "/mnt/one"), os.ErrNotExist)
}

func TestMountpointRmdirRenameLinkXdev(t *testing.T) {
	_, ns := setup(t)
	must(t, ns.MkdirAll("/a/mnt", 0o755))
	must(t, ns.Mkdir("/b", 0o755))
	must(t, ns.Mount(ctx, "none", "/a/mnt", "ramfs", ""))
	mustErr(t, ns.Rmdir("/a/mnt"), vfs.EBUSY)
	mustErr(t, ns.Rename("/a/mnt", "/b/x"), vfs.EBUSY)
	mustErr(t, ns.Rename("/b", "/a/mnt"), vfs.EBUSY)
	writeFile(t, ns.Proc, "/a/f", "f")
	mustErr(t, ns.Rename("/a/f", "/a/mnt/f"), vfs.EXDEV)
	mustErr(t, ns.Link("/a/f", "/a/mnt/f"), vfs.EXDEV)
	// two mounts of one filesystem are still two mounts
	must(t, ns.Bind("/b", "/a/mnt/", false))
	mustErr(t, ns.Rename("/a/f", "/a/mnt/f"), vfs.EXDEV)
	must(t, ns.Rename("/a/f", "/a/g"))
	must(t, ns.Link("/a/g", "/a/h"))
	mustErr(t, ns.Link("/a", "/a/dirlink"), vfs.EPERM)
	must(t, ns.Unmount("/a/mnt", 0))
	must(t, ns.Unmount("/a/mnt", 0))
	must(t, ns.Rmdir("/a/mnt"))
}

func TestBind(t *testing.T) {
	h, ns := setup(t)
	must(t, ns.MkdirAll("/src/sub", 0o755))
	must(t, ns.MkdirAll("/plain", 0o755))
	must(t, ns.MkdirAll("/rec", 0o755))
	must(t, ns.Mount(ctx, "none", "/src/sub", "ramfs", ""))
	writeFile(t, ns.Proc, "/src/sub/inner", "in")
	writeFile(t, ns.Proc, "/src/top", "top")
	must(t, ns.Bind("/src", "/plain", false))
	must(t, ns.Bind("/src", "/rec", true))
	if b, _ := ns.ReadFile("/plain/top"); string(b) != "top" {
		t.Fatalf("bind: %q", b)
	}
	mustErr(t, stat(ns, "/plain/sub/inner"), os.ErrNotExist) // plain bind: no submounts
	if b, _ := ns.ReadFile("/rec/sub/inner"); string(b) != "in" {
		t.Fatalf("rbind: %q", b)
	}
	want := "/rec/sub"
	if !strings.Contains(ns.FormatMounts(), " "+want+" ramfs") {
		t.Fatalf("no %s in\n%s", want, ns.FormatMounts())
	}
	writeFile(t, ns.Proc, "/etc-file", "x")
	must(t, ns.Mkdir("/dir", 0o755))
	mustErr(t, ns.Bind("/etc-file", "/dir", false), vfs.ENOTDIR)
	mustErr(t, ns.Unmount("/rec", 0), vfs.EBUSY)
	must(t, ns.Unmount("/rec", vfs.MNT_DETACH))
	must(t, ns.Unmount("/plain", 0))
	must(t, ns.Unmount("/src/sub", 0))
	if r := refs(t, h, "ramfs"); r != 1 {
		t.Fatalf("refs %d", r)
	}
}

func TestMove(t *testing.T) {
	h, ns := setup(t)
	loadFS(t, h, "m1", "fs1")
	must(t, ns.MkdirAll("/old", 0o755))
	must(t, ns.MkdirAll("/new", 0o755))
	must(t, ns.Mount(ctx, "src", "/old", "fs1", ""))
	must(t, ns.Mkdir("/old/sub", 0o755))
	must(t, ns.Mount(ctx, "child", "/old/sub", "ramfs", ""))
	f, err := ns.Create("/old/sub/f")
	must(t, err)
	_, err = f.Write([]byte("data"))
	must(t, err)
	mustErr(t, ns.Move("/old", "/old/sub"), vfs.ELOOP)
	mustErr(t, ns.Move("/new", "/old"), vfs.EINVAL) // not a mount point
	mustErr(t, ns.Move("/old", "/missing"), os.ErrNotExist)
	must(t, ns.Move("/old", "/new"))
	mustErr(t, stat(ns, "/old/sub"), os.ErrNotExist)
	mustErr(t, ns.Unmount("/old", 0), vfs.EINVAL)
	if b, _ := ns.ReadFile("/new/sub/f"); string(b) != "data" {
		t.Fatalf("moved: %q", b)
	}
	if got := readAll(t, f); got != "data" {
		t.Fatalf("open file: %q", got)
	}
	if m := ns.FormatMounts(); !strings.Contains(m, "child /new/sub ramfs") {
		t.Fatalf("mounts:\n%s", m)
	}
	must(t, f.Close())
	must(t, ns.Unmount("/new/sub", 0))
	must(t, ns.Unmount("/new", 0))
	must(t, unload(h, "m1"))
}

func TestBadPaths(t *testing.T) {
	_, ns := setup(t)
	must(t, ns.MkdirAll("/a/b", 0o755))
	writeFile(t, ns.Proc, "/a/b/f", "x")
	for _, p := range []string{"/../../a/b/f", "//a///b//f", "/a/./b/../b/f", "a/b/f", "/a/b/../../../a/b/f"} {
		if b, err := ns.ReadFile(p); err != nil || string(b) != "x" {
			t.Errorf("%s: %q %v", p, b, err)
		}
	}
	long := strings.Repeat("n", 256)
	mustErr(t, stat(ns, "/a/"+long), vfs.ENAMETOOLONG)
	mustErr(t, ns.Mkdir("/a/"+long, 0o755), vfs.ENAMETOOLONG)
	must(t, ns.Mkdir("/a/"+long[:255], 0o755))
	mustErr(t, stat(ns, "/"+strings.Repeat("a/", 2100)), vfs.ENAMETOOLONG)
	mustErr(t, stat(ns, ""), os.ErrNotExist)
	mustErr(t, stat(ns, "/a/b/f/x"), vfs.ENOTDIR)
	must(t, ns.Symlink("loop2", "/a/loop1"))
	must(t, ns.Symlink("loop1", "/a/loop2"))
	mustErr(t, stat(ns, "/a/loop1"), vfs.ELOOP)
	must(t, ns.Symlink("/a/b", "/a/abs"))
	must(t, ns.Symlink("../b/f", "/a/b/rel"))
	if b, err := ns.ReadFile("/a/abs/rel"); err != nil || string(b) != "x" {
		t.Fatalf("symlinks: %q %v", b, err)
	}
	// a chain of exactly 40 links resolves, 41 does not
	must(t, ns.Symlink("/a/b/f", "/a/l0"))
	for i := 1; i <= 40; i++ {
		must(t, ns.Symlink("/a/l"+itoa(i-1), "/a/l"+itoa(i)))
	}
	must(t, stat(ns, "/a/l39"))
	mustErr(t, stat(ns, "/a/l40"), vfs.ELOOP)
	// chroot clamps ".." and absolute symlinks at its root
	p, err := ns.NewProc("/a")
	must(t, err)
	defer p.Close()
	if b, err := p.ReadFile("/../../b/f"); err != nil || string(b) != "x" {
		t.Fatalf("chroot: %q %v", b, err)
	}
	mustErr(t, ns.Mount(ctx, "none", "/a/b/f", "ramfs", ""), vfs.ENOTDIR)
	mustErr(t, ns.Rmdir("/"), vfs.EBUSY)
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

func TestDotDotCrossesMounts(t *testing.T) {
	_, ns := setup(t)
	must(t, ns.MkdirAll("/x/mnt", 0o755))
	writeFile(t, ns.Proc, "/x/here", "h")
	must(t, ns.Mount(ctx, "none", "/x/mnt", "ramfs", ""))
	must(t, ns.Mkdir("/x/mnt/d", 0o755))
	if b, err := ns.ReadFile("/x/mnt/d/../../here"); err != nil || string(b) != "h" {
		t.Fatalf("%q %v", b, err)
	}
	p, err := ns.NewProc("/")
	must(t, err)
	must(t, p.Chdir("/x/mnt/d"))
	must(t, ns.Unmount("/x/mnt", vfs.MNT_DETACH))
	// in a detached mount ".." stops at its root
	if _, err := p.Stat("../../../d"); err != nil {
		t.Fatal(err)
	}
	must(t, p.Close())
}

// TestMountListFollowsTheTree: after random mounts, binds (plain and
// recursive), moves, unmounts and lazy unmounts, the namespace's mount
// list (what /proc/mounts walks, O(mounts)) holds exactly the mounts the
// tree reaches, in the order they were made.
func TestMountListFollowsTheTree(t *testing.T) {
	_, ns := setup(t)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 12 {
		if err := ns.Mkdir(fmt.Sprintf("/d%d", i), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := func() string { return fmt.Sprintf("/d%d", rng.IntN(12)) }
	for step := range 400 {
		var err error
		switch rng.IntN(6) {
		case 0, 1:
			err = ns.Mount(ctx, "none", dir(), "ramfs", "")
		case 2:
			err = ns.Bind(dir(), dir(), rng.IntN(2) == 0)
		case 3:
			err = ns.Move(dir(), dir())
		case 4:
			err = ns.Unmount(dir(), 0)
		case 5:
			err = ns.Unmount(dir(), vfs.MNT_DETACH)
		}
		_ = err // many are refused (busy, not a mount point, a loop): the list must follow either way
		var got []uint64
		for _, m := range ns.Mounts() {
			got = append(got, m.ID)
		}
		if want := vfs.MountIDsByTree(ns); !slices.Equal(got, want) {
			t.Fatalf("step %d: list %v, tree %v", step, got, want)
		}
	}
}
