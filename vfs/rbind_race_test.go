package vfs_test

import (
	"testing"

	"github.com/raceless/raceless/vfs"
)

// TestRbindOfAMountUnmountedMeanwhile detaches the mount below a recursive
// bind's source at the window between the bind listing it and cloning it.
// The bind holds what it listed, so the detached mount stays alive until
// the clone exists: its superblock is released once, when the last mount
// of it (the clone) goes. Without the hold the detached mount died in the
// window, its superblock was released, and the clone brought it back to
// be released a second time (the torture test's "superblock released
// twice").
func TestRbindOfAMountUnmountedMeanwhile(t *testing.T) {
	_, ns := setup(t)
	must(t, ns.MkdirAll("/src/sub", 0o755))
	must(t, ns.MkdirAll("/rec", 0o755))
	must(t, ns.Mount(ctx, "none", "/src/sub", "ramfs", ""))

	releases := 0 // ramfs superblocks released; guarded by being on this goroutine
	detached := false
	vfs.SetHooks(func(fstype string) {
		if fstype == "ramfs" {
			releases++
		}
	}, func() {
		// The bind has listed /src/sub: unmount it now.
		if err := ns.Unmount("/src/sub", vfs.MNT_DETACH); err != nil {
			t.Errorf("umount -l /src/sub in the window: %v", err)
		}
		detached = true
	})
	t.Cleanup(func() { vfs.SetHooks(nil, nil) })

	must(t, ns.Bind("/src", "/rec", true))
	if !detached {
		t.Fatal("the recursive bind never reached the window")
	}
	if releases != 0 {
		t.Fatalf("%d superblocks released while a clone of their mount was being made", releases)
	}
	must(t, ns.Unmount("/rec", vfs.MNT_DETACH))
	if releases != 1 {
		t.Fatalf("the bound mount's superblock was released %d times, want once", releases)
	}
}
