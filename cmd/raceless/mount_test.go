package main_test

import (
	"strings"
	"testing"
)

func TestMount(t *testing.T) {
	d := startDaemon(t)
	if got := d.runAs("mount").ok(t).stdout; got != "rootfs / rootfs rw 0 0\nnone / ramfs rw 0 0\n" {
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
	d.run("rmmod", "initrd").fails(t, 5, "rmmod: ERROR: Module initrd is in use")
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
	if got := d.run("mount", "--json").ok(t).stdout; !strings.Contains(got, `"FSType": "ramfs"`) {
		t.Fatalf("mount --json: %s", got)
	}
}
