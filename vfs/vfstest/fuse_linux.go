package vfstest

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"golang.org/x/sys/unix"

	"github.com/raceless/raceless/internal/testdeadline"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/vfs/fusefs"
)

// fuseUnavailable says why the FUSE checks cannot run here, or "".
func fuseUnavailable() string {
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Sprintf("the FUSE checks need root (go-fuse's DirectMount, and other users' credentials for the helpers); running as uid %d", uid)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Sprintf("the FUSE checks need /dev/fuse: %v", err)
	}
	return ""
}

// fuseChecks are the checks through FUSE.
var fuseChecks = []check[*fuseEnv]{
	{"root", both, fuseRoot},
	{"allow_other", both, fuseAllowOther},
	{"posixtest", writable, fusePosixtest},
	{"mknod", writable, fuseMknod},
	{"modes", writable, fuseModes},
	{"long_paths", writable, fuseLongPaths},
	{"names", writable, fuseNames},
	{"sizes", writable, fuseSizes},
	{"open_flags", writable, fuseOpenFlags},
	{"timestamps", writable, fuseTimestamps},
	{"link_counts", writable, fuseLinkCounts},
	{"rename_rmdir", writable, fuseRenameRmdir},
	{"ownership", writable, fuseOwnership},
	{"permissions", writable, fusePermissions},
	{"sticky", writable, fuseSticky},
	{"chmod_chown", writable, fuseChmodChown},
	{"setuid_write", writable, fuseSetuidWrite},
	{"utimes", writable, fuseUtimes},
	{"read_only", readOnly, fuseReadOnly},
}

func runFUSE(t *testing.T, typ Type) {
	if why := fuseUnavailable(); why != "" {
		t.Skip(why)
	}
	bin := helperBinary(t)
	runChecks(t, typ, fuseChecks, func(t *testing.T) *fuseEnv { return newFuseEnv(t, typ, bin) })
}

// fuseEnv is an env whose namespace is exposed through FUSE at dir, to
// every user (allow_other).
type fuseEnv struct {
	*env
	dir string
	bin string // the helper binary
}

func newFuseEnv(t *testing.T, typ Type, bin string) *fuseEnv {
	t.Helper()
	e := &fuseEnv{env: newEnv(t, typ), bin: bin}
	e.dir = e.expose(t, true)
	return e
}

