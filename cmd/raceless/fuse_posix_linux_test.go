package main_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFusePosixCauses reproduces, through `serve --fuse` over the default
// ramfs, each failure an outside run of a POSIX conformance suite
// (pjdfstest, as root) found, and checks Linux's answer now: (a) mkfifo,
// device nodes and binding a Unix socket (there was no mknod:
// EOPNOTSUPP); (c) a path near PATH_MAX relative to a deep directory (the
// server rebuilt absolute paths and lost the mount's prefix from the
// usable length: ENAMETOOLONG); (d) a truncate to 999999999999999 bytes
// (a panic in ramfs, EIO, and a daemon that could be made to allocate
// without bound: now EFBIG, and the default mount has a size limit);
// (e) modes 0 (read back 0644 and 0755); the root's inode number (was 0)
// and "." and ".." in listings. The daemon stays untainted. (Cause (b),
// ownership and permissions for other users, needs allow_other: the
// filesystem suite, vfs/vfstest, checks it over FUSE.)
func TestFusePosixCauses(t *testing.T) {
	needFuse(t)
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--fuse", dir)
	p := func(n string) string { return filepath.Join(dir, n) }
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// (a) special files
	must("mkfifo", unix.Mkfifo(p("fifo"), 0o644))
	must("mknod of a character device", unix.Mknod(p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	must("socket", err)
	defer unix.Close(sock)
	must("bind of a Unix socket", unix.Bind(sock, &unix.SockaddrUnix{Name: p("sock")}))
	// (the test's umask may clear bits: the types are what matters here)
	for name, mode := range map[string]uint32{"fifo": unix.S_IFIFO, "null": unix.S_IFCHR, "sock": unix.S_IFSOCK} {
		var st unix.Stat_t
		must("lstat "+name, unix.Lstat(p(name), &st))
		if st.Mode&unix.S_IFMT != mode || name == "null" && st.Rdev != unix.Mkdev(1, 3) {
			t.Errorf("%s: mode %#o rdev %#x, want type %#o", name, st.Mode, st.Rdev, mode)
		}
	}

	// (e) modes 0
	fd, err := unix.Open(p("zero"), unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0)
	must("create with mode 0", err)
	unix.Close(fd)
	must("mkdir with mode 0", unix.Mkdir(p("zerodir"), 0))
	for name, mode := range map[string]uint32{"zero": unix.S_IFREG, "zerodir": unix.S_IFDIR} {
		var st unix.Stat_t
		must("lstat "+name, unix.Lstat(p(name), &st))
		if st.Mode != mode {
			t.Errorf("%s made with mode 0: %#o, want %#o", name, st.Mode, mode)
		}
	}

	// (c) 16 levels of 255-byte names, each made from a descriptor of its
	// parent, then a 4095-byte path from level 1
	name := strings.Repeat("d", 255)
	must("mkdir deep", os.Mkdir(p("deep"), 0o755))
	dirfd := func(parent int, name string) int {
		t.Helper()
		fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		must("open "+name[:1], err)
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	first := -1
	for level, fd := 1, dirfd(unix.AT_FDCWD, p("deep")); level <= 16; level++ {
		must("mkdirat", unix.Mkdirat(fd, name, 0o755))
		fd = dirfd(fd, name)
		if level == 1 {
			first = fd
		}
	}
	rel := strings.Repeat(name+"/", 15) + strings.Repeat("f", 255)
	fd, err = unix.Openat(first, rel, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatalf("openat of a %d-byte relative path below the FUSE mount: %v", len(rel), err)
	}
	unix.Close(fd)

	// (d) sizes
	if err := unix.Truncate(p("zero"), 999999999999999); err != syscall.EFBIG {
		t.Errorf("truncate to 999999999999999: %v, want EFBIG", err)
	}
	// the default ramfs holds at most half the machine's memory (tmpfs's
	// default), in 4 KiB blocks, and half as many inodes as it has pages
	var si unix.Sysinfo_t
	must("sysinfo", unix.Sysinfo(&si))
	mem := uint64(si.Totalram) * uint64(si.Unit)
	var sf unix.Statfs_t
	must("statfs", unix.Statfs(dir, &sf))
	if sf.Bsize != 4096 || sf.Blocks != (mem/2+4095)/4096 || sf.Files != mem/4096/2 {
		t.Errorf("the default ramfs: %d blocks of %d bytes, %d inodes; want %d blocks of 4096 bytes (half of %d bytes of memory), %d inodes",
			sf.Blocks, sf.Bsize, sf.Files, (mem/2+4095)/4096, mem, mem/4096/2)
	}

	// the root's inode number; "." and ".." in a listing
	var st unix.Stat_t
	must("stat of the mount", unix.Stat(dir, &st))
	if st.Ino != 1 {
		t.Errorf("the mount's root is inode %d, want 1", st.Ino)
	}
	if names := listNames(t, dir); !slices.Contains(names, ".") || !slices.Contains(names, "..") {
		t.Errorf("the root's listing %q lacks \".\" or \"..\"", names)
	}

	// nothing of this tainted anything
	if mods := d.run("cat", "/proc/modules").ok(t).stdout; regexp.MustCompile(`\(\w+\)`).MatchString(mods) {
		t.Errorf("a module was tainted:\n%s", mods)
	}
}

// listNames lists dir with getdents64(2), dots included.
func listNames(t *testing.T, dir string) []string {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var names []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return names
		}
		for b := buf[:n]; len(b) > 0; {
			reclen := binary.NativeEndian.Uint16(b[16:18])
			name := b[19:reclen]
			if i := slices.Index(name, 0); i >= 0 {
				name = name[:i]
			}
			names = append(names, string(name))
			b = b[reclen:]
		}
	}
}

// TestServeAllowOther: without --allow-other the kernel refuses every user
// but the daemon's at the --fuse directory (EACCES); with it, another user
// reaches it and the permission bits decide: a world-readable file reads,
// a directory without write permission for them refuses a create (EACCES).
func TestServeAllowOther(t *testing.T) {
	needFuse(t)
	for _, allow := range []bool{false, true} {
		// A directory every user can traverse: t.TempDir's parents are
		// private to root.
		parent, err := os.MkdirTemp("", "raceless-allow-other-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(parent) })
		if err := os.Chmod(parent, 0o755); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(parent, "fuse")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		args := []string{"--fuse", dir}
		if allow {
			args = append(args, "--allow-other")
		}
		startDaemon(t, args...)
		asNobody := func(name string, arg ...string) error {
			cmd := exec.Command(name, arg...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		}
		readErr := asNobody("cat", filepath.Join(dir, "proc", "modules"))
		createErr := asNobody("touch", filepath.Join(dir, "new"))
		switch {
		case !allow && (readErr == nil || !strings.Contains(readErr.Error(), "Permission denied")):
			t.Errorf("without --allow-other another user read the mount: %v", readErr)
		case allow && readErr != nil:
			t.Errorf("with --allow-other another user cannot read /proc/modules: %v", readErr)
		case allow && (createErr == nil || !strings.Contains(createErr.Error(), "Permission denied")):
			t.Errorf("with --allow-other another user created a file in root's 0755 directory: %v", createErr)
		}
	}
}
