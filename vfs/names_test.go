package vfs_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/vfs/ramfs"
)

// names lists the entries of dir, as the VFS returns them.
func names(t *testing.T, p *vfs.Proc, dir string) []string {
	t.Helper()
	ents, err := p.ReadDir(dir)
	must(t, err)
	out := make([]string, len(ents))
	for i, e := range ents {
		out[i] = e.Name()
	}
	return out
}

func readString(t *testing.T, p *vfs.Proc, name string) string {
	t.Helper()
	b, err := p.ReadFile(name)
	must(t, err)
	return string(b)
}

// TestNamesAreBytes: names differing in one byte that is not UTF-8 are two
// names through create, open, readdir, rename, unlink, link, mkdir, rmdir
// and symlink; no byte is rewritten.
func TestNamesAreBytes(t *testing.T) {
	_, ns := setup(t)
	ff, fe := "/n\xff", "/n\xfe"
	writeFile(t, ns.Proc, ff, "ff")
	writeFile(t, ns.Proc, fe, "fe")
	if got, want := names(t, ns.Proc, "/"), []string{"n\xfe", "n\xff"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("readdir: %q, want %q", got, want)
	}
	if a, b := readString(t, ns.Proc, ff), readString(t, ns.Proc, fe); a != "ff" || b != "fe" {
		t.Fatalf("contents %q %q", a, b)
	}
	f, err := ns.Open(ff, os.O_RDONLY, 0)
	must(t, err)
	fi, err := f.Stat()
	must(t, err)
	if fi.Name() != "n\xff" || f.Name() != ff {
		t.Fatalf("file names %q %q", fi.Name(), f.Name())
	}
	must(t, f.Close())
	// the replacement character is a third, different name
	if _, err := ns.Stat("/n\uFFFD"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat of U+FFFD name: %v", err)
	}

	must(t, ns.Rename(ff, "/r\xff"))
	if got, want := names(t, ns.Proc, "/"), []string{"n\xfe", "r\xff"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after rename: %q, want %q", got, want)
	}
	must(t, ns.Link(fe, "/l\xfe"))
	must(t, ns.Unlink(fe))
	if got := readString(t, ns.Proc, "/l\xfe"); got != "fe" {
		t.Fatalf("link: %q", got)
	}
	if got := readString(t, ns.Proc, "/r\xff"); got != "ff" {
		t.Fatalf("renamed: %q", got)
	}

	must(t, ns.Mkdir("/d\xff", 0o755))
	must(t, ns.Mkdir("/d\xfe", 0o755))
	writeFile(t, ns.Proc, "/d\xff/x", "in ff")
	if got := names(t, ns.Proc, "/d\xfe"); len(got) != 0 {
		t.Fatalf("d\\xfe holds %q", got)
	}
	must(t, ns.Rmdir("/d\xfe"))
	if got := readString(t, ns.Proc, "/d\xff/x"); got != "in ff" {
		t.Fatalf("d\\xff/x: %q", got)
	}

	target := "d\xff/x\x80\xc0"
	must(t, ns.Symlink(target, "/s\xff"))
	got, err := ns.Readlink("/s\xff")
	must(t, err)
	if got != target {
		t.Fatalf("readlink %q, want %q", got, target)
	}
	writeFile(t, ns.Proc, "/d\xff/x\x80\xc0", "through link")
	if got := readString(t, ns.Proc, "/s\xff"); got != "through link" {
		t.Fatalf("through symlink: %q", got)
	}
	if _, err := ns.Lstat("/s\xfe"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("lstat /s\\xfe: %v", err)
	}
}

