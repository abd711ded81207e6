package torture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync/atomic"

	"github.com/raceless/raceless/vfs"
)

// The VFS side of the run. Every test module tN registers the filesystem
// type "tfs-tN"; its superblocks hold a reference on tN (taken by the VFS),
// and every node, handle and superblock method checks, like a symbol call,
// that the instance may run. The namespace has mount points /mnt/0 …
// /mnt/<mountPoints-1> in its rootfs; workers mount (stacking), unmount
// (plain and lazy), move, bind, open, read, stat and close files there.

const mountPoints = 4

func fstype(s *modSpec) string { return "tfs-" + s.name }

// tfsType is a test module's filesystem type.
type tfsType struct{ m *tmod }

func (t tfsType) Mount(ctx context.Context, req vfs.MountRequest) (vfs.Superblock, error) {
	t.m.fsEnter("Mount")
	t.m.sbAlive.Add(1)
	return &tsb{m: t.m, content: []byte(t.m.String())}, nil
}

// tsb is a superblock: a root directory holding one file "f" whose
// content is the instance's name and serial.
type tsb struct {
	m        *tmod
	content  []byte
	released atomic.Bool
}

func (s *tsb) Root() vfs.Node { s.m.fsEnter("Root"); return &tdir{s} }
func (s *tsb) Statfs() (vfs.Statfs, error) {
	s.m.fsEnter("Statfs")
	return vfs.Statfs{Bsize: 4096, NameLen: vfs.NameMax}, nil
}

// Release is called once, after the last mount and open file are gone,
// before the VFS drops the module reference: the instance must not have
// exited (unless forced).
func (s *tsb) Release() {
	s.m.fsEnter("Superblock.Release")
	if s.released.Swap(true) {
		s.m.r.violate("fs", "%s: superblock released twice", s.m)
		return
	}
	s.m.sbAlive.Add(-1)
}

type tdir struct{ sb *tsb }

func (d *tdir) Stat() (vfs.Attr, error) {
	d.sb.m.fsEnter("Stat")
	return vfs.Attr{Ino: 1, Mode: fs.ModeDir | 0o755, Nlink: 2, Size: 4096}, nil
}

func (d *tdir) Lookup(name string) (vfs.Node, error) {
	d.sb.m.fsEnter("Lookup")
	switch name {
	case "f":
		return &tfile{d.sb}, nil
	case ".", "..":
		return d, nil
	}
	return nil, vfs.ENOENT
}

func (d *tdir) ReadDir() ([]vfs.DirEntry, error) {
	d.sb.m.fsEnter("ReadDir")
	return []vfs.DirEntry{{Name: "f", Ino: 2}}, nil
}

type tfile struct{ sb *tsb }

func (f *tfile) Stat() (vfs.Attr, error) {
	f.sb.m.fsEnter("Stat")
	return vfs.Attr{Ino: 2, Mode: 0o444, Nlink: 1, Size: int64(len(f.sb.content))}, nil
}

func (f *tfile) Open(flag int) (vfs.Handle, error) {
	f.sb.m.fsEnter("Open")
	if flag&(os.O_WRONLY|os.O_RDWR) != 0 {
		return nil, vfs.EROFS
	}
	f.sb.m.handles.Add(1)
	return &thandle{sb: f.sb}, nil
}

type thandle struct {
	sb       *tsb
	released atomic.Bool
}

func (h *thandle) ReadAt(p []byte, off int64) (int, error) {
	h.sb.m.fsEnter("ReadAt")
	if h.released.Load() {
		h.sb.m.r.violate("fs", "%s: ReadAt on a released handle", h.sb.m)
	}
	if off >= int64(len(h.sb.content)) {
		return 0, io.EOF
	}
	n := copy(p, h.sb.content[off:])
	return n, nil
}

func (h *thandle) WriteAt(p []byte, off int64) (int, error) { return 0, vfs.EROFS }

func (h *thandle) Release() error {
	h.sb.m.fsEnter("Handle.Release")
	if h.released.Swap(true) {
		h.sb.m.r.violate("fs", "%s: handle released twice", h.sb.m)
		return nil
	}
	h.sb.m.handles.Add(-1)
	return nil
}

// fsEnter is the check at the top of every filesystem method: module code
// reached through a superblock, which pins the module.
func (m *tmod) fsEnter(what string) {
	switch ph := m.phase.Load(); ph {
	case phLive:
	case phExiting, phExited:
		if m.forced.Load() {
			m.r.event("forced-stale-fs")
		} else {
			m.r.violate("fs-after-exit", "%s: %s in phase %s", m, what, phaseNames[ph])
		}
	default:
		m.r.violate("visible-never-live", "%s: filesystem %s in phase %s", m, what, phaseNames[ph])
	}
}

// setupFS creates the namespace and its mount points.
func (r *runner) setupFS() error {
	r.ns = vfs.NewNamespace(r.host)
	for i := 0; i < mountPoints; i++ {
		if err := r.ns.MkdirAll(mountPoint(i), 0o755); err != nil {
			return fmt.Errorf("torture: mkdir %s: %w", mountPoint(i), err)
		}
	}
	return nil
}

