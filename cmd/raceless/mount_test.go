package main_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestMount(t *testing.T) {
	d := startDaemon(t)
	if got := d.runAs("mount").ok(t).stdout; got != "rootfs / rootfs rw 0 0\nnone / ramfs rw 0 0\nproc /proc proc rw 0 0\n" {
		t.Fatalf("mount: %q", got)
	}
	d.run("mount", "-t", "ramfs", "none", "/mnt").fails(t, 3, "mount: ERROR: mount /mnt: no such file or directory")
	d.run("mount", "none", "/mnt").fails(t, 2, "mount: ERROR: -t TYPE is required (usage: mount [-t TYPE] SRC DIR [-o OPTS] | mount --bind|--rbind SRC DIR | mount --move SRC DIR | mount [--json])")
	d.run("mount", "-t", "nosuchfs", "none", "/").fails(t, 3, `mount: ERROR: mount /: unknown filesystem type "nosuchfs": no such device: acquire nosuchfs: filesystem: not found`)
	// Demand loading through fs-TYPE: initrd is not loaded until mounted.
	if strings.Contains(d.run("lsmod").ok(t).stdout, "initrd") {
		t.Fatal("initrd loaded before use")
	}
	d.runAs("mount", "-t", "initrd", "-o", "X-mount.mkdir", "none", "/initrd").ok(t)
	if !strings.HasPrefix(d.run("lsmod").ok(t).stdout, lsmodHeader+"initrd                     0  1\n") {
		t.Fatalf("lsmod: %q", d.run("lsmod").stdout)
	}
	d.run("rmmod", "initrd").fails(t, 5, "rmmod: ERROR: Module initrd is in use: mounted at /initrd")
	// Bind and move.
	d.run("mount", "--bind", "-o", "X-mount.mkdir", "/initrd", "/b").ok(t)
	d.run("mount", "-t", "ramfs", "-o", "X-mount.mkdir", "none", "/new").ok(t)
	d.run("mount", "--move", "/b", "/new").ok(t)
	d.run("umount", "/b").fails(t, 7, "umount: ERROR: umount /b: invalid argument")
	if got := d.run("mount").ok(t).stdout; !strings.Contains(got, "none /new initrd rw 0 0\n") {
		t.Fatalf("after move: %q", got)
	}
	d.run("umount", "/initrd").ok(t)
	d.runAs("umount", "-l", "/new").ok(t)
	d.run("umount", "/new").ok(t)
	d.run("rmmod", "initrd").ok(t)
	// /proc/modules, byte-exact kmod format, through the namespace.
	if got := d.run("cat", "/proc/modules").ok(t).stdout; !regexp.MustCompile(`^hello 4096 0 - Live 0x[0-9a-f]{16}\nprocfs 0 1 - Live 0x[0-9a-f]{16}\nramfs 0 1 - Live 0x[0-9a-f]{16}\n$`).MatchString(got) {
		t.Fatalf("/proc/modules: %q", got)
	}
	d.run("cat", "/nope").fails(t, 3, "cat: ERROR: open /nope: no such file or directory")
	if got := d.run("mount", "--json").ok(t).stdout; !strings.Contains(got, `"FSType": "ramfs"`) {
		t.Fatalf("mount --json: %s", got)
	}
}

// Through FUSE, an open file pins its filesystem's module as an open file
// pins a kernel module: after a lazy umount the module stays in use until
// the last close.
func TestFuse(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("FUSE mounting needs root here")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	dir := t.TempDir()
	d := startDaemon(t, "--fuse", dir)
	d.run("mount", "-t", "initrd", "-o", "X-mount.mkdir", "none", "/initrd").ok(t)
	if err := os.WriteFile(filepath.Join(dir, "initrd", "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "initrd", "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mods, err := os.ReadFile(filepath.Join(dir, "proc", "modules"))
	if err != nil || !strings.HasPrefix(string(mods), "initrd 0 ") {
		t.Fatalf("/proc/modules through FUSE: %q %v", mods, err)
	}
	d.run("umount", "/initrd").fails(t, 5, "umount: ERROR: umount /initrd: device or resource busy")
	d.run("umount", "-l", "/initrd").ok(t)
	d.run("rmmod", "initrd").fails(t, 5, "rmmod: ERROR: Module initrd is in use: mounted at /initrd (detached with open files: 1)")
	b := make([]byte, 4)
	if n, err := f.Read(b); err != nil || string(b[:n]) != "data" {
		t.Fatalf("read after lazy umount: %q %v", b[:n], err)
	}
	f.Close()
	// The kernel sends RELEASE asynchronously after close.
	waitFor(t, "the last close to release initrd", func() bool {
		return d.run("rmmod", "initrd").code == 0
	})
}
