package vfstest

import (
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/raceless/raceless/internal/testdeadline"
	"github.com/raceless/raceless/vfs"
)

// errnoNames names the errnos the suite expects (portably: syscall has
// no names on every system).
var errnoNames = map[syscall.Errno]string{
	syscall.EPERM: "EPERM", syscall.ENOENT: "ENOENT", syscall.ENXIO: "ENXIO", syscall.EACCES: "EACCES",
	syscall.EBUSY: "EBUSY", syscall.EEXIST: "EEXIST", syscall.EXDEV: "EXDEV", syscall.ENOTDIR: "ENOTDIR",
	syscall.EISDIR: "EISDIR", syscall.EINVAL: "EINVAL", syscall.EFBIG: "EFBIG", syscall.ENOSPC: "ENOSPC",
	syscall.EROFS: "EROFS", syscall.EMLINK: "EMLINK", syscall.ENAMETOOLONG: "ENAMETOOLONG",
	syscall.ENOTEMPTY: "ENOTEMPTY", syscall.ELOOP: "ELOOP", syscall.EIO: "EIO",
}

func errnoName(e syscall.Errno) string {
	if n, ok := errnoNames[e]; ok {
		return n
	}
	return e.Error()
}

// oDirectory is Linux's O_DIRECTORY, as the VFS takes it on every system.
const oDirectory = 0x10000

// past is a time every check sets before an operation that must change it.
var past = time.Unix(1_000_000_000, 0)

// vfsChecks are the in-process checks.
var vfsChecks = []check[*env]{
	{"open_flags", writable, checkOpenFlags},
	{"modes", writable, checkModes},
	{"ownership", writable, checkOwnership},
	{"special_files", writable, checkSpecialFiles},
	{"link_counts", writable, checkLinkCounts},
	{"timestamps", writable, checkTimestamps},
	{"rename", writable, checkRename},
	{"rmdir", writable, checkRmdir},
	{"unlink", writable, checkUnlink},
	{"names", both, checkNames},
	{"readdir", both, checkReadDir},
	{"locs", writable, checkLocs},
	{"mount_points", writable, checkMountPoints},
	{"limits", writable, checkLimits},
	{"files", readOnly, checkFiles},
	{"refuses_changes", readOnly, checkRefusesChanges},
}

func readFile(t *testing.T, e *env, name string) string {
	t.Helper()
	b, err := e.ns.ReadFile(name)
	ok(t, err)
	return string(b)
}