func mountPoint(i int) string { return fmt.Sprintf("/mnt/%d", i) }

// teardownFS detaches every mount; with no file open, every superblock
// of the instances left must then have been released.
func (r *runner) teardownFS(left []*tmod) {
	for i := 0; i < mountPoints; i++ {
		for n := 0; ; n++ {
			if err := r.ns.Unmount(mountPoint(i), vfs.MNT_DETACH); err != nil {
				if !errors.Is(err, vfs.EINVAL) {
					r.violate("fs", "teardown: umount -l %s: %v", mountPoint(i), err)
				}
				break
			}
			if n > 1_000_000 {
				r.violate("fs", "teardown: %s never stops being a mount point", mountPoint(i))
				break
			}
		}
	}
	if ms := r.ns.Mounts(); len(ms) > 1 {
		r.violate("fs", "teardown: %d mounts left: %v", len(ms), ms)
	}
	for _, m := range left {
		r.checkFSCounts(m)
	}
}

// Worker operations on the namespace.

func (w *worker) mp() string { return mountPoint(w.rng.IntN(mountPoints)) }

func (w *worker) fsOutcome(op string, err error) {
	switch {
	case err == nil:
		w.outcomes[op+"/ok"]++
	default:
		var e vfs.Errno
		if errors.As(err, &e) {
			w.outcomes[op+"/"+e.Error()]++
		} else {
			w.outcomes[op+"/"+errClass(err)]++
		}
	}
}

// opMount may demand-load the type's module, which may wait for an
// instance that is going: like every waiting operation it runs with
// nothing held.
func (w *worker) opMount(ctx context.Context) {
	w.releaseAll()
	s := w.spec()
	mp := w.mp()
	w.makeRoom("mount", mp)
	octx, cancel := w.r.opContext(ctx)
	defer cancel()
	err := w.r.ns.Mount(octx, "none", mp, fstype(s), "")
	w.fsOutcome("mount", err)
	w.hung(octx, "mount "+fstype(s), err)
}

func (w *worker) opUmount(ctx context.Context) {
	w.fsOutcome("umount", w.r.ns.Unmount(w.mp(), 0))
}

func (w *worker) opUmountLazy(ctx context.Context) {
	w.fsOutcome("umount-lazy", w.r.ns.Unmount(w.mp(), vfs.MNT_DETACH))
}

func (w *worker) opMove(ctx context.Context) {
	w.fsOutcome("move", w.r.ns.Move(w.mp(), w.mp()))
}

func (w *worker) opBind(ctx context.Context) {
	src, dst := w.mp(), w.mp()
	w.makeRoom("bind", dst)
	w.fsOutcome("bind", w.r.ns.Bind(src, dst, w.rng.IntN(2) == 0))
}

// maxMounts bounds the mounts of the namespace (the rootfs included).
const maxMounts = 64

// makeRoom keeps the namespace within about maxMounts mounts. Mounts and
// binds (weight 5) add one mount each and umounts (weight 5) take one off
// a non-empty stack: the number of mounts is a random walk, which grows as
// the square root of the run's length (of the order of 10³ mounts after
// 10⁷ operations), and each mount may pin a force-unloaded instance
// through its superblock.
// Past the bound, a mount or bind first detaches the top of its target
// lazily (outcome "mount-room/..." or "bind-room/..."). The stacks still
// grow dozens deep.
func (w *worker) makeRoom(op, mp string) {
	if len(w.r.ns.Mounts()) <= maxMounts {
		return
	}
	w.fsOutcome(op+"-room", w.r.ns.Unmount(mp, vfs.MNT_DETACH))
}

func (w *worker) opOpen(ctx context.Context) {
	f, err := w.r.ns.Open(w.mp()+"/f", os.O_RDONLY, 0)
	w.fsOutcome("open", err)
	if err != nil {
		return
	}
	w.readFile(f)
	if len(w.files) < maxFiles && w.rng.IntN(3) == 0 {
		w.files = append(w.files, f)
		return
	}
	w.closeFile(f)
}

func (w *worker) readFile(f *vfs.File) {
	buf := make([]byte, 64)
	n, err := f.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		w.fsOutcome("read", err)
		return
	}
	w.fsOutcome("read", nil)
	if got := string(buf[:n]); len(got) < 2 || got[0] != 't' {
		w.r.violate("fs", "read %q from %s", got, f.Name())
	}
}

func (w *worker) closeFile(f *vfs.File) {
	if err := f.Close(); err != nil {
		w.r.violate("fs", "close %s: %v", f.Name(), err)
	}
}

func (w *worker) opStat(ctx context.Context) {
	p := w.mp()
	if w.rng.IntN(2) == 0 {
		_, err := w.r.ns.ReadDir(p)
		w.fsOutcome("readdir", err)
		return
	}
	_, err := w.r.ns.Stat(p + "/f")
	w.fsOutcome("stat", err)
}

func (w *worker) closeFiles() {
	for _, f := range w.files {
		// A file kept open across operations is read once more: after a
		// forced unload of its module that is the legitimate stale call.
		if w.rng.IntN(2) == 0 {
			w.readFile(f)
		}
		w.closeFile(f)
	}
	w.files = w.files[:0]
}

const maxFiles = 2
