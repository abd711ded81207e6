package vfs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/vfs/internal/panicfs"
)

// panicOps says how to reach each filesystem operation through the VFS:
// run(dir) performs it on a panicfs mounted at dir holding the file f
// ("data"), the directory d and the symlink l -> f, and returns its error.
var panicOps = map[string]func(ns *vfs.Namespace, dir string) error{
	"mount": func(ns *vfs.Namespace, dir string) error {
		return ns.Mount(context.Background(), "none", dir, "panicfs", "")
	},
	"root": func(ns *vfs.Namespace, dir string) error {
		return ns.Mount(context.Background(), "none", dir, "panicfs", "")
	},
	"statfs": func(ns *vfs.Namespace, dir string) error { _, err := ns.Statfs(dir); return err },
	"superblock release": func(ns *vfs.Namespace, dir string) error {
		// the last mount goes: the superblock's release runs, and its panic
		// has nowhere to go but the taint (umount itself succeeded)
		return ns.Unmount(dir, 0)
	},
	"stat":     func(ns *vfs.Namespace, dir string) error { _, err := ns.Stat(dir + "/f"); return err },
	"lookup":   func(ns *vfs.Namespace, dir string) error { _, err := ns.Lstat(dir + "/f"); return err },
	"readdir":  func(ns *vfs.Namespace, dir string) error { _, err := ns.ReadDir(dir); return err },
	"create":   func(ns *vfs.Namespace, dir string) error { return closeFile(ns.Create(dir + "/new")) },
	"mkdir":    func(ns *vfs.Namespace, dir string) error { return ns.Mkdir(dir+"/e", 0o755) },
	"symlink":  func(ns *vfs.Namespace, dir string) error { return ns.Symlink("f", dir+"/s") },
	"readlink": func(ns *vfs.Namespace, dir string) error { _, err := ns.Readlink(dir + "/l"); return err },
	"unlink":   func(ns *vfs.Namespace, dir string) error { return ns.Unlink(dir + "/f") },
	"rmdir":    func(ns *vfs.Namespace, dir string) error { return ns.Rmdir(dir + "/d") },
	"rename":   func(ns *vfs.Namespace, dir string) error { return ns.Rename(dir+"/f", dir+"/g") },
	"link":     func(ns *vfs.Namespace, dir string) error { return ns.Link(dir+"/f", dir+"/h") },
	"mknod":    func(ns *vfs.Namespace, dir string) error { return ns.Mknod(dir+"/p", fs.ModeNamedPipe|0o644, 0) },
	"setattr":  func(ns *vfs.Namespace, dir string) error { return ns.Chmod(dir+"/f", 0o600) },
	"open":     func(ns *vfs.Namespace, dir string) error { return closeFile(ns.Open(dir+"/f", os.O_RDWR, 0)) },
	"read": withFile(os.O_RDONLY, func(f *vfs.File) error {
		_, err := f.ReadAt(make([]byte, 4), 0)
		return err
	}),
	"write": withFile(os.O_RDWR, func(f *vfs.File) error {
		_, err := f.WriteAt([]byte("D"), 0)
		return err
	}),
	"append": withFile(os.O_WRONLY|os.O_APPEND, func(f *vfs.File) error {
		_, err := f.Write([]byte("+"))
		return err
	}),
	"size": withFile(os.O_RDONLY, func(f *vfs.File) error { _, err := f.Seek(0, io.SeekEnd); return err }),
	"sync": withFile(os.O_RDWR, (*vfs.File).Sync),
	"release": func(ns *vfs.Namespace, dir string) error {
		f, err := ns.Open(dir+"/f", os.O_RDONLY, 0)
		if err != nil {
			return fmt.Errorf("setting up: %w", err)
		}
		return f.Close()
	},
}

func closeFile(f *vfs.File, err error) error {
	if err != nil {
		return err
	}
	return f.Close()
}

// withFile opens dir/f (outside the operation under test) and runs op on it.
func withFile(flag int, op func(*vfs.File) error) func(*vfs.Namespace, string) error {
	return func(ns *vfs.Namespace, dir string) error {
		f, err := ns.Open(dir+"/f", flag, 0)
		if err != nil {
			return fmt.Errorf("setting up: %w", err)
		}
		defer f.Close()
		return op(f)
	}
}