// TestMountPointsAreBytes: mount points differing in one non-UTF-8 byte are
// two mount points; unmounting the other one is EINVAL (not a mount point).
func TestMountPointsAreBytes(t *testing.T) {
	_, ns := setup(t)
	must(t, ns.Mkdir("/bad\xff", 0o755))
	must(t, ns.Mkdir("/bad\xfe", 0o755))
	must(t, ns.Mount(ctx, "src\xff", "/bad\xff", "ramfs", ""))
	mustErr(t, ns.Unmount("/bad\xfe", 0), vfs.EINVAL)
	ms := ns.Mounts()
	last := ms[len(ms)-1]
	if last.Target != "/bad\xff" || last.Source != "src\xff" {
		t.Fatalf("mount %q from %q", last.Target, last.Source)
	}
	writeFile(t, ns.Proc, "/bad\xff/f", "on the mount")
	if got := names(t, ns.Proc, "/bad\xfe"); len(got) != 0 {
		t.Fatalf("/bad\\xfe holds %q", got)
	}
	must(t, ns.Mount(ctx, "", "/bad\xfe", "ramfs", ""))
	must(t, ns.Unmount("/bad\xff", 0))
	if _, err := ns.Stat("/bad\xff/f"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after umount: %v", err)
	}
	ms = ns.Mounts()
	if last := ms[len(ms)-1]; last.Target != "/bad\xfe" {
		t.Fatalf("left mounted: %q", last.Target)
	}
	must(t, ns.Unmount("/bad\xfe", 0))
}

