package vfs_test

import (
	"io"
	"os"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/vfs"
)

// TestInitrd is Rob Landley's scenario from "Moving a mount point": a
// temporary root from an "initrd" filesystem module, /var mounted inside it
// with a file held open, the real root mounted, /var moved onto it, the
// initrd unmounted and its module unloaded, the file still working.
func TestInitrd(t *testing.T) {
	h, ns := setup(t)
	loadFS(t, h, "initrd", "initrd")
	loadFS(t, h, "varfs", "varfs")

	// the boot loader mounts the initrd and boots into it (a chroot)
	must(t, ns.Mkdir("/initrd", 0o755))
	must(t, ns.Mount(ctx, "initrd.img", "/initrd", "initrd", ""))
	boot, err := ns.NewProc("/initrd")
	must(t, err)
	must(t, boot.MkdirAll("/var", 0o755))
	must(t, boot.Mount(ctx, "/dev/hda1", "/var", "varfs", ""))
	must(t, boot.MkdirAll("/var/log", 0o755))
	log, err := boot.Open("/var/log/messages", os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	must(t, err)
	_, err = log.Write([]byte("booting\n"))
	must(t, err)

	// the real root; the initrd cannot go while anything uses it
	must(t, ns.Mkdir("/sysroot", 0o755))
	must(t, ns.Mount(ctx, "/dev/loop0", "/sysroot", "ramfs", ""))
	must(t, ns.Mkdir("/sysroot/var", 0o755))
	mustErr(t, ns.Unmount("/initrd", 0), vfs.EBUSY)
	mustIs(t, unload(h, "initrd"), raceless.ErrBusy)

	// mount --move /initrd/var /sysroot/var, with the file open
	must(t, ns.Move("/initrd/var", "/sysroot/var"))
	must(t, boot.Close()) // init-first execs init: the chroot is left
	must(t, ns.Unmount("/initrd", 0))
	if r := refs(t, h, "initrd"); r != 0 {
		t.Fatalf("initrd refs %d", r)
	}
	must(t, unload(h, "initrd"))
	mustIs(t, unload(h, "varfs"), raceless.ErrBusy)

	_, err = log.Write([]byte("up\n"))
	must(t, err)
	b, err := ns.ReadFile("/sysroot/var/log/messages")
	must(t, err)
	if string(b) != "booting\nup\n" {
		t.Fatalf("log %q", b)
	}
	_, err = log.Seek(0, io.SeekStart)
	must(t, err)
	b, err = io.ReadAll(log)
	if err != nil || string(b) != "booting\nup\n" {
		t.Fatalf("open file reads %q %v", b, err)
	}
	must(t, log.Close())
	must(t, ns.Unmount("/sysroot/var", 0))
	must(t, unload(h, "varfs"))
}