// TestFilesystemPanics makes each filesystem operation of a module panic in
// turn, through the VFS: the caller gets an error wrapping EIO (a
// *vfs.PanicError naming the operation, inside the usual *fs.PathError),
// the owning module is tainted with the same text, no reference or lock is
// leaked (the same operation succeeds once the trap is disarmed, the mount
// can be unmounted, the module unloaded), and the host goes on.
func TestFilesystemPanics(t *testing.T) {
	h, ns := setup(t)
	src, trap := panicfs.Source("panicmod", "panicfs")
	inst, err := h.Load(context.Background(), src, nil)
	must(t, err)
	for _, op := range panicfs.Ops {
		if panicOps[op] == nil {
			t.Fatalf("no test for %q", op)
		}
	}
	for i, op := range panicfs.Ops {
		t.Run(op, func(t *testing.T) {
			run := panicOps[op]
			dir := fmt.Sprintf("/p%d", i)
			must(t, ns.Mkdir(dir, 0o755))
			mounted := op != "mount" && op != "root"
			if mounted {
				must(t, ns.Mount(context.Background(), "none", dir, "panicfs", ""))
				writeFile(t, ns.Proc, dir+"/f", "data")
				must(t, ns.Mkdir(dir+"/d", 0o755))
				must(t, ns.Symlink("f", dir+"/l"))
			}
			refs0, taints0, hits0 := inst.Refs(), len(inst.Taints()), trap.Hits()

			trap.Arm(op)
			err := run(ns, dir)
			trap.Disarm()

			hits := trap.Hits() - hits0
			if hits == 0 {
				t.Fatalf("%s did not reach the module (err %v)", op, err)
			}
			taints := inst.Taints()[taints0:]
			if int64(len(taints)) != hits {
				t.Fatalf("%d panics, %d new taints: %q", hits, len(taints), taints)
			}
			want := (&vfs.PanicError{FSType: "panicfs", Op: op, Value: panicfs.Value(op)}).Error()
			if !slices.Contains(taints, want) {
				t.Fatalf("taints %q lack %q", taints, want)
			}
			if op == "superblock release" {
				// nothing to return the error to: umount succeeded, the
				// module reference went despite the panic
				must(t, err)
				if r := inst.Refs(); r != refs0-1 {
					t.Fatalf("refs %d after the last umount, want %d", r, refs0-1)
				}
				return
			}
			var pe *vfs.PanicError
			var pathErr *fs.PathError
			if !errors.Is(err, syscall.EIO) || !errors.Is(err, vfs.EIO) || !errors.As(err, &pe) || !errors.As(err, &pathErr) {
				t.Fatalf("%s: got %v (%T), want a *fs.PathError wrapping a *vfs.PanicError (EIO)", op, err, err)
			}
			if pe.Op != op || pe.FSType != "panicfs" || pe.Module != "panicmod" || pe.Value != panicfs.Value(op) || pe.Error() != want {
				t.Fatalf("panic error %+v", pe)
			}
			if vfs.ToErrno(err) != syscall.EIO {
				t.Fatalf("ToErrno: %v", vfs.ToErrno(err))
			}
			if r := inst.Refs(); r != refs0 {
				t.Fatalf("refs %d after the panic, want %d (leaked or over-released)", r, refs0)
			}
			// no lock or reference leaked: the same operation now works
			must(t, run(ns, dir))
			must(t, ns.Unmount(dir, 0))
			if r := inst.Refs(); r != 0 {
				t.Fatalf("refs %d after umount", r)
			}
		})
	}
	// the host and the namespace go on; the tainted module still unloads
	writeFile(t, ns.Proc, "/after", "ok")
	if b, err := ns.ReadFile("/after"); err != nil || string(b) != "ok" {
		t.Fatalf("after the panics: %q %v", b, err)
	}
	if len(inst.Taints()) < len(panicfs.Ops) {
		t.Fatalf("taints %q", inst.Taints())
	}
	must(t, unload(h, "panicmod"))
}