// TestNULIsEINVAL: a NUL byte in any path, name, symlink target or mount
// string is refused with EINVAL (an *fs.PathError), before any lookup, on
// every entry point, and changes nothing.
func TestNULIsEINVAL(t *testing.T) {
	h, ns := setup(t)
	loadAnyOptions(t, h, "anyopts")
	must(t, ns.Mkdir("/mnt", 0o755))
	must(t, ns.Mkdir("/mnt2", 0o755))
	must(t, ns.Mount(ctx, "m", "/mnt", "ramfs", ""))
	writeFile(t, ns.Proc, "/f", "f")
	must(t, ns.Symlink("f", "/s"))
	// Each name holding a NUL would be found, or created, without the
	// check (the part before the NUL exists, or the name is new).
	ops := []struct {
		name string
		fn   func(p *vfs.Proc) error
	}{
		{"Stat", func(p *vfs.Proc) error { _, err := p.Stat("/f\x00"); return err }},
		{"Lstat", func(p *vfs.Proc) error { _, err := p.Lstat("/\x00/f"); return err }},
		{"Open", func(p *vfs.Proc) error { _, err := p.Open("/f\x00", os.O_RDONLY, 0); return err }},
		{"Open O_CREATE", func(p *vfs.Proc) error { _, err := p.Open("/new\x00", os.O_RDWR|os.O_CREATE, 0o644); return err }},
		{"Create", func(p *vfs.Proc) error { _, err := p.Create("/new\x00"); return err }},
		{"ReadFile", func(p *vfs.Proc) error { _, err := p.ReadFile("/f\x00"); return err }},
		{"WriteFile", func(p *vfs.Proc) error { return p.WriteFile("/new\x00", nil, 0o644) }},
		{"Mkdir", func(p *vfs.Proc) error { return p.Mkdir("/new\x00", 0o755) }},
		{"MkdirAll", func(p *vfs.Proc) error { return p.MkdirAll("/new/a\x00", 0o755) }},
		{"Rmdir", func(p *vfs.Proc) error { return p.Rmdir("/mnt2\x00") }},
		{"Remove", func(p *vfs.Proc) error { return p.Remove("/f\x00") }},
		{"Unlink", func(p *vfs.Proc) error { return p.Unlink("/f\x00") }},
		{"Symlink target", func(p *vfs.Proc) error { return p.Symlink("f\x00", "/new") }},
		{"Symlink name", func(p *vfs.Proc) error { return p.Symlink("f", "/new\x00") }},
		{"Readlink", func(p *vfs.Proc) error { _, err := p.Readlink("/s\x00"); return err }},
		{"Rename old", func(p *vfs.Proc) error { return p.Rename("/f\x00", "/new") }},
		{"Rename new", func(p *vfs.Proc) error { return p.Rename("/f", "/new\x00") }},
		{"Rename new, old missing", func(p *vfs.Proc) error { return p.Rename("/missing", "/new\x00") }},
		{"Link old", func(p *vfs.Proc) error { return p.Link("/f\x00", "/new") }},
		{"Link new", func(p *vfs.Proc) error { return p.Link("/f", "/new\x00") }},
		{"Link new, old missing", func(p *vfs.Proc) error { return p.Link("/missing", "/new\x00") }},
		{"Setattr", func(p *vfs.Proc) error { m := fs.FileMode(0o600); return p.Setattr("/f\x00", vfs.SetAttr{Mode: &m}) }},
		{"Lsetattr", func(p *vfs.Proc) error { m := fs.FileMode(0o600); return p.Lsetattr("/f\x00", vfs.SetAttr{Mode: &m}) }},
		{"Chmod", func(p *vfs.Proc) error { return p.Chmod("/f\x00", 0o600) }},
		{"Chown", func(p *vfs.Proc) error { return p.Chown("/f\x00", 1, 1) }},
		{"Chtimes", func(p *vfs.Proc) error { return p.Chtimes("/f\x00", time.Unix(0, 0), time.Unix(0, 0)) }},
		{"Truncate", func(p *vfs.Proc) error { return p.Truncate("/f\x00", 0) }},
		{"ReadDir", func(p *vfs.Proc) error { _, err := p.ReadDir("/\x00"); return err }},
		{"Statfs", func(p *vfs.Proc) error { _, err := p.Statfs("/\x00"); return err }},
		{"Chdir", func(p *vfs.Proc) error { return p.Chdir("/mnt\x00") }},
		{"NewProc", func(p *vfs.Proc) error {
			q, err := p.NewProc("/mnt\x00")
			if err == nil {
				q.Close()
			}
			return err
		}},
		{"Mount source", func(p *vfs.Proc) error { return p.Mount(ctx, "s\x00", "/mnt2", "ramfs", "") }},
		{"Mount target", func(p *vfs.Proc) error { return p.Mount(ctx, "s", "/mnt2\x00", "ramfs", "") }},
		{"Mount fstype", func(p *vfs.Proc) error { return p.Mount(ctx, "s", "/mnt2", "ramfs\x00", "") }},
		{"Mount options", func(p *vfs.Proc) error { return p.Mount(ctx, "s", "/mnt2", "anyopts", "o\x00") }},
		{"Unmount", func(p *vfs.Proc) error { return p.Unmount("/mnt\x00", 0) }},
		{"Bind source", func(p *vfs.Proc) error { return p.Bind("/mnt\x00", "/mnt2", false) }},
		{"Bind target", func(p *vfs.Proc) error { return p.Bind("/mnt", "/mnt2\x00", true) }},
		{"Move source", func(p *vfs.Proc) error { return p.Move("/mnt\x00", "/mnt2") }},
		{"Move target", func(p *vfs.Proc) error { return p.Move("/mnt", "/mnt2\x00") }},
		{"FS Open", func(p *vfs.Proc) error { _, err := p.FS().Open("f\x00"); return err }},
		{"FS Stat", func(p *vfs.Proc) error { _, err := fs.Stat(p.FS(), "f\x00"); return err }},
		{"FS ReadDir", func(p *vfs.Proc) error { _, err := fs.ReadDir(p.FS(), "mnt\x00"); return err }},
		{"FS ReadFile", func(p *vfs.Proc) error { _, err := fs.ReadFile(p.FS(), "f\x00"); return err }},
	}
	rootBefore, mountsBefore := names(t, ns.Proc, "/"), ns.FormatMounts()
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			err := op.fn(ns.Proc)
			var pe *fs.PathError
			if !errors.As(err, &pe) || !errors.Is(err, vfs.EINVAL) || !errors.Is(err, syscall.EINVAL) ||
				!errors.Is(err, raceless.ErrInvalid) || vfs.ToErrno(err) != syscall.EINVAL {
				t.Fatalf("got %v, want an *fs.PathError wrapping EINVAL", err)
			}
		})
	}
	if got := names(t, ns.Proc, "/"); !reflect.DeepEqual(got, rootBefore) {
		t.Errorf("root changed: %q, was %q", got, rootBefore)
	}
	if got := ns.FormatMounts(); got != mountsBefore {
		t.Errorf("mounts changed:\n%s\nwere:\n%s", got, mountsBefore)
	}
	if got := readString(t, ns.Proc, "/f"); got != "f" {
		t.Errorf("/f now %q", got)
	}
	fi, err := ns.Stat("/f")
	must(t, err)
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("/f mode now %v", fi.Mode())
	}
	must(t, ns.Unmount("/mnt", 0))
}