// expose mounts the namespace through FUSE at a new directory open to
// all, and returns it; cleanup unmounts it (lazily, if a file is still
// open) and waits for the server to end.
func (e *fuseEnv) expose(t *testing.T, allowOther bool) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vfstest-fuse-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	srv, err := fusefs.Mount(dir, e.ns.Proc, &fusefs.Options{AllowOther: allowOther})
	if err != nil {
		t.Fatalf("FUSE mount at %s (as root, with /dev/fuse): %v", dir, err)
	}
	t.Cleanup(func() {
		// The kernel releases a closed file after close returned, and an
		// unmount would lose a release not yet sent: wait for them all.
		// A descriptor the check left open fails here, at the deadline.
		ctx, cancel := testdeadline.Context(t)
		defer cancel()
		if err := srv.WaitOpenFiles(ctx, 0); err != nil {
			t.Errorf("%d files still open through FUSE at %s at the end of the check", srv.OpenFiles(), dir)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH) // and let the server go when they close
			return
		}
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount of %s with no file open: %v", dir, err)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// p is the host path of the namespace's name (relative to its root).
func (e *fuseEnv) p(name string) string { return filepath.Join(e.dir, name) }

// step is an op and the errno name it must get ("" for success).
type step struct {
	op   op
	want string
}

// expect makes the steps' ops as u, in one helper, checking each answer;
// it returns the results.
func (e *fuseEnv) expect(t *testing.T, u user, steps ...step) []result {
	t.Helper()
	ops := make([]op, len(steps))
	for i, s := range steps {
		ops[i] = s.op
	}
	res := runAs(t, e.bin, u, ops...)
	for i, s := range steps {
		if res[i].Errno != s.want {
			want := s.want
			if want == "" {
				want = "success"
			}
			t.Errorf("%s as %s: got %q, want %s", describe(s.op), u.name, res[i].Errno, want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return res
}

func describe(o op) string {
	s := o.Op + " " + o.Path
	if o.Path2 != "" {
		s += " " + o.Path2
	}
	return s
}

// mustStat checks an lstat result's mode and owner.
func mustStat(t *testing.T, what string, st *statInfo, mode uint32, uid, gid uint32) {
	t.Helper()
	if st.Mode != mode || st.UID != uid || st.GID != gid {
		t.Errorf("%s: mode %#o owner %d:%d, want %#o %d:%d", what, st.Mode, st.UID, st.GID, mode, uid, gid)
	}
}

// vmkdir makes a directory in the namespace, with exactly perm (the VFS
// applies no umask), owned by root.
func (e *fuseEnv) vmkdir(t *testing.T, name string, perm fs.FileMode) {
	t.Helper()
	ok(t, e.ns.Mkdir(name, 0o755))
	ok(t, e.ns.Chmod(name, perm))
}

type dirent struct {
	ino uint64
	typ uint8
}

// readdirIno lists dir with getdents64(2): name -> inode number and type.
func readdirIno(t *testing.T, dir string) map[string]dirent {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	out := map[string]dirent{}
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return out
		}
		for b := buf[:n]; len(b) > 0; {
			reclen := binary.NativeEndian.Uint16(b[16:18])
			name := b[19:reclen]
			if i := slices.Index(name, 0); i >= 0 {
				name = name[:i]
			}
			out[string(name)] = dirent{ino: binary.NativeEndian.Uint64(b[0:8]), typ: b[18]}
			b = b[reclen:]
		}
	}
}

// fuseRoot: the root is inode 1, lists "." and ".." (both the root), and
// every entry's inode number is the one stat gives.
func fuseRoot(t *testing.T, e *fuseEnv) {
	var st unix.Stat_t
	ok(t, unix.Stat(e.dir, &st))
	if st.Ino != 1 {
		t.Errorf("the mount root's inode number is %d, want 1", st.Ino)
	}
	if !e.typ.ReadOnly {
		ok(t, e.ns.Mkdir("/d", 0o755))
		ok(t, e.ns.WriteFile("/f", nil, 0o644))
	}
	ents := readdirIno(t, e.dir)
	for _, dot := range []string{".", ".."} {
		if d, found := ents[dot]; !found || d.ino != 1 || d.typ != unix.DT_DIR {
			t.Errorf("root listing: %q is %+v (listed: %v), want inode 1, a directory", dot, d, found)
		}
	}
	for name, d := range ents {
		if name == "." || name == ".." {
			continue
		}
		ok(t, unix.Lstat(e.p(name), &st))
		if st.Ino != d.ino {
			t.Errorf("%s: listed inode %d, lstat %d", name, d.ino, st.Ino)
		}
	}
	if len(ents) < 3 {
		t.Errorf("root listing %v: nothing but the dots", ents)
	}
	var sf unix.Statfs_t
	ok(t, unix.Statfs(e.dir, &sf))
	if sf.Namelen != vfs.NameMax {
		t.Errorf("statfs: name length %d, want %d", sf.Namelen, vfs.NameMax)
	}
	if !e.typ.ReadOnly {
		ents = readdirIno(t, e.p("d"))
		ok(t, unix.Stat(e.p("d"), &st))
		if ents["."].ino != st.Ino || ents[".."].ino != 1 || len(ents) != 2 {
			t.Errorf("listing of an empty directory (inode %d): %v", st.Ino, ents)
		}
	}
}

// fuseAllowOther: without allow_other the kernel refuses other users;
// with it they reach the mount.
func fuseAllowOther(t *testing.T, e *fuseEnv) {
	closed := e.expose(t, false)
	e.expect(t, u1,
		step{op{Op: "stat", Path: closed}, "EACCES"},
		step{op{Op: "stat", Path: e.dir}, ""},
	)
	e.expect(t, rootUser, step{op{Op: "stat", Path: closed}, ""})
}

// posixSkips are the go-fuse posixtest tests that cannot pass, and why.
var posixSkips = map[string]string{
	"XAttr":               "extended attributes are not implemented by the VFS",
	"XAttrLarge":          "extended attributes are not implemented by the VFS",
	"Fallocate":           "fallocate(2) is not implemented by the VFS (EOPNOTSUPP is Linux's answer for a filesystem without it)",
	"FallocateKeepSize":   "fallocate(2) is not implemented by the VFS (EOPNOTSUPP is Linux's answer for a filesystem without it)",
	"FcntlFlockLocksFile": "file locks are not implemented by the FUSE server (go-fuse EnableLocks off); the kernel's local locking does not give the conflict this test expects",
}

func fusePosixtest(t *testing.T, e *fuseEnv) {
	names := make([]string, 0, len(posixtest.All))
	for n := range posixtest.All {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if why, found := posixSkips[name]; found {
				t.Skip(why)
			}
			ok(t, e.ns.Mkdir("/"+name, 0o755))
			posixtest.All[name](t, e.p(name))
		})
	}
}