// TestFilesystemPanicAnonymous: the handle of an anonymous file is module
// code too: a panicking write is EIO, a panicking release is EIO and still
// drops the internal mount and the module reference.
func TestFilesystemPanicAnonymous(t *testing.T) {
	h, _ := setup(t)
	m, inst := loadPipe(t, h)
	f, err := m.anon.NewFile(context.Background(), "boom:[1]", boomHandle{}, os.O_RDWR)
	must(t, err)
	if _, err := f.Write([]byte("x")); !errors.Is(err, vfs.EIO) {
		t.Fatalf("write: %v", err)
	}
	if err := f.Close(); !errors.Is(err, vfs.EIO) {
		t.Fatalf("close: %v", err)
	}
	if r := inst.Refs(); r != 0 {
		t.Fatalf("refs %d after a panicking release", r)
	}
	if ts := inst.Taints(); len(ts) != 2 {
		t.Fatalf("taints %q", ts)
	}
	must(t, unload(h, "pipemod"))
}

// boomHandle panics in every operation.
type boomHandle struct{}

func (boomHandle) ReadAt([]byte, int64) (int, error)  { panic("boom read") }
func (boomHandle) WriteAt([]byte, int64) (int, error) { panic("boom write") }
func (boomHandle) Release() error                     { panic("boom release") }

// TestFilesystemNilResults: a module returning nothing where the VFS needs
// something (no superblock, no root, no handle, no node) is a module bug
// reported as EIO, not a nil dereference in the host.
func TestFilesystemNilResults(t *testing.T) {
	h, ns := setup(t)
	var what atomic.Value
	what.Store("")
	inst, err := h.Load(context.Background(), raceless.Native(raceless.Info{Name: "nilmod"}, func() raceless.Module {
		return nilMod{&what}
	}), nil)
	must(t, err)
	must(t, ns.Mkdir("/n", 0o755))
	for _, w := range []string{"superblock", "root"} {
		what.Store(w)
		if err := ns.Mount(context.Background(), "none", "/n", "nilfs", ""); !errors.Is(err, vfs.EIO) {
			t.Fatalf("no %s: %v", w, err)
		}
	}
	what.Store("")
	must(t, ns.Mount(context.Background(), "none", "/n", "nilfs", ""))
	for _, w := range []string{"node", "handle"} {
		what.Store(w)
		if _, err := ns.Open("/n/f", os.O_RDONLY, 0); !errors.Is(err, vfs.EIO) {
			t.Fatalf("no %s: %v", w, err)
		}
	}
	must(t, ns.Unmount("/n", 0))
	if r := inst.Refs(); r != 0 {
		t.Fatalf("refs %d", r)
	}
	must(t, unload(h, "nilmod"))
}

type nilMod struct{ what *atomic.Value }

func (m nilMod) Init(k *raceless.Kernel) error {
	return k.Register(raceless.KindFilesystem, "nilfs", vfs.FileSystemTypeFunc(
		func(context.Context, vfs.MountRequest) (vfs.Superblock, error) {
			if m.what.Load() == "superblock" {
				return nil, nil
			}
			return nilSB(m), nil
		}))
}
func (nilMod) Exit() (int, error) { return 0, nil }

type nilSB struct{ what *atomic.Value }

func (s nilSB) Root() vfs.Node {
	if s.what.Load() == "root" {
		return nil
	}
	return nilDir(s)
}
func (nilSB) Statfs() (vfs.Statfs, error) { return vfs.Statfs{}, nil }
func (nilSB) Release()                    {}

type nilDir nilSB

func (nilDir) Stat() (vfs.Attr, error) { return vfs.Attr{Ino: 1, Mode: fs.ModeDir | 0o755}, nil }
func (d nilDir) Lookup(name string) (vfs.Node, error) {
	if d.what.Load() == "node" {
		return nil, nil
	}
	return nilFile{}, nil
}
func (nilDir) ReadDir() ([]vfs.DirEntry, error) { return nil, nil }

type nilFile struct{}

func (nilFile) Stat() (vfs.Attr, error)      { return vfs.Attr{Ino: 2, Mode: 0o644}, nil }
func (nilFile) Open(int) (vfs.Handle, error) { return nil, nil }