// anyOptions is ramfs ignoring its mount options, so that any option
// string can be mounted and shown.
type anyOptions struct{ vfs.FileSystemType }

func (a anyOptions) Mount(ctx context.Context, r vfs.MountRequest) (vfs.Superblock, error) {
	r.Options = ""
	return a.FileSystemType.Mount(ctx, r)
}

type anyOptionsMod struct{ fstype string }

func (m anyOptionsMod) Init(k *raceless.Kernel) error {
	return k.Register(raceless.KindFilesystem, m.fstype, anyOptions{ramfs.Type()})
}
func (m anyOptionsMod) Exit() (int, error) { return 0, nil }

// loadAnyOptions loads module "anyopts" registering fstype, a ramfs that
// accepts any mount options.
func loadAnyOptions(t *testing.T, h *raceless.Host, fstype string) {
	t.Helper()
	info := raceless.Info{Name: "anyopts", Version: "1.0", License: "MIT", Description: "ramfs, any options"}
	if _, err := h.Load(ctx, raceless.Native(info, func() raceless.Module { return anyOptionsMod{fstype} }), nil); err != nil {
		t.Fatal(err)
	}
}

// TestFormatMountsEscapes: /proc/mounts escapes space, tab, newline and
// backslash in every field as octal, as Linux's mangle() does, and writes
// every other byte ('#', bytes that are not UTF-8) as it is.
func TestFormatMountsEscapes(t *testing.T) {
	h, ns := setup(t)
	const special = " \t\n\\#\xff"
	fstype := "t" + special
	loadAnyOptions(t, h, fstype)
	target := "/m" + special
	must(t, ns.Mkdir(target, 0o755))
	must(t, ns.Mount(ctx, "s"+special, target, fstype, "o"+special))
	const esc = `\040\011\012\134#` + "\xff"
	want := "rootfs / rootfs rw 0 0\nrootfs / ramfs rw 0 0\n" +
		"s" + esc + " /m" + esc + " t" + esc + " rw,o" + esc + " 0 0\n"
	if got := ns.FormatMounts(); got != want {
		t.Fatalf("mounts:\n%q\nwant:\n%q", got, want)
	}
	if n := strings.Count(ns.FormatMounts(), "\n"); n != 3 {
		t.Fatalf("%d lines", n)
	}
	must(t, ns.Unmount(target, 0))
}

// TestIOFSKeepsIOFSRules: the io/fs view refuses what fs.ValidPath refuses
// (names that are not UTF-8 among them) with fs.ErrInvalid, and lists such
// names unchanged.
func TestIOFSKeepsIOFSRules(t *testing.T) {
	_, ns := setup(t)
	writeFile(t, ns.Proc, "/n\xff", "x")
	if _, err := ns.FS().Open("n\xff"); !errors.Is(err, fs.ErrInvalid) {
		t.Fatalf("io/fs open of a non-UTF-8 name: %v", err)
	}
	ents, err := fs.ReadDir(ns.FS(), ".")
	must(t, err)
	if len(ents) != 1 || ents[0].Name() != "n\xff" {
		t.Fatalf("io/fs readdir: %v", ents)
	}
}