// fuseMknod: named pipes, device nodes and sockets are made (the outside
// run's cause (a): there was no mknod, EOPNOTSUPP), show their types and
// device numbers, and a named pipe works (the kernel runs it).
func fuseMknod(t *testing.T, e *fuseEnv) {
	chr, blk := unix.Mkdev(1, 3), unix.Mkdev(8, 1)
	res := e.expect(t, rootUser,
		step{op{Op: "mknod", Path: e.p("fifo"), Mode: unix.S_IFIFO | 0o644}, ""},
		step{op{Op: "mknod", Path: e.p("chr"), Mode: unix.S_IFCHR | 0o600, Dev: chr}, ""},
		step{op{Op: "mknod", Path: e.p("blk"), Mode: unix.S_IFBLK | 0o640, Dev: blk}, ""},
		step{op{Op: "bind", Path: e.p("sock")}, ""},
		step{op{Op: "mknod", Path: e.p("fifo"), Mode: unix.S_IFIFO | 0o644}, "EEXIST"},
		step{op{Op: "lstat", Path: e.p("fifo")}, ""},
		step{op{Op: "lstat", Path: e.p("chr")}, ""},
		step{op{Op: "lstat", Path: e.p("blk")}, ""},
		step{op{Op: "lstat", Path: e.p("sock")}, ""},
	)
	for i, want := range []struct {
		name string
		mode uint32
		rdev uint64
	}{{"fifo", unix.S_IFIFO | 0o644, 0}, {"chr", unix.S_IFCHR | 0o600, chr}, {"blk", unix.S_IFBLK | 0o640, blk}, {"sock", unix.S_IFSOCK | 0o777, 0}} {
		if st := res[5+i].Stat; st.Mode != want.mode || st.Rdev != want.rdev || st.Nlink != 1 {
			t.Errorf("%s: mode %#o rdev %#x nlink %d, want %#o %#x 1", want.name, st.Mode, st.Rdev, st.Nlink, want.mode, want.rdev)
		}
	}
	if a := e.attr(t, "/fifo"); a.Mode != fs.ModeNamedPipe|0o644 {
		t.Errorf("the VFS sees the named pipe as %v", a.Mode)
	}
	fd, err := unix.Open(e.p("fifo"), unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	ok(t, err)
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte("through the pipe")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, err := unix.Read(fd, b)
	if err != nil || string(b[:n]) != "through the pipe" {
		t.Fatalf("read from the named pipe: %q %v", b[:n], err)
	}
	e.expect(t, rootUser, step{op{Op: "mknod", Path: e.p("dir"), Mode: unix.S_IFDIR | 0o755}, "EPERM"})
}

// fuseModes: a mode is kept as given, 0 included (the outside run's cause
// (e): mode 0 read back 0644 and 0755), and with setuid, setgid, sticky.
func fuseModes(t *testing.T, e *fuseEnv) {
	res := e.expect(t, rootUser,
		step{op{Op: "open", Path: e.p("f0"), Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0}, ""},
		step{op{Op: "mkdir", Path: e.p("d0"), Mode: 0}, ""},
		step{op{Op: "mkdir", Path: e.p("sticky"), Mode: 0o1777}, ""},
		step{op{Op: "open", Path: e.p("suid"), Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o6755}, ""},
		step{op{Op: "open", Path: e.p("f1"), Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o644}, ""},
		step{op{Op: "chmod", Path: e.p("f1"), Mode: 0}, ""},
		step{op{Op: "lstat", Path: e.p("f0")}, ""},
		step{op{Op: "lstat", Path: e.p("d0")}, ""},
		step{op{Op: "lstat", Path: e.p("sticky")}, ""},
		step{op{Op: "lstat", Path: e.p("suid")}, ""},
		step{op{Op: "lstat", Path: e.p("f1")}, ""},
	)
	for i, want := range []uint32{unix.S_IFREG, unix.S_IFDIR, unix.S_IFDIR | 0o1777, unix.S_IFREG | 0o6755, unix.S_IFREG} {
		mustStat(t, []string{"f0", "d0", "sticky", "suid", "f1 after chmod 0"}[i], res[6+i].Stat, want, 0, 0)
	}
}

// fuseLongPaths: a path relative to a directory deep in the tree may be as
// long as Linux allows (PATH_MAX, 4096 bytes with its NUL), at any depth:
// the outside run's cause (c), where the server rebuilt absolute paths in
// the namespace and lost the mount's prefix from the usable length.
func fuseLongPaths(t *testing.T, e *fuseEnv) {
	name := strings.Repeat("d", vfs.NameMax)
	ok(t, e.ns.Mkdir("/deep", 0o755))
	// 16 levels of 255-byte names, each made from a descriptor of its
	// parent: more than 4096 bytes from the mount.
	dirfd := func(parent int, name string) int {
		t.Helper()
		fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		ok(t, err)
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	first := -1
	for level, fd := 1, dirfd(unix.AT_FDCWD, e.p("deep")); level <= 16; level++ {
		ok(t, unix.Mkdirat(fd, name, 0o755))
		fd = dirfd(fd, name)
		if level == 1 {
			first = fd
		}
	}
	// From level 1: 15 directories and a file name, 16 names of 255 bytes
	// and 15 slashes: 4095 bytes.
	rel := strings.Repeat(name+"/", 15) + strings.Repeat("f", vfs.NameMax)
	if len(rel) != vfs.PathMax-1 {
		t.Fatalf("built a %d-byte path", len(rel))
	}
	f, err := unix.Openat(first, rel, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatalf("openat of a 4095-byte relative path, %d bytes below the mount: %v", len("deep/")+len(rel)+vfs.NameMax+1, err)
	}
	if _, err := unix.Write(f, []byte("deep")); err != nil {
		t.Fatal(err)
	}
	unix.Close(f)
	var st unix.Stat_t
	if err := unix.Fstatat(first, rel, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Size != 4 {
		t.Fatalf("fstatat of the 4095-byte path: size %d, %v", st.Size, err)
	}
	if err := unix.Fstatat(first, "./"+rel, &st, 0); err != syscall.ENAMETOOLONG {
		t.Fatalf("a 4097-byte path: %v, want ENAMETOOLONG", err)
	}
	ok(t, unix.Unlinkat(first, rel, 0))
}

// fuseNames: NAME_MAX and a symlink target of PATH_MAX-1 bytes.
func fuseNames(t *testing.T, e *fuseEnv) {
	long := strings.Repeat("n", vfs.NameMax)
	target := strings.Repeat("t", vfs.PathMax-1)
	e.expect(t, rootUser,
		step{op{Op: "open", Path: e.p(long), Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o644}, ""},
		step{op{Op: "open", Path: e.p(long + "x"), Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o644}, "ENAMETOOLONG"},
		step{op{Op: "mkdir", Path: e.p(long + "x"), Mode: 0o755}, "ENAMETOOLONG"},
		step{op{Op: "lstat", Path: e.p(long + "x")}, "ENAMETOOLONG"},
		step{op{Op: "symlink", Path: target, Path2: e.p("link")}, ""},
	)
	if got, err := os.Readlink(e.p("link")); err != nil || got != target {
		t.Fatalf("readlink of a 4095-byte target: %d bytes, %v", len(got), err)
	}
}

// fuseSizes: the outside run's cause (d): a truncate to 999999999999999
// bytes panicked the daemon (EIO); now sizes past the maximum are EFBIG, a
// huge sparse file allocates nothing, and a full filesystem is ENOSPC.
func fuseSizes(t *testing.T, e *fuseEnv) {
	typ := e.typ
	if typ.MaxFileSize == 0 && typ.Limit == 0 {
		t.Skip("the type declares no size limit nor maximum file size (Type.Limit, Type.MaxFileSize)")
	}
	if max := typ.MaxFileSize; max > 0 {
		f := e.p("sparse")
		fd, err := unix.Open(f, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		ok(t, err)
		defer unix.Close(fd)
		if max < 999999999999999 {
			if err := unix.Truncate(f, 999999999999999); err != syscall.EFBIG {
				t.Fatalf("truncate to 999999999999999: %v, want EFBIG", err)
			}
		}
		var sf0, sf1 unix.Statfs_t
		ok(t, unix.Statfs(e.dir, &sf0))
		ok(t, unix.Truncate(f, max))
		ok(t, unix.Statfs(e.dir, &sf1))
		var st unix.Stat_t
		ok(t, unix.Stat(f, &st))
		if st.Size != max || st.Blocks != 0 || sf1.Bfree != sf0.Bfree {
			t.Fatalf("truncate to %d: size %d, blocks %d, free blocks %d -> %d", max, st.Size, st.Blocks, sf0.Bfree, sf1.Bfree)
		}
		if err := unix.Truncate(f, max+1); err != syscall.EFBIG {
			t.Fatalf("truncate past the maximum file size: %v, want EFBIG", err)
		}
		b := []byte("garbage!")
		if n, err := unix.Pread(fd, b, max-4); n != 4 || err != nil || string(b[:4]) != "\x00\x00\x00\x00" {
			t.Fatalf("read of the hole at the end: %q %v", b[:n], err)
		}
		if _, err := unix.Pwrite(fd, []byte("x"), max); err != syscall.EFBIG {
			t.Fatalf("a write at the maximum file size: %v, want EFBIG", err)
		}
		if n, err := unix.Pwrite(fd, []byte("xy"), max-1); n != 1 || err != nil {
			t.Fatalf("a write across the maximum file size: %d %v, want 1 byte written", n, err)
		}
	}
	if typ.Limit == 0 {
		return
	}
	ok(t, e.ns.Mkdir("/lim", 0o755))
	e.mount(t, "/lim", typ.LimitOptions)
	fd, err := unix.Open(e.p("lim/f"), unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	ok(t, err)
	defer unix.Close(fd)
	if n, err := unix.Write(fd, make([]byte, typ.Limit+100)); n != int(typ.Limit) || err != nil {
		t.Fatalf("a write past the limit of %d bytes: %d %v, want %d bytes written", typ.Limit, n, err, typ.Limit)
	}
	if _, err := unix.Write(fd, []byte("x")); err != syscall.ENOSPC {
		t.Fatalf("a write on a full filesystem: %v, want ENOSPC", err)
	}
}

// fuseOpenFlags: O_EXCL, O_TRUNC and O_APPEND through the kernel.
func fuseOpenFlags(t *testing.T, e *fuseEnv) {
	f := e.p("f")
	ok(t, os.WriteFile(f, []byte("hello"), 0o644))
	if _, err := unix.Open(f, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o644); err != syscall.EEXIST {
		t.Fatalf("O_CREAT|O_EXCL of an existing file: %v", err)
	}
	fd, err := unix.Open(f, unix.O_RDONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0)
	ok(t, err)
	unix.Close(fd)
	if fi, err := os.Stat(f); err != nil || fi.Size() != 0 {
		t.Fatalf("after O_RDONLY|O_TRUNC: %v %v", fi, err)
	}
	ok(t, os.WriteFile(f, []byte("12"), 0o644))
	fa, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND, 0)
	ok(t, err)
	defer fa.Close()
	fw, err := os.OpenFile(f, os.O_WRONLY, 0)
	ok(t, err)
	defer fw.Close()
	if _, err := fw.WriteAt([]byte("xyz"), 2); err != nil {
		t.Fatal(err)
	}
	if _, err := fa.Write([]byte("!")); err != nil {
		t.Fatal(err)
	}
	if got := readHost(t, f); got != "12xyz!" {
		t.Fatalf("O_APPEND after another descriptor extended the file: %q", got)
	}
}

func readHost(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	ok(t, err)
	return string(b)
}

func statHost(t *testing.T, name string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	ok(t, unix.Lstat(name, &st))
	return st
}

func tsTime(ts unix.Timespec) time.Time { return time.Unix(ts.Unix()) }

// fuseTimestamps: what changes which time, seen through the kernel.
func fuseTimestamps(t *testing.T, e *fuseEnv) {
	d, f := e.p("d"), e.p("d/f")
	pastTS := []unix.Timespec{unix.NsecToTimespec(past.UnixNano()), unix.NsecToTimespec(past.UnixNano())}
	ok(t, os.Mkdir(d, 0o755))
	ok(t, unix.UtimesNano(d, pastTS))
	ok(t, os.WriteFile(f, []byte("data"), 0o644))
	if st := statHost(t, d); !tsTime(st.Mtim).After(past) {
		t.Fatalf("create: parent mtime %v", tsTime(st.Mtim))
	}
	ok(t, unix.UtimesNano(f, pastTS))
	ok(t, os.WriteFile(f, []byte("DATA"), 0o644))
	if st := statHost(t, f); !tsTime(st.Mtim).After(past) || !tsTime(st.Atim).Equal(past) {
		t.Fatalf("write: mtime %v atime %v", tsTime(st.Mtim), tsTime(st.Atim))
	}
	ok(t, unix.UtimesNano(f, pastTS))
	st := statHost(t, f)
	mark := tick(t, tsTime(st.Ctim))
	ok(t, os.Chmod(f, 0o600))
	if st = statHost(t, f); !tsTime(st.Mtim).Equal(past) || tsTime(st.Ctim).Before(mark) {
		t.Fatalf("chmod: mtime %v ctime %v (chmod after %v)", tsTime(st.Mtim), tsTime(st.Ctim), mark)
	}
	ok(t, os.Truncate(f, 1))
	if st = statHost(t, f); !tsTime(st.Mtim).After(past) {
		t.Fatalf("truncate: mtime %v", tsTime(st.Mtim))
	}
}

// fuseLinkCounts: st_nlink of files and directories through the kernel.
func fuseLinkCounts(t *testing.T, e *fuseEnv) {
	nlink := func(name string) uint64 { t.Helper(); return uint64(statHost(t, e.p(name)).Nlink) }
	ok(t, os.WriteFile(e.p("f"), nil, 0o644))
	ok(t, os.Link(e.p("f"), e.p("g")))
	if nlink("f") != 2 || statHost(t, e.p("f")).Ino != statHost(t, e.p("g")).Ino {
		t.Fatalf("after link: nlink %d", nlink("f"))
	}
	ok(t, os.Remove(e.p("g")))
	root := nlink(".")
	ok(t, os.Mkdir(e.p("d"), 0o755))
	ok(t, os.Mkdir(e.p("d/s"), 0o755))
	if nlink("f") != 1 || nlink("d") != 3 || nlink(".") != root+1 {
		t.Fatalf("file %d, directory with a subdirectory %d, parent %d (was %d)", nlink("f"), nlink("d"), nlink("."), root)
	}
	ok(t, os.Rename(e.p("d/s"), e.p("s")))
	if nlink("d") != 2 || nlink(".") != root+2 {
		t.Fatalf("after moving the subdirectory up: %d, parent %d", nlink("d"), nlink("."))
	}
}

// fuseRenameRmdir: rename and rmdir edge cases, with a raceless mount
// inside the exposed tree (EBUSY, EXDEV come from the server; the kernel
// answers what its own checks catch first).
func fuseRenameRmdir(t *testing.T, e *fuseEnv) {
	for _, d := range []string{"/r", "/r/a", "/r/a/b", "/r/e", "/r/full", "/r/m"} {
		ok(t, e.ns.Mkdir(d, 0o755))
	}
	ok(t, e.ns.WriteFile("/r/full/x", nil, 0o644))
	ok(t, e.ns.WriteFile("/r/f", nil, 0o644))
	e.mount(t, "/r/m", e.typ.Options)
	p := func(n string) string { return e.p("r/" + n) }
	e.expect(t, rootUser,
		step{op{Op: "rename", Path: p("a"), Path2: p("a/b/c")}, "EINVAL"},
		step{op{Op: "rename", Path: p("e"), Path2: p("full")}, "ENOTEMPTY"},
		step{op{Op: "rename", Path: p("e"), Path2: p("f")}, "ENOTDIR"},
		step{op{Op: "rename", Path: p("f"), Path2: p("e")}, "EISDIR"},
		step{op{Op: "rename", Path: p("missing"), Path2: p("x")}, "ENOENT"},
		step{op{Op: "rmdir", Path: p("full")}, "ENOTEMPTY"},
		step{op{Op: "rmdir", Path: p("f")}, "ENOTDIR"},
		step{op{Op: "rmdir", Path: p("a") + "/."}, "EINVAL"}, // not joined: Join would clean the dot away
		step{op{Op: "unlink", Path: p("e")}, "EISDIR"},
		step{op{Op: "rmdir", Path: p("m")}, "EBUSY"},
		step{op{Op: "rename", Path: p("m"), Path2: p("m2")}, "EBUSY"},
		step{op{Op: "rename", Path: p("f"), Path2: p("m/f")}, "EXDEV"},
		step{op{Op: "link", Path: p("f"), Path2: p("m/f")}, "EXDEV"},
		step{op{Op: "rename", Path: p("e"), Path2: p("e2")}, ""},
		step{op{Op: "rmdir", Path: p("e2")}, ""},
	)
}

// fuseOwnership: what another user makes is that user's (the outside
// run's cause (b): new files got uid 0 whoever made them), with a setgid
// directory's group.
func fuseOwnership(t *testing.T, e *fuseEnv) {
	e.vmkdir(t, "/shared", 0o777)
	s := func(n string) string { return e.p("shared/" + n) }
	res := e.expect(t, u1,
		step{op{Op: "open", Path: s("f"), Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o644}, ""},
		step{op{Op: "mkdir", Path: s("d"), Mode: 0o755}, ""},
		step{op{Op: "symlink", Path: "f", Path2: s("l")}, ""},
		step{op{Op: "mknod", Path: s("p"), Mode: unix.S_IFIFO | 0o600}, ""},
		step{op{Op: "bind", Path: s("s")}, ""},
		step{op{Op: "lstat", Path: s("f")}, ""},
		step{op{Op: "lstat", Path: s("d")}, ""},
		step{op{Op: "lstat", Path: s("l")}, ""},
		step{op{Op: "lstat", Path: s("p")}, ""},
		step{op{Op: "lstat", Path: s("s")}, ""},
	)
	for i, mode := range []uint32{unix.S_IFREG | 0o644, unix.S_IFDIR | 0o755, unix.S_IFLNK | 0o777, unix.S_IFIFO | 0o600, unix.S_IFSOCK | 0o777} {
		mustStat(t, "made by u1: "+[]string{"file", "directory", "symlink", "named pipe", "socket"}[i], res[5+i].Stat, mode, u1.uid, u1.gid)
	}
	// a setgid directory owned by group 4242, which u1 is not in
	e.vmkdir(t, "/sg", 0o777)
	ok(t, e.ns.Chown("/sg", 0, 4242))
	ok(t, e.ns.Chmod("/sg", fs.ModeSetgid|0o777))
	res = e.expect(t, u1,
		step{op{Op: "open", Path: e.p("sg/f"), Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o2755}, ""},
		step{op{Op: "mkdir", Path: e.p("sg/d"), Mode: 0o755}, ""},
		step{op{Op: "lstat", Path: e.p("sg/f")}, ""},
		step{op{Op: "lstat", Path: e.p("sg/d")}, ""},
	)
	// the file's setgid bit is dropped (u1 is not in 4242); the directory inherits it
	mustStat(t, "a file made by u1 in a setgid directory", res[2].Stat, unix.S_IFREG|0o755, u1.uid, 4242)
	mustStat(t, "a directory made by u1 in a setgid directory", res[3].Stat, unix.S_IFDIR|0o2755, u1.uid, 4242)
}

// fusePermissions: the permission bits decide, with supplementary groups
// (which only the kernel knows: default_permissions).
func fusePermissions(t *testing.T, e *fuseEnv) {
	e.vmkdir(t, "/perm", 0o777)
	e.vmkdir(t, "/ro", 0o755)
	p := func(n string) string { return e.p("perm/" + n) }
	e.expect(t, u1,
		step{op{Op: "write", Path: p("f"), Flags: unix.O_CREAT, Mode: 0o600, Data: "secret"}, ""},
		step{op{Op: "mkdir", Path: p("d"), Mode: 0o700}, ""},
		step{op{Op: "open", Path: e.p("ro/x"), Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o644}, "EACCES"},
		step{op{Op: "mkdir", Path: e.p("ro/y"), Mode: 0o755}, "EACCES"},
		step{op{Op: "symlink", Path: "x", Path2: e.p("ro/z")}, "EACCES"},
		step{op{Op: "mknod", Path: e.p("ro/p"), Mode: unix.S_IFIFO | 0o644}, "EACCES"},
	)
	e.expect(t, u2,
		step{op{Op: "open", Path: p("f"), Flags: unix.O_RDONLY}, "EACCES"},
		step{op{Op: "open", Path: p("f"), Flags: unix.O_WRONLY}, "EACCES"},
		step{op{Op: "truncate", Path: p("f")}, "EACCES"},
		step{op{Op: "lstat", Path: p("f")}, ""},
		step{op{Op: "lstat", Path: p("d/x")}, "EACCES"},
		step{op{Op: "mkdir", Path: p("d/y"), Mode: 0o755}, "EACCES"},
	)
	if r := e.expect(t, u1, step{op{Op: "read", Path: p("f")}, ""}); r[0].Data != "secret" {
		t.Fatalf("the owner reads %q", r[0].Data)
	}
	if got := readHost(t, p("f")); got != "secret" { // root passes the bits
		t.Fatalf("root reads %q", got)
	}
	// a group the file belongs to, which is u1's supplementary group
	ok(t, e.ns.WriteFile("/perm/g", []byte("group"), 0o644))
	ok(t, e.ns.Chown("/perm/g", 0, g1))
	ok(t, e.ns.Chmod("/perm/g", 0o040))
	if r := e.expect(t, u1, step{op{Op: "read", Path: p("g")}, ""}); r[0].Data != "group" {
		t.Fatalf("a supplementary group's member reads %q", r[0].Data)
	}
	e.expect(t, u2,
		step{op{Op: "read", Path: p("g")}, "EACCES"},
		step{op{Op: "unlink", Path: p("f")}, ""}, // the directory is writable and not sticky
	)
}

// fuseSticky: in a sticky directory only a file's owner, the directory's
// owner and root remove or rename it (EPERM for others).
func fuseSticky(t *testing.T, e *fuseEnv) {
	e.vmkdir(t, "/tmp", fs.ModeSticky|0o777)
	p := func(n string) string { return e.p("tmp/" + n) }
	e.expect(t, u1,
		step{op{Op: "open", Path: p("f1"), Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o666}, ""},
		step{op{Op: "mkdir", Path: p("d1"), Mode: 0o777}, ""},
		step{op{Op: "mkdir", Path: p("s"), Mode: 0o1777}, ""},
	)
	e.expect(t, u2,
		step{op{Op: "unlink", Path: p("f1")}, "EPERM"},
		step{op{Op: "rename", Path: p("f1"), Path2: p("x")}, "EPERM"},
		step{op{Op: "rmdir", Path: p("d1")}, "EPERM"},
		step{op{Op: "open", Path: p("f2"), Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o644}, ""},
		step{op{Op: "rename", Path: p("f2"), Path2: p("f3")}, ""},
		step{op{Op: "open", Path: p("s/x"), Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o644}, ""},
		step{op{Op: "unlink", Path: p("f3")}, ""},
	)
	e.expect(t, u1,
		step{op{Op: "unlink", Path: p("s/x")}, ""}, // the directory's owner
		step{op{Op: "unlink", Path: p("f1")}, ""},
	)
	e.expect(t, rootUser, step{op{Op: "rmdir", Path: p("d1")}, ""})
}

// fuseChmodChown: only the owner changes the mode, only root the owner,
// the owner the group to one of its groups; chmod by a user outside the
// file's group drops setgid; chown of a file drops setuid and setgid.
func fuseChmodChown(t *testing.T, e *fuseEnv) {
	e.vmkdir(t, "/c", 0o777)
	f := e.p("c/f")
	e.expect(t, u1, step{op{Op: "open", Path: f, Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o644}, ""})
	e.expect(t, u2,
		step{op{Op: "chmod", Path: f, Mode: 0o777}, "EPERM"},
		step{op{Op: "chown", Path: f, UID: int(u2.uid), GID: -1}, "EPERM"},
	)
	res := e.expect(t, u1,
		step{op{Op: "chmod", Path: f, Mode: 0o640}, ""},
		step{op{Op: "chown", Path: f, UID: -1, GID: g1}, ""},
		step{op{Op: "chown", Path: f, UID: -1, GID: 4242}, "EPERM"},
		step{op{Op: "chown", Path: f, UID: int(u2.uid), GID: -1}, "EPERM"},
		step{op{Op: "lstat", Path: f}, ""},
	)
	mustStat(t, "after the owner's chmod and chgrp", res[4].Stat, unix.S_IFREG|0o640, u1.uid, g1)
	ok(t, e.ns.Chown("/c/f", u1.uid, 4242))
	res = e.expect(t, u1,
		step{op{Op: "chmod", Path: f, Mode: 0o2755}, ""},
		step{op{Op: "lstat", Path: f}, ""},
	)
	mustStat(t, "setgid asked by an owner outside the group", res[1].Stat, unix.S_IFREG|0o755, u1.uid, 4242)
	ok(t, e.ns.Mkdir("/c/sd", 0o755))
	res = e.expect(t, rootUser,
		step{op{Op: "chmod", Path: f, Mode: 0o6755}, ""},
		step{op{Op: "chown", Path: f, UID: int(u2.uid), GID: int(u2.gid)}, ""},
		step{op{Op: "chmod", Path: e.p("c/sd"), Mode: 0o2755}, ""},
		step{op{Op: "chown", Path: e.p("c/sd"), UID: int(u2.uid), GID: int(u2.gid)}, ""},
		step{op{Op: "lstat", Path: f}, ""},
		step{op{Op: "lstat", Path: e.p("c/sd")}, ""},
	)
	mustStat(t, "a setuid, setgid file after chown", res[4].Stat, unix.S_IFREG|0o755, u2.uid, u2.gid)
	mustStat(t, "a setgid directory after chown", res[5].Stat, unix.S_IFDIR|0o2755, u2.uid, u2.gid)
}

// fuseSetuidWrite: a write by a user other than root clears setuid, and
// setgid when the group may execute; root's write keeps both.
func fuseSetuidWrite(t *testing.T, e *fuseEnv) {
	e.vmkdir(t, "/sw", 0o777)
	f := e.p("sw/f")
	ok(t, os.WriteFile(f, nil, 0o666))
	write := op{Op: "write", Path: f, Data: "x"}
	cases := []struct {
		by         user
		mode, want uint32
	}{
		{u2, 0o6777, 0o777},
		{rootUser, 0o6777, 0o6777},
		{u2, 0o2767, 0o2767}, // setgid without group execute: a mandatory-locking mark, kept
		{u2, 0o4767, 0o767},
	}
	for _, c := range cases {
		ok(t, unix.Chmod(f, c.mode))
		res := e.expect(t, c.by, step{write, ""}, step{op{Op: "lstat", Path: f}, ""})
		if got := res[1].Stat.Mode &^ unix.S_IFMT; got != c.want {
			t.Errorf("a write by %s to a %#o file: mode %#o, want %#o", c.by.name, c.mode, got, c.want)
		}
	}
}

// fuseUtimes: setting times to now needs write permission; setting them
// to given values needs ownership.
func fuseUtimes(t *testing.T, e *fuseEnv) {
	e.vmkdir(t, "/t", 0o777)
	f := e.p("t/f")
	e.expect(t, u1, step{op{Op: "open", Path: f, Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o666}, ""})
	e.expect(t, u2,
		step{op{Op: "utimes", Path: f}, ""},
		step{op{Op: "utimes", Path: f, Times: []int64{1_000_000_000, 1_100_000_000}}, "EPERM"},
	)
	res := e.expect(t, u1,
		step{op{Op: "utimes", Path: f, Times: []int64{1_000_000_000, 1_100_000_000}}, ""},
		step{op{Op: "chmod", Path: f, Mode: 0o644}, ""},
		step{op{Op: "lstat", Path: f}, ""},
	)
	if st := res[2].Stat; st.Atime != 1_000_000_000e9 || st.Mtime != 1_100_000_000e9 {
		t.Errorf("utimes by the owner: atime %d mtime %d", st.Atime, st.Mtime)
	}
	e.expect(t, u2, step{op{Op: "utimes", Path: f}, "EACCES"})
}

// fuseReadOnly: through FUSE a read-only type's files read, for any user,
// and every change is refused.
func fuseReadOnly(t *testing.T, e *fuseEnv) {
	steps := []step{}
	for _, f := range e.typ.Files {
		steps = append(steps, step{op{Op: "read", Path: e.p(f)}, ""})
	}
	e.expect(t, u1, steps...)
	f := e.p(e.typ.Files[0])
	res := runAs(t, e.bin, rootUser,
		op{Op: "mkdir", Path: e.p("vfstest-dir"), Mode: 0o755},
		op{Op: "open", Path: e.p("vfstest-new"), Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o644},
		op{Op: "open", Path: f, Flags: unix.O_WRONLY},
		op{Op: "unlink", Path: f},
		op{Op: "rename", Path: f, Path2: e.p("vfstest-renamed")},
		op{Op: "truncate", Path: f},
		op{Op: "chmod", Path: f, Mode: 0o777},
		op{Op: "mknod", Path: e.p("vfstest-fifo"), Mode: unix.S_IFIFO | 0o644},
	)
	for i, r := range res {
		if !slices.Contains([]string{"EACCES", "EPERM", "EROFS"}, r.Errno) {
			t.Errorf("change %d through FUSE of a read-only type: %q, want EACCES, EPERM or EROFS", i, r.Errno)
		}
	}
}