func openFile(t *testing.T, e *env, name string, flag int, perm fs.FileMode) *vfs.File {
	t.Helper()
	f, err := e.ns.Open(name, flag, perm)
	ok(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

func checkOpenFlags(t *testing.T, e *env) {
	ns := e.ns
	ok(t, ns.WriteFile("/f", []byte("hello"), 0o644))
	_, err := ns.Open("/f", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	wantErr(t, "O_CREAT|O_EXCL of an existing file", err, syscall.EEXIST)
	ok(t, ns.Symlink("missing", "/dangling"))
	_, err = ns.Open("/dangling", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	wantErr(t, "O_CREAT|O_EXCL of a dangling symlink", err, syscall.EEXIST)

	// O_TRUNC truncates whatever the access mode (it asks for write
	// permission) and sets the modification time, even of an empty file.
	ok(t, ns.Chtimes("/f", past, past))
	f := openFile(t, e, "/f", os.O_RDONLY|os.O_TRUNC, 0)
	if a := e.attr(t, "/f"); a.Size != 0 || !a.Mtime.After(past) {
		t.Fatalf("after O_RDONLY|O_TRUNC: size %d, mtime %v", a.Size, a.Mtime)
	}
	ok(t, f.Close())
	ok(t, ns.Chtimes("/f", past, past))
	ok(t, openFile(t, e, "/f", os.O_WRONLY|os.O_TRUNC, 0).Close())
	if a := e.attr(t, "/f"); !a.Mtime.After(past) {
		t.Fatalf("O_TRUNC of an empty file left mtime at %v", a.Mtime)
	}

	// O_APPEND: every write goes to the end, WriteAt too (as pwrite(2)
	// on Linux), whatever another open file wrote.
	ok(t, ns.WriteFile("/a", []byte("12"), 0o644))
	fa := openFile(t, e, "/a", os.O_WRONLY|os.O_APPEND, 0)
	fw := openFile(t, e, "/a", os.O_WRONLY, 0)
	if _, err := fw.WriteAt([]byte("xyz"), 2); err != nil {
		t.Fatal(err)
	}
	if _, err := fa.Write([]byte("!")); err != nil {
		t.Fatal(err)
	}
	if _, err := fa.WriteAt([]byte("?"), 0); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, e, "/a"); got != "12xyz!?" {
		t.Fatalf("O_APPEND: %q, want %q", got, "12xyz!?")
	}

	ok(t, ns.Mkdir("/d", 0o755))
	_, err = ns.Open("/f", os.O_RDONLY|oDirectory, 0)
	wantErr(t, "O_DIRECTORY of a file", err, syscall.ENOTDIR)
	_, err = ns.Open("/d", os.O_WRONLY, 0)
	wantErr(t, "a directory opened for writing", err, syscall.EISDIR)
	_, err = ns.Open("/new/", os.O_WRONLY|os.O_CREATE, 0o644)
	wantErr(t, "O_CREAT with a trailing slash", err, syscall.EISDIR)
	_, err = ns.Open("/f/", os.O_RDONLY, 0)
	wantErr(t, "a file named with a trailing slash", err, syscall.ENOTDIR)
	_, err = ns.Open("/missing", os.O_RDONLY, 0)
	wantErr(t, "open of a missing file", err, syscall.ENOENT)
}

func checkModes(t *testing.T, e *env) {
	ns := e.ns
	ok(t, openFile(t, e, "/zero", os.O_WRONLY|os.O_CREATE, 0).Close())
	ok(t, ns.Mkdir("/zerodir", 0))
	for name, want := range map[string]fs.FileMode{"/zero": 0, "/zerodir": fs.ModeDir} {
		if got := e.attr(t, name).Mode; got != want {
			t.Errorf("%s made with mode 0: %v, want %v", name, got, want)
		}
	}
	special := fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	ok(t, openFile(t, e, "/suid", os.O_WRONLY|os.O_CREATE, special|0o755).Close())
	ok(t, ns.Mkdir("/sticky", special|0o777)) // mkdir(2) keeps the sticky bit only
	ok(t, ns.Symlink("zero", "/link"))
	ok(t, ns.WriteFile("/ch", nil, 0o644))
	ok(t, ns.Chmod("/ch", special|0o640))
	for name, want := range map[string]fs.FileMode{
		"/suid":   special | 0o755,
		"/sticky": fs.ModeDir | fs.ModeSticky | 0o777,
		"/link":   fs.ModeSymlink | 0o777,
		"/ch":     special | 0o640,
	} {
		if got := e.attr(t, name).Mode; got != want {
			t.Errorf("%s: mode %v, want %v", name, got, want)
		}
	}
}

func checkOwnership(t *testing.T, e *env) {
	ns := e.ns
	ok(t, ns.WriteFile("/mine", nil, 0o644))
	if a, c := e.attr(t, "/mine"), ns.Cred(); a.UID != c.UID || a.GID != c.GID {
		t.Fatalf("a file made by the namespace (credentials %+v) is owned by %d:%d", c, a.UID, a.GID)
	}
	root, _, err := ns.Root()
	ok(t, err)
	c := vfs.Cred{UID: 1000, GID: 2000}
	owned := func(what string, a vfs.Attr, uid, gid uint32) {
		t.Helper()
		if a.UID != uid || a.GID != gid {
			t.Errorf("%s: owned by %d:%d, want %d:%d", what, a.UID, a.GID, uid, gid)
		}
	}
	d, a, err := ns.MkdirAt(root, "u", 0o777, c)
	ok(t, err)
	owned("MkdirAt", a, 1000, 2000)
	f, err := ns.OpenAt(d, "f", os.O_WRONLY|os.O_CREATE, 0o644, c)
	ok(t, err)
	fi, err := f.Stat()
	ok(t, err)
	ok(t, f.Close())
	owned("OpenAt O_CREAT", fi.Sys().(vfs.Attr), 1000, 2000)
	_, a, err = ns.SymlinkAt("f", d, "l", c)
	ok(t, err)
	owned("SymlinkAt", a, 1000, 2000)
	_, a, err = ns.MknodAt(d, "p", fs.ModeNamedPipe|0o644, 0, c)
	ok(t, err)
	owned("MknodAt", a, 1000, 2000)

	// A setgid directory gives its group, and to directories its setgid
	// bit (inode_init_owner).
	ok(t, ns.Mkdir("/sg", 0o777))
	ok(t, ns.Chown("/sg", 0, 3000))
	ok(t, ns.Chmod("/sg", fs.ModeSetgid|0o777))
	sg, _, err := ns.LookupAt(root, "sg")
	ok(t, err)
	f, err = ns.OpenAt(sg, "f", os.O_WRONLY|os.O_CREATE, 0o644, c)
	ok(t, err)
	ok(t, f.Close())
	a = e.attr(t, "/sg/f")
	owned("a file in a setgid directory", a, 1000, 3000)
	if a.Mode != 0o644 {
		t.Errorf("a file in a setgid directory: mode %v, want -rw-r--r--", a.Mode)
	}
	_, a, err = ns.MkdirAt(sg, "sub", 0o755, c)
	ok(t, err)
	owned("a directory in a setgid directory", a, 1000, 3000)
	if a.Mode != fs.ModeDir|fs.ModeSetgid|0o755 {
		t.Errorf("a directory in a setgid directory: mode %v, want dgrwxr-xr-x", a.Mode)
	}
	ok(t, ns.Chown("/u/f", 5, 6))
	owned("after chown", e.attr(t, "/u/f"), 5, 6)
}

func checkSpecialFiles(t *testing.T, e *env) {
	ns := e.ns
	nodes := []struct {
		name string
		mode fs.FileMode
		dev  uint64
	}{
		{"/fifo", fs.ModeNamedPipe | 0o644, 0},
		{"/sock", fs.ModeSocket | 0o755, 0},
		{"/chr", fs.ModeDevice | fs.ModeCharDevice | 0o600, 0x0103},
		{"/blk", fs.ModeDevice | 0o660, 0x0801},
		{"/reg", 0o640, 0},
	}
	for _, n := range nodes {
		ok(t, ns.Mknod(n.name, n.mode, n.dev))
		a := e.attr(t, n.name)
		if a.Mode != n.mode || a.Rdev != n.dev || a.Nlink != 1 {
			t.Errorf("%s: mode %v rdev %#x nlink %d, want %v %#x 1", n.name, a.Mode, a.Rdev, a.Nlink, n.mode, n.dev)
		}
	}
	ents, err := ns.ReadDir("/")
	ok(t, err)
	for _, en := range ents {
		for _, n := range nodes {
			if "/"+en.Name() == n.name && en.Type() != n.mode.Type() {
				t.Errorf("readdir: %s has type %v, want %v", en.Name(), en.Type(), n.mode.Type())
			}
		}
	}
	wantErr(t, "mknod of an existing name", ns.Mknod("/fifo", fs.ModeNamedPipe|0o644, 0), syscall.EEXIST)
	wantErr(t, "mknod of a directory", ns.Mknod("/dir", fs.ModeDir|0o755, 0), syscall.EPERM)
	wantErr(t, "mknod of an unknown type", ns.Mknod("/odd", fs.ModeIrregular|0o644, 0), syscall.EINVAL)
	_, err = ns.Open("/sock", os.O_RDONLY, 0)
	wantErr(t, "open of a socket", err, syscall.ENXIO)
	wantErr(t, "truncate of a named pipe", ns.Truncate("/fifo", 0), syscall.EINVAL)
	ok(t, ns.Rename("/fifo", "/fifo2"))
	ok(t, ns.Link("/chr", "/chr2"))
	if a := e.attr(t, "/chr"); a.Nlink != 2 {
		t.Errorf("a device node with two names: nlink %d", a.Nlink)
	}
	ok(t, ns.Unlink("/sock"))
}

func checkLinkCounts(t *testing.T, e *env) {
	ns := e.ns
	nlink := func(name string) uint32 { t.Helper(); return e.attr(t, name).Nlink }
	ok(t, ns.WriteFile("/f", []byte("x"), 0o644))
	ok(t, ns.Link("/f", "/g"))
	if nlink("/f") != 2 || e.attr(t, "/f").Ino != e.attr(t, "/g").Ino {
		t.Fatalf("after link: nlink %d, inodes %d %d", nlink("/f"), e.attr(t, "/f").Ino, e.attr(t, "/g").Ino)
	}
	ok(t, ns.Unlink("/g"))
	if n := nlink("/f"); n != 1 {
		t.Fatalf("after unlink of the other name: nlink %d", n)
	}
	root := nlink("/")
	ok(t, ns.Mkdir("/d", 0o755))
	if nlink("/d") != 2 || nlink("/") != root+1 {
		t.Fatalf("mkdir: nlink %d, parent %d (was %d)", nlink("/d"), nlink("/"), root)
	}
	ok(t, ns.Mkdir("/d/s", 0o755))
	ok(t, ns.WriteFile("/d/file", nil, 0o644))
	if n := nlink("/d"); n != 3 {
		t.Fatalf("a directory with one subdirectory and a file: nlink %d, want 3", n)
	}
	ok(t, ns.Rename("/d/s", "/s"))
	if nlink("/d") != 2 || nlink("/") != root+2 {
		t.Fatalf("after moving the subdirectory up: %d, parent %d", nlink("/d"), nlink("/"))
	}
	ok(t, ns.Rmdir("/s"))
	if n := nlink("/"); n != root+1 {
		t.Fatalf("after rmdir: parent nlink %d, want %d", n, root+1)
	}
	ok(t, ns.Symlink("f", "/l"))
	if n := nlink("/l"); n != 1 {
		t.Fatalf("symlink nlink %d", n)
	}
	wantErr(t, "link of a directory", ns.Link("/d", "/d2"), syscall.EPERM)
	wantErr(t, "link onto an existing name", ns.Link("/f", "/l"), syscall.EEXIST)
}

// tick waits until the clock has passed t, so that a time set from now
// on is after t: the exact event a later "did it change?" needs, with no
// sleep (the clock moves in nanoseconds).
func tick(tb *testing.T, t time.Time) time.Time {
	tb.Helper()
	deadline, ok := testdeadline.Deadline(tb)
	for {
		now := time.Now()
		if now.After(t) {
			return now
		}
		if ok && now.After(deadline) {
			tb.Fatalf("the clock never passed %v", t)
		}
	}
}

func checkTimestamps(t *testing.T, e *env) {
	ns := e.ns
	ok(t, ns.Mkdir("/d", 0o755))
	ok(t, ns.Chtimes("/d", past, past))
	mark := tick(t, e.attr(t, "/d").Ctime)
	ok(t, ns.WriteFile("/d/f", []byte("data"), 0o644))
	d := e.attr(t, "/d")
	f := e.attr(t, "/d/f")
	if d.Mtime.Before(mark) || d.Ctime.Before(mark) || f.Ctime.Before(mark) {
		t.Fatalf("create after %v: parent mtime %v ctime %v, child ctime %v", mark, d.Mtime, d.Ctime, f.Ctime)
	}
	// utimes sets both times exactly; ctime becomes now
	at, mt := time.Unix(1_100_000_000, 5), time.Unix(1_200_000_000, 7)
	mark = tick(t, f.Ctime)
	ok(t, ns.Chtimes("/d/f", at, mt))
	f = e.attr(t, "/d/f")
	if !f.Atime.Equal(at) || !f.Mtime.Equal(mt) || f.Ctime.Before(mark) {
		t.Fatalf("utimes: atime %v mtime %v ctime %v (set at %v)", f.Atime, f.Mtime, f.Ctime, mark)
	}
	// write: mtime and ctime
	ok(t, ns.Chtimes("/d/f", past, past))
	mark = tick(t, e.attr(t, "/d/f").Ctime)
	w := openFile(t, e, "/d/f", os.O_WRONLY, 0)
	if _, err := w.WriteAt([]byte("D"), 0); err != nil {
		t.Fatal(err)
	}
	f = e.attr(t, "/d/f")
	if f.Mtime.Before(mark) || f.Ctime.Before(mark) || !f.Atime.Equal(past) {
		t.Fatalf("write: mtime %v ctime %v atime %v (wrote after %v)", f.Mtime, f.Ctime, f.Atime, mark)
	}
	// chmod: ctime only
	ok(t, ns.Chtimes("/d/f", past, past))
	mark = tick(t, e.attr(t, "/d/f").Ctime)
	ok(t, ns.Chmod("/d/f", 0o600))
	if f = e.attr(t, "/d/f"); !f.Mtime.Equal(past) || f.Ctime.Before(mark) {
		t.Fatalf("chmod: mtime %v ctime %v", f.Mtime, f.Ctime)
	}
	// truncate(2) to the same size changes nothing; to another, mtime and ctime
	mark = tick(t, f.Ctime)
	ok(t, ns.Truncate("/d/f", f.Size))
	if g := e.attr(t, "/d/f"); !g.Mtime.Equal(past) || !g.Ctime.Equal(f.Ctime) {
		t.Fatalf("truncate to the same size: mtime %v ctime %v, want %v %v", g.Mtime, g.Ctime, past, f.Ctime)
	}
	ok(t, ns.Truncate("/d/f", 1))
	if f = e.attr(t, "/d/f"); f.Mtime.Before(mark) || f.Ctime.Before(mark) {
		t.Fatalf("truncate: mtime %v ctime %v", f.Mtime, f.Ctime)
	}
	// ftruncate sets mtime even to the same size
	ok(t, ns.Chtimes("/d/f", past, past))
	ok(t, w.Truncate(1))
	if f = e.attr(t, "/d/f"); !f.Mtime.After(past) {
		t.Fatalf("ftruncate to the same size: mtime %v", f.Mtime)
	}
	// rename: both directories' mtime, the file's ctime
	ok(t, ns.Mkdir("/e", 0o755))
	ok(t, ns.Chtimes("/d", past, past))
	ok(t, ns.Chtimes("/e", past, past))
	mark = tick(t, e.attr(t, "/d/f").Ctime)
	ok(t, ns.Rename("/d/f", "/e/f"))
	if dd, ee, ff := e.attr(t, "/d"), e.attr(t, "/e"), e.attr(t, "/e/f"); !dd.Mtime.After(past) || !ee.Mtime.After(past) || ff.Ctime.Before(mark) {
		t.Fatalf("rename: source dir mtime %v, target dir mtime %v, file ctime %v", dd.Mtime, ee.Mtime, ff.Ctime)
	}
	// link: the file's ctime, the directory's mtime; unlink: the same
	ok(t, ns.Chtimes("/d", past, past))
	mark = tick(t, e.attr(t, "/e/f").Ctime)
	ok(t, ns.Link("/e/f", "/d/h"))
	if dd, ff := e.attr(t, "/d"), e.attr(t, "/e/f"); !dd.Mtime.After(past) || ff.Ctime.Before(mark) {
		t.Fatalf("link: dir mtime %v, file ctime %v", dd.Mtime, ff.Ctime)
	}
	ok(t, ns.Chtimes("/d", past, past))
	mark = tick(t, e.attr(t, "/e/f").Ctime)
	ok(t, ns.Unlink("/d/h"))
	if dd, ff := e.attr(t, "/d"), e.attr(t, "/e/f"); !dd.Mtime.After(past) || ff.Ctime.Before(mark) {
		t.Fatalf("unlink: dir mtime %v, file ctime %v", dd.Mtime, ff.Ctime)
	}
}

func checkRename(t *testing.T, e *env) {
	ns := e.ns
	ok(t, ns.MkdirAll("/a/b", 0o755))
	ok(t, ns.Mkdir("/e", 0o755))
	ok(t, ns.Mkdir("/full", 0o755))
	ok(t, ns.WriteFile("/full/x", nil, 0o644))
	ok(t, ns.WriteFile("/f", []byte("f"), 0o644))
	ok(t, ns.WriteFile("/g", []byte("g"), 0o644))
	wantErr(t, "rename of a directory under itself", ns.Rename("/a", "/a/b/c"), syscall.EINVAL)
	wantErr(t, "rename of a directory over a non-empty one", ns.Rename("/e", "/full"), syscall.ENOTEMPTY)
	wantErr(t, "rename of a directory over a file", ns.Rename("/e", "/f"), syscall.ENOTDIR)
	wantErr(t, "rename of a file over a directory", ns.Rename("/f", "/e"), syscall.EISDIR)
	wantErr(t, "rename of a missing name", ns.Rename("/missing", "/x"), syscall.ENOENT)
	wantErr(t, "rename into a missing directory", ns.Rename("/f", "/missing/x"), syscall.ENOENT)
	wantErr(t, "rename of a file named with a trailing slash", ns.Rename("/f/", "/y"), syscall.ENOTDIR)
	wantErr(t, "rename of a file to a name with a trailing slash", ns.Rename("/f", "/y/"), syscall.ENOTDIR)
	wantErr(t, "rename of \".\"", ns.Rename("/a/.", "/z"), syscall.EBUSY)
	wantErr(t, "rename to \"..\"", ns.Rename("/e", "/a/.."), syscall.EBUSY)
	wantErr(t, "rename of the root", ns.Rename("/", "/z"), syscall.EBUSY)
	// two names of one file: rename does nothing
	ok(t, ns.Link("/f", "/f2"))
	ok(t, ns.Rename("/f", "/f2"))
	if a := e.attr(t, "/f"); a.Nlink != 2 || e.attr(t, "/f2").Ino != a.Ino {
		t.Fatalf("rename of a file over another name of it: nlink %d", a.Nlink)
	}
	// a file over a file, a directory over an empty directory, with a
	// trailing slash on directories
	ok(t, ns.Rename("/g", "/f2"))
	if got := readFile(t, e, "/f2"); got != "g" || e.attr(t, "/f").Nlink != 1 {
		t.Fatalf("rename over a file: %q, nlink of the replaced file %d", got, e.attr(t, "/f").Nlink)
	}
	root := e.attr(t, "/").Nlink
	ok(t, ns.Rename("/e/", "/a/b/"))
	if _, err := ns.Stat("/e"); err == nil || e.attr(t, "/").Nlink != root-1 || e.attr(t, "/a/b").Nlink != 2 {
		t.Fatalf("rename over an empty directory: root nlink %d (was %d), target nlink %d", e.attr(t, "/").Nlink, root, e.attr(t, "/a/b").Nlink)
	}
	// a directory moves with what it holds
	ok(t, ns.WriteFile("/a/b/inside", []byte("in"), 0o644))
	ok(t, ns.Rename("/a", "/moved"))
	if got := readFile(t, e, "/moved/b/inside"); got != "in" {
		t.Fatalf("after moving a directory: %q", got)
	}
	wantErr(t, "old name after rename", ns.Rename("/a", "/again"), syscall.ENOENT)
}

func checkRmdir(t *testing.T, e *env) {
	ns := e.ns
	ok(t, ns.Mkdir("/d", 0o755))
	ok(t, ns.WriteFile("/d/f", nil, 0o644))
	ok(t, ns.Symlink("d", "/ld"))
	wantErr(t, "rmdir of a non-empty directory", ns.Rmdir("/d"), syscall.ENOTEMPTY)
	wantErr(t, "rmdir of a file", ns.Rmdir("/d/f"), syscall.ENOTDIR)
	wantErr(t, "rmdir of \".\"", ns.Rmdir("/d/."), syscall.EINVAL)
	wantErr(t, "rmdir of \"..\"", ns.Rmdir("/d/.."), syscall.ENOTEMPTY)
	wantErr(t, "rmdir of the root", ns.Rmdir("/"), syscall.EBUSY)
	wantErr(t, "rmdir of a symlink to a directory", ns.Rmdir("/ld"), syscall.ENOTDIR)
	wantErr(t, "rmdir of a missing name", ns.Rmdir("/missing"), syscall.ENOENT)
	ok(t, ns.Unlink("/d/f"))
	ok(t, ns.Rmdir("/d/"))
	// a working directory that was removed: nothing can be made in it
	ok(t, ns.Mkdir("/gone", 0o755))
	p, err := ns.NewProc("/")
	ok(t, err)
	defer p.Close()
	ok(t, p.Chdir("/gone"))
	ok(t, ns.Rmdir("/gone"))
	_, err = p.Create("x")
	wantErr(t, "create in a removed working directory", err, syscall.ENOENT)
	wantErr(t, "mkdir in a removed working directory", p.Mkdir("y", 0o755), syscall.ENOENT)
	fi, err := p.Stat(".")
	ok(t, err)
	if a := fi.Sys().(vfs.Attr); a.Nlink != 0 {
		t.Fatalf("a removed directory: nlink %d", a.Nlink)
	}
}

func checkUnlink(t *testing.T, e *env) {
	ns := e.ns
	ok(t, ns.Mkdir("/d", 0o755))
	ok(t, ns.WriteFile("/d/f", []byte("kept"), 0o644))
	wantErr(t, "unlink of a directory", ns.Unlink("/d"), syscall.EISDIR)
	wantErr(t, "unlink of a directory with a trailing slash", ns.Unlink("/d/"), syscall.EISDIR)
	wantErr(t, "unlink of a file with a trailing slash", ns.Unlink("/d/f/"), syscall.ENOTDIR)
	wantErr(t, "unlink of \".\"", ns.Unlink("/d/."), syscall.EISDIR)
	wantErr(t, "unlink of a missing name", ns.Unlink("/d/missing"), syscall.ENOENT)
	// an open file outlives its last name
	f := openFile(t, e, "/d/f", os.O_RDWR, 0)
	ok(t, ns.Unlink("/d/f"))
	if _, err := ns.Lstat("/d/f"); err == nil {
		t.Fatal("unlinked name still there")
	}
	if _, err := f.WriteAt([]byte("!"), 4); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 10)
	n, err := f.ReadAt(b, 0)
	if err != nil && err != io.EOF || string(b[:n]) != "kept!" {
		t.Fatalf("an unlinked open file reads %q %v", b[:n], err)
	}
	fi, err := f.Stat()
	ok(t, err)
	if a := fi.Sys().(vfs.Attr); a.Nlink != 0 {
		t.Fatalf("an unlinked open file: nlink %d", a.Nlink)
	}
	ok(t, f.Close())
	if ents, err := ns.ReadDir("/d"); err != nil || len(ents) != 0 {
		t.Fatalf("directory after unlink: %v %v", ents, err)
	}
}

func checkNames(t *testing.T, e *env) {
	ns := e.ns
	long := strings.Repeat("n", vfs.NameMax)
	_, err := ns.Lstat("/" + long + "x")
	wantErr(t, "lookup of a 256-byte name", err, syscall.ENAMETOOLONG)
	_, err = ns.Lstat("/" + strings.Repeat("x/", vfs.PathMax/2))
	wantErr(t, "a 4096-byte path", err, syscall.ENAMETOOLONG)
	_, err = ns.Lstat("/a\x00b")
	wantErr(t, "a path with a NUL", err, syscall.EINVAL)
	if e.typ.ReadOnly {
		return
	}
	ok(t, ns.WriteFile("/"+long, []byte("255"), 0o644))
	ok(t, ns.Mkdir("/"+long[1:]+"d", 0o755))
	wantErr(t, "create of a 256-byte name", ns.WriteFile("/"+long+"x", nil, 0o644), syscall.ENAMETOOLONG)
	wantErr(t, "mkdir of a 256-byte name", ns.Mkdir("/"+long+"x", 0o755), syscall.ENAMETOOLONG)
	// a path of 4095 bytes resolves
	p := "/" + strings.Repeat("./", (vfs.PathMax-1-1-len(long))/2)
	p += strings.Repeat("/", vfs.PathMax-1-len(p)-len(long)) + long
	if len(p) != vfs.PathMax-1 {
		t.Fatalf("built a %d-byte path", len(p))
	}
	if got := readFile(t, e, p); got != "255" {
		t.Fatalf("a 4095-byte path: %q", got)
	}
	target := strings.Repeat("t", vfs.PathMax-1)
	ok(t, ns.Symlink(target, "/longlink"))
	if got, err := ns.Readlink("/longlink"); err != nil || got != target {
		t.Fatalf("a 4095-byte symlink target: %d bytes, %v", len(got), err)
	}
	wantErr(t, "a 4096-byte symlink target", ns.Symlink(target+"t", "/toolong"), syscall.ENAMETOOLONG)
}

func checkReadDir(t *testing.T, e *env) {
	ns := e.ns
	root, ra, err := ns.Root()
	ok(t, err)
	if !e.typ.ReadOnly {
		ok(t, ns.Mkdir("/d", 0o755))
		ok(t, ns.WriteFile("/d/f", nil, 0o644))
		ok(t, ns.Mkdir("/d/s", 0o755))
	}
	ents, err := root.ReadDir()
	ok(t, err)
	if len(ents) < 2 || ents[0].Name != "." || ents[1].Name != ".." || ents[0].Ino != ra.Ino || ents[1].Ino != ra.Ino {
		t.Fatalf("root listing %+v: want \".\" and \"..\" first, both inode %d", ents, ra.Ino)
	}
	names := []string{}
	for _, en := range ents[2:] {
		names = append(names, en.Name)
		a := e.attr(t, "/"+en.Name)
		if a.Ino != en.Ino || a.Mode.Type() != en.Mode.Type() {
			t.Errorf("%s: listed inode %d type %v, lstat %d %v", en.Name, en.Ino, en.Mode.Type(), a.Ino, a.Mode.Type())
		}
	}
	if !slices.IsSorted(names) {
		t.Errorf("listing not sorted: %q", names)
	}
	if e.typ.ReadOnly {
		for _, f := range e.typ.Files {
			if first, _, _ := strings.Cut(f, "/"); !slices.Contains(names, first) {
				t.Errorf("root listing %q lacks %q", names, first)
			}
		}
		return
	}
	d, da, err := ns.LookupAt(root, "d")
	ok(t, err)
	ents, err = d.ReadDir()
	ok(t, err)
	var got []string
	for _, en := range ents {
		got = append(got, en.Name)
	}
	if strings.Join(got, " ") != ". .. f s" || ents[0].Ino != da.Ino || ents[1].Ino != ra.Ino || ents[3].Mode.Type() != fs.ModeDir {
		t.Fatalf("listing of /d: %+v", ents)
	}
	ok(t, ns.Unlink("/d/f"))
	if ents, err = d.ReadDir(); err != nil || len(ents) != 3 {
		t.Fatalf("after unlink: %+v %v", ents, err)
	}
}

func checkLocs(t *testing.T, e *env) {
	ns := e.ns
	root, _, err := ns.Root()
	ok(t, err)
	ok(t, ns.Mkdir("/mnt", 0o755))
	under, _, err := ns.LookupAt(root, "mnt")
	ok(t, err)
	e.mount(t, "/mnt", e.typ.Options)
	// a lookup crosses into the mount; the Loc of the covered directory
	// still names the directory below (a directory descriptor does not
	// follow a later mount)
	m, _, err := ns.LookupAt(root, "mnt")
	ok(t, err)
	if m.Same(under) || m.Mount() == root.Mount() {
		t.Fatal("LookupAt did not cross into the mount")
	}
	_, _, err = ns.MkdirAt(m, "x", 0o755, ns.Cred())
	ok(t, err)
	if _, _, err := ns.LookupAt(under, "x"); err == nil {
		t.Fatal("the covered directory shows the mount's contents")
	}
	x, _, err := ns.LookupAt(root, "mnt/x")
	ok(t, err)
	f, err := ns.OpenAt(x, "f", os.O_RDWR|os.O_CREATE, 0o644, ns.Cred())
	ok(t, err)
	// lazily unmounted with a file open: the Locs in it keep working
	ok(t, ns.Unmount("/mnt", vfs.MNT_DETACH))
	if _, err := x.Stat(); err != nil {
		t.Fatalf("a Loc in a detached mount with a file open: %v", err)
	}
	if _, _, err := ns.MkdirAt(x, "y", 0o755, ns.Cred()); err != nil {
		t.Fatalf("mkdir in a detached mount: %v", err)
	}
	ok(t, f.Close())
	// the last reference went: the mount is dead, its Locs answer ENOENT
	_, err = x.Stat()
	wantErr(t, "stat of a Loc in a dead mount", err, syscall.ENOENT)
	_, _, err = ns.LookupAt(m, "x")
	wantErr(t, "lookup from a Loc in a dead mount", err, syscall.ENOENT)
	_, err = m.ReadDir()
	wantErr(t, "readdir of a Loc in a dead mount", err, syscall.ENOENT)
	_, err = vfs.Loc{}.Stat()
	wantErr(t, "stat of the zero Loc", err, syscall.EINVAL)
}

func checkMountPoints(t *testing.T, e *env) {
	ns := e.ns
	ok(t, ns.Mkdir("/m", 0o755))
	ok(t, ns.WriteFile("/f", []byte("f"), 0o644))
	e.mount(t, "/m", e.typ.Options)
	wantErr(t, "rmdir of a mount point", ns.Rmdir("/m"), syscall.EBUSY)
	wantErr(t, "rename of a mount point", ns.Rename("/m", "/m2"), syscall.EBUSY)
	ok(t, ns.Mkdir("/empty", 0o755))
	wantErr(t, "rename over a mount point", ns.Rename("/empty", "/m"), syscall.EBUSY)
	wantErr(t, "rename of a file over a mount point (a directory)", ns.Rename("/f", "/m"), syscall.EISDIR)
	wantErr(t, "unlink of a mount point (a directory)", ns.Unlink("/m"), syscall.EISDIR)
	wantErr(t, "rename across mounts", ns.Rename("/f", "/m/f"), syscall.EXDEV)
	wantErr(t, "link across mounts", ns.Link("/f", "/m/f"), syscall.EXDEV)
	ok(t, ns.WriteFile("/m/inside", nil, 0o644))
	ok(t, ns.Unmount("/m", 0))
	if _, err := ns.Stat("/m/inside"); err == nil {
		t.Fatal("the unmounted filesystem's file is still visible")
	}
	ok(t, ns.Rmdir("/m"))
}

func checkLimits(t *testing.T, e *env) {
	typ := e.typ
	if typ.Limit == 0 && typ.MaxFileSize == 0 {
		t.Skip("the type declares no size limit nor maximum file size (Type.Limit, Type.MaxFileSize)")
	}
	ns := e.ns
	if typ.MaxFileSize > 0 {
		f := openFile(t, e, "/sparse", os.O_RDWR|os.O_CREATE, 0o644)
		st0, err := ns.Statfs("/")
		ok(t, err)
		// a huge sparse file costs nothing
		ok(t, f.Truncate(typ.MaxFileSize))
		a := e.attr(t, "/sparse")
		st1, err := ns.Statfs("/")
		ok(t, err)
		if a.Size != typ.MaxFileSize || a.Blocks != 0 || st1.Bfree != st0.Bfree {
			t.Fatalf("truncate to %d: size %d, blocks %d, free blocks %d -> %d", typ.MaxFileSize, a.Size, a.Blocks, st0.Bfree, st1.Bfree)
		}
		b := []byte("garbage!")
		if n, err := f.ReadAt(b, typ.MaxFileSize-4); n != 4 || err != io.EOF || string(b[:4]) != "\x00\x00\x00\x00" {
			t.Fatalf("read of the hole at the end: %q %v", b[:n], err)
		}
		wantErr(t, "truncate past the maximum file size", f.Truncate(typ.MaxFileSize+1), syscall.EFBIG)
		if typ.MaxFileSize < 999999999999999 { // the outside run's size
			wantErr(t, "truncate(2) to 999999999999999", ns.Truncate("/sparse", 999999999999999), syscall.EFBIG)
		}
		_, err = f.WriteAt([]byte("x"), typ.MaxFileSize)
		wantErr(t, "a write at the maximum file size", err, syscall.EFBIG)
		n, err := f.WriteAt([]byte("xy"), typ.MaxFileSize-1)
		if n != 1 {
			t.Fatalf("a write across the maximum file size wrote %d bytes (%v), want 1", n, err)
		}
		wantErr(t, "a write across the maximum file size", err, syscall.EFBIG)
		// a write far past the end allocates what it writes only
		ok(t, f.Truncate(0))
		st0, err = ns.Statfs("/")
		ok(t, err)
		if _, err := f.WriteAt([]byte("far"), typ.MaxFileSize/2); err != nil {
			t.Fatal(err)
		}
		st1, err = ns.Statfs("/")
		ok(t, err)
		if st0.Blocks > 0 && st0.Bfree-st1.Bfree > 1 {
			t.Fatalf("a 3-byte write far past the end took %d blocks", st0.Bfree-st1.Bfree)
		}
		ok(t, f.Close())
		ok(t, ns.Unlink("/sparse"))
	}
	if typ.Limit == 0 {
		return // reported: no Limit (MaxFileSize was checked)
	}
	ok(t, ns.Mkdir("/lim", 0o755))
	e.mount(t, "/lim", typ.LimitOptions)
	f := openFile(t, e, "/lim/f", os.O_RDWR|os.O_CREATE, 0o644)
	n, err := f.WriteAt(make([]byte, typ.Limit+100), 0)
	if n != int(typ.Limit) {
		t.Fatalf("a write past the limit of %d bytes wrote %d (%v)", typ.Limit, n, err)
	}
	wantErr(t, "a write past the size limit", err, syscall.ENOSPC)
	_, err = f.WriteAt([]byte("x"), typ.Limit)
	wantErr(t, "a write on a full filesystem", err, syscall.ENOSPC)
	st, err := ns.Statfs("/lim")
	ok(t, err)
	if st.Bfree != 0 {
		t.Fatalf("a full filesystem has %d free blocks", st.Bfree)
	}
	// freeing gives the space back (at the last close of an unlinked file)
	ok(t, ns.Unlink("/lim/f"))
	if st, _ := ns.Statfs("/lim"); st.Bfree != 0 {
		t.Fatalf("an unlinked open file's space came back early: %d free blocks", st.Bfree)
	}
	ok(t, f.Close())
	if st, _ := ns.Statfs("/lim"); st.Bfree*st.Bsize != uint64(typ.Limit) {
		t.Fatalf("after the last close: %d free blocks of %d bytes, want %d bytes", st.Bfree, st.Bsize, typ.Limit)
	}
}

// checkFiles: a read-only type's files are there, regular and readable.
func checkFiles(t *testing.T, e *env) {
	for _, f := range e.typ.Files {
		a := e.attr(t, "/"+f)
		if !a.Mode.IsRegular() {
			t.Errorf("%s: mode %v, want a regular file", f, a.Mode)
		}
		readFile(t, e, "/"+f)
		dir, base := path.Split("/" + f)
		ents, err := e.ns.ReadDir(dir)
		ok(t, err)
		if !slices.ContainsFunc(ents, func(d fs.DirEntry) bool { return d.Name() == base }) {
			t.Errorf("%s lacks %s", dir, base)
		}
	}
}

// checkRefusesChanges: every change to a read-only type is refused and
// changes nothing.
func checkRefusesChanges(t *testing.T, e *env) {
	ns := e.ns
	list := func() string {
		t.Helper()
		ents, err := ns.ReadDir("/")
		ok(t, err)
		var names []string
		for _, d := range ents {
			names = append(names, d.Name())
		}
		return strings.Join(names, "/")
	}
	before := list()
	f := "/" + e.typ.Files[0]
	_, err := ns.Open("/vfstest-new", os.O_WRONLY|os.O_CREATE, 0o644)
	wantRefused(t, "create", err)
	_, err = ns.Open(f, os.O_WRONLY, 0)
	wantRefused(t, "open for writing", err)
	wantRefused(t, "mkdir", ns.Mkdir("/vfstest-dir", 0o755))
	wantRefused(t, "mknod", ns.Mknod("/vfstest-fifo", fs.ModeNamedPipe|0o644, 0))
	wantRefused(t, "symlink", ns.Symlink("x", "/vfstest-link"))
	wantRefused(t, "link", ns.Link(f, "/vfstest-link"))
	wantRefused(t, "rename", ns.Rename(f, "/vfstest-renamed"))
	wantRefused(t, "unlink", ns.Unlink(f))
	wantRefused(t, "truncate", ns.Truncate(f, 0))
	wantRefused(t, "chmod", ns.Chmod(f, 0o777))
	wantRefused(t, "chown", ns.Chown(f, 1, 1))
	if after := list(); after != before {
		t.Fatalf("the refusals changed the root: %q, was %q", after, before)
	}
	readFile(t, e, f)
}
