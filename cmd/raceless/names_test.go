package main_test

import (
	"strings"
	"testing"
)

// TestNamesAreBytes: a path that is not UTF-8 crosses the command line, the
// protocol and the VFS byte for byte (issue 15: "/bad\xff" and "/bad\xfe"
// were both "/bad\ufffd", so umount of one unmounted the other), and comes
// back raw in /proc/mounts and in ls.
func TestNamesAreBytes(t *testing.T) {
	d := startDaemon(t)
	d.run("mount", "-t", "ramfs", "-o", "X-mount.mkdir", "none", "/bad\xff").ok(t)
	d.run("umount", "/bad\xfe").fails(t, 3, "umount: ERROR: umount /bad\xfe: no such file or directory")
	if got := d.run("mount").ok(t).stdout; !strings.Contains(got, "\nnone /bad\xff ramfs rw 0 0\n") {
		t.Fatalf("mount list without the raw name:\n%q", got)
	}
	if got := d.run("cat", "/proc/mounts").ok(t).stdout; !strings.Contains(got, "\nnone /bad\xff ramfs rw 0 0\n") {
		t.Fatalf("/proc/mounts without the raw name:\n%q", got)
	}
	if got := d.run("mount", "--json").ok(t).stdout; !strings.Contains(got, `"Target": {`) || !strings.Contains(got, `"base64": "L2JhZP8="`) {
		t.Fatalf("mount --json: the target is not carried as bytes:\n%s", got)
	}
	d.run("mount", "-t", "ramfs", "-o", "X-mount.mkdir", "none", "/bad\xfe").ok(t)
	if got := d.run("ls", "/").ok(t).stdout; !strings.Contains(got, "bad\xfe\nbad\xff\n") {
		t.Fatalf("ls /: want two distinct raw names:\n%q", got)
	}
	d.run("umount", "/bad\xff").ok(t)
	if got := d.run("cat", "/proc/mounts").ok(t).stdout; strings.Contains(got, "/bad\xff ") || !strings.Contains(got, "/bad\xfe ") {
		t.Fatalf("after umount /bad\\xff:\n%q", got)
	}
}
