package ramfs_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/testdeadline"
	ramfsmod "github.com/raceless/raceless/modules/ramfs"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/vfs/ramfs"
	"github.com/raceless/raceless/vfs/vfstest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	vfstest.Main()
	goleak.VerifyTestMain(m)
}

// Type is ramfs as the conformance suite sees it: the module
// modules/ramfs, a size limit of 64 KiB under "size=64k", files of at most
// ramfs.MaxFileSize bytes.
var Type = vfstest.Type{
	Name: "ramfs",
	Load: func(ctx context.Context, h *raceless.Host) error {
		_, err := h.Load(ctx, ramfsmod.Source(), nil)
		return err
	},
	LimitOptions: "size=64k",
	Limit:        64 << 10,
	MaxFileSize:  ramfs.MaxFileSize,
}

func TestConformance(t *testing.T) { vfstest.Run(t, Type) }

// mount returns a namespace with a ramfs mounted at / with options.
func mount(t *testing.T, options string) (*vfs.Namespace, error) {
	t.Helper()
	ctx := context.Background()
	h := raceless.New()
	if _, err := h.Load(ctx, ramfsmod.Source(), nil); err != nil {
		t.Fatal(err)
	}
	ns := vfs.NewNamespace(h)
	t.Cleanup(func() {
		_ = ns.Unmount("/", vfs.MNT_DETACH)
		sctx, cancel := testdeadline.Context(t)
		defer cancel()
		if _, err := h.Shutdown(sctx); err != nil {
			t.Error(err)
		}
	})
	return ns, ns.Mount(ctx, "none", "/", "ramfs", options)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustErr(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
}

// TestOptions: tmpfs's options, and EINVAL for anything else; by default
// a mount is limited (half the machine's memory, and inodes), and its root
// is its mounter's.
func TestOptions(t *testing.T) {
	for _, c := range []struct {
		options       string
		blocks, files uint64 // statfs totals; 0: no limit
		mode          fs.FileMode
		uid, gid      uint32
	}{
		{"size=4k", 1, 0, 0o755, 0, 0},
		{"size=4097", 2, 0, 0o755, 0, 0},
		{"size=1M,nr_inodes=2k", 256, 2048, 0o755, 0, 0},
		{"size=0,nr_inodes=0", 0, 0, 0o755, 0, 0},
		{"mode=1777,uid=5,gid=6", 0, 0, fs.ModeSticky | 0o777, 5, 6},
		{"mode=0700,rw", 0, 0, 0o700, 0, 0},
	} {
		ns, err := mount(t, c.options)
		must(t, err)
		st, err := ns.Statfs("/")
		must(t, err)
		if c.blocks != 0 && st.Blocks != c.blocks || strings.Contains(c.options, "size=0") && st.Blocks != 0 {
			t.Errorf("%s: %d blocks, want %d", c.options, st.Blocks, c.blocks)
		}
		if c.files != 0 && st.Files != c.files || strings.Contains(c.options, "nr_inodes=0") && st.Files != 0 {
			t.Errorf("%s: %d inodes, want %d", c.options, st.Files, c.files)
		}
		fi, err := ns.Stat("/")
		must(t, err)
		a := fi.Sys().(vfs.Attr)
		uid, gid := c.uid, c.gid
		if !strings.Contains(c.options, "uid=") {
			uid, gid = ns.Cred().UID, ns.Cred().GID
		}
		if a.Mode != fs.ModeDir|c.mode || a.UID != uid || a.GID != gid {
			t.Errorf("%s: root %v %d:%d, want %v %d:%d", c.options, a.Mode, a.UID, a.GID, fs.ModeDir|c.mode, uid, gid)
		}
	}
	// no option: limited all the same
	ns, err := mount(t, "")
	must(t, err)
	st, err := ns.Statfs("/")
	must(t, err)
	if st.Blocks == 0 || st.Files == 0 || st.Bfree != st.Blocks || st.Bsize != ramfs.PageSize {
		t.Errorf("default limits: %+v, want a size and an inode limit", st)
	}
	if pct, err := mount(t, "size=50%"); err != nil {
		t.Errorf("size=50%%: %v", err)
	} else if st2, _ := pct.Statfs("/"); st2.Blocks != st.Blocks {
		t.Errorf("size=50%% gives %d blocks, the default %d", st2.Blocks, st.Blocks)
	}
	for _, bad := range []string{"size=x", "size=-1", "size=1q", "size=16777216e", "nr_inodes=5%", "mode=8", "mode=17777",
		"uid=-1", "gid=4294967296", "bogus=1", "rw=1", "size"} {
		if _, err := mount(t, bad); !errors.Is(err, vfs.EINVAL) {
			t.Errorf("mount -o %s: %v, want EINVAL", bad, err)
		}
	}
}

// TestInodeLimit: nr_inodes bounds files, directories, symlinks, special
// files and every name past a file's first (ENOSPC), and comes back as
// they go.
func TestInodeLimit(t *testing.T) {
	ns, err := mount(t, "nr_inodes=4") // the root and three more
	must(t, err)
	for _, f := range []string{"/a", "/b"} {
		must(t, ns.WriteFile(f, nil, 0o644))
	}
	must(t, ns.Mkdir("/d", 0o755))
	mustErr(t, "create past nr_inodes", ns.WriteFile("/c", nil, 0o644), syscall.ENOSPC)
	mustErr(t, "mkdir past nr_inodes", ns.Mkdir("/e", 0o755), syscall.ENOSPC)
	mustErr(t, "symlink past nr_inodes", ns.Symlink("a", "/l"), syscall.ENOSPC)
	mustErr(t, "mknod past nr_inodes", ns.Mknod("/p", fs.ModeNamedPipe|0o644, 0), syscall.ENOSPC)
	mustErr(t, "link past nr_inodes", ns.Link("/a", "/a2"), syscall.ENOSPC)
	if st, _ := ns.Statfs("/"); st.Ffree != 0 || st.Files != 4 {
		t.Fatalf("full: %+v", st)
	}
	must(t, ns.Unlink("/b"))
	must(t, ns.Link("/a", "/a2")) // a second name takes a slot
	mustErr(t, "create with every slot taken by names", ns.WriteFile("/c", nil, 0o644), syscall.ENOSPC)
	must(t, ns.Unlink("/a")) // the first name of a linked file gives one back
	must(t, ns.WriteFile("/c", nil, 0o644))
	if st, _ := ns.Statfs("/"); st.Ffree != 0 {
		t.Fatalf("after relinking: %d free", st.Ffree)
	}
	// an open, unlinked file keeps its slot until the last close
	f, err := ns.Open("/c", os.O_RDONLY, 0)
	must(t, err)
	must(t, ns.Unlink("/c"))
	mustErr(t, "create while an unlinked file is open", ns.WriteFile("/x", nil, 0o644), syscall.ENOSPC)
	must(t, f.Close())
	must(t, ns.WriteFile("/x", nil, 0o644))
}

// TestSparse: pages are allocated as written and freed as a file shrinks;
// bytes past a shrunk end read as zeros when the file grows again.
func TestSparse(t *testing.T) {
	ns, err := mount(t, "size=1m")
	must(t, err)
	f, err := ns.Create("/f")
	must(t, err)
	defer f.Close()
	blocks := func() int64 {
		t.Helper()
		fi, err := f.Stat()
		must(t, err)
		return fi.Sys().(vfs.Attr).Blocks
	}
	free := func() uint64 {
		t.Helper()
		st, err := ns.Statfs("/")
		must(t, err)
		return st.Bfree
	}
	free0 := free()
	for _, off := range []int64{0, 10 * ramfs.PageSize, 100 * ramfs.PageSize} {
		if _, err := f.WriteAt([]byte("0123456789"), off+ramfs.PageSize-5); err != nil { // across two pages
			t.Fatal(err)
		}
	}
	if b := blocks(); b != 6*ramfs.PageSize/512 || free0-free() != 6 {
		t.Fatalf("three writes across page boundaries: %d blocks, %d pages taken, want 6 pages", b, free0-free())
	}
	must(t, f.Truncate(ramfs.PageSize+2)) // keeps pages 0 and 1, with "56" of the first write's "56789" in page 1
	if b := blocks(); b != 2*ramfs.PageSize/512 || free0-free() != 2 {
		t.Fatalf("after shrinking: %d blocks, %d pages taken, want 2", b, free0-free())
	}
	must(t, f.Truncate(2*ramfs.PageSize))
	got := make([]byte, 10)
	if n, err := f.ReadAt(got, ramfs.PageSize-5); n != 10 || err != nil || string(got) != "0123456\x00\x00\x00" {
		t.Fatalf("after shrinking and growing: %q %v", got[:n], err)
	}
	if free0-free() != 2 {
		t.Fatalf("growing allocated: %d pages taken", free0-free())
	}
}
