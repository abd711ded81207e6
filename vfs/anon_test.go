package vfs_test

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/vfs"
)

// pipeMod is Jamie's module: a pseudo filesystem handing out anonymous
// files that all share the root of one internal mount.
type pipeMod struct {
	anon      *vfs.AnonMount
	mounts    atomic.Int32 // superblocks made
	exited    atomic.Bool  // set by a successful Exit: no module code may run after it
	inModule  atomic.Int32 // module code running now (release operations)
	onRelease func()       // parks in Handle.Release
	onSBRel   func()       // parks in Superblock.Release
	t         *testing.T
}

func (m *pipeMod) Init(k *raceless.Kernel) error {
	m.anon = vfs.NewAnonMount(k, "pipefs", vfs.FileSystemTypeFunc(
		func(context.Context, vfs.MountRequest) (vfs.Superblock, error) {
			m.mounts.Add(1)
			return &pipeSB{m: m}, nil
		}))
	return nil
}

func (m *pipeMod) Exit() (int, error) {
	if n := m.inModule.Load(); n != 0 {
		m.t.Errorf("Exit while %d release operations run in the module", n)
	}
	m.exited.Store(true)
	return 0, nil
}

func (m *pipeMod) enter() {
	if m.exited.Load() {
		m.t.Error("module code running after the module exited")
	}
	m.inModule.Add(1)
}

// pipe is foo() of the thread: module code handing out a new file.
func (m *pipeMod) pipe() (*vfs.File, error) {
	return m.anon.NewFile(context.Background(), "pipe:[1]", &pipeHandle{m: m}, os.O_RDWR)
}

type pipeSB struct{ m *pipeMod }

func (s *pipeSB) Root() vfs.Node              { return pipeRoot{} }
func (s *pipeSB) Statfs() (vfs.Statfs, error) { return vfs.Statfs{}, nil }
func (s *pipeSB) Release() {
	s.m.enter()
	defer s.m.inModule.Add(-1)
	if s.m.onSBRel != nil {
		s.m.onSBRel()
	}
}

type pipeRoot struct{}

func (pipeRoot) Stat() (vfs.Attr, error) { return vfs.Attr{Ino: 1, Mode: os.ModeDir | 0o500}, nil }

type pipeHandle struct {
	m    *pipeMod
	mu   sync.Mutex
	data []byte
}

func (h *pipeHandle) ReadAt(p []byte, off int64) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if off >= int64(len(h.data)) {
		return 0, io.EOF
	}
	return copy(p, h.data[off:]), nil
}
func (h *pipeHandle) WriteAt(p []byte, off int64) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.data = append(h.data[:off], p...)
	return len(p), nil
}
func (h *pipeHandle) Release() error {
	h.m.enter()
	defer h.m.inModule.Add(-1)
	if h.m.onRelease != nil {
		h.m.onRelease()
	}
	return nil
}

func loadPipe(t *testing.T, h *raceless.Host) (*pipeMod, *raceless.Instance) {
	m := &pipeMod{t: t}
	inst, err := h.Load(ctx, raceless.Native(raceless.Info{Name: "pipemod"}, func() raceless.Module { return m }), nil)
	if err != nil {
		t.Fatal(err)
	}
	return m, inst
}

// TestAnonFilesPinModule: the internal mount is made by the first file and
// dropped by the last close (variant b); the module is busy exactly while
// one of its anonymous files is open.
func TestAnonFilesPinModule(t *testing.T) {
	h, _ := setup(t)
	m, inst := loadPipe(t, h)
	if inst.Refs() != 0 {
		t.Fatalf("refs %d before any file", inst.Refs())
	}
	f1, err := m.pipe()
	must(t, err)
	f2, err := m.pipe()
	must(t, err)
	if m.mounts.Load() != 1 || inst.Refs() != 1 || m.anon.Open() != 2 {
		t.Fatalf("mounts %d refs %d open %d", m.mounts.Load(), inst.Refs(), m.anon.Open())
	}
	if f1.Mount() != f2.Mount() || f1.Node() != f2.Node() {
		t.Fatal("anonymous files do not share the internal mount's root")
	}
	// The internal mount is of the module's own filesystem type, which it
	// never registered: the AnonMount pins the module itself.
	if f1.Mount().FSType() != "pipefs" {
		t.Fatalf("internal mount of type %q, want pipefs", f1.Mount().FSType())
	}
	if b, err := h.Acquire(raceless.KindFilesystem, "pipefs"); !errors.Is(err, raceless.ErrNotFound) {
		b.Release()
		t.Fatalf("acquire of the unregistered type pipefs: %v, want ErrNotFound", err)
	}
	_, err = f1.Write([]byte("x"))
	must(t, err)
	mustIs(t, unload(h, "pipemod"), raceless.ErrBusy)
	must(t, f1.Close())
	mustIs(t, unload(h, "pipemod"), raceless.ErrBusy)
	must(t, f2.Close())
	mustErr(t, f2.Close(), os.ErrClosed)
	if inst.Refs() != 0 || f2.Mount().State() != "dead" {
		t.Fatalf("refs %d, mount %s after the last close", inst.Refs(), f2.Mount().State())
	}
	f3, err := m.pipe() // a new internal mount
	must(t, err)
	if m.mounts.Load() != 2 {
		t.Fatalf("mounts %d", m.mounts.Load())
	}
	must(t, f3.Close())
	must(t, unload(h, "pipemod"))
	if _, err := m.pipe(); !errors.Is(err, raceless.ErrGone) && !errors.Is(err, raceless.ErrNotLive) {
		t.Fatalf("pipe after unload: %v", err)
	}
}

// TestAnonReleaseRace is Jamie's race, parked at the exact window: the last
// file's release operations (Handle.Release, then Superblock.Release) are
// module code running after the open-file count reached zero. The module
// reference is still held there, so an unload at that moment is refused;
// it succeeds right after the close returns.
func TestAnonReleaseRace(t *testing.T) {
	h, _ := setup(t)
	m, inst := loadPipe(t, h)
	f, err := m.pipe()
	must(t, err)

	for _, stage := range []string{"handle release", "superblock release"} {
		entered, proceed := make(chan struct{}), make(chan struct{})
		park := func() { close(entered); <-proceed }
		m.onRelease, m.onSBRel = nil, nil
		if stage == "handle release" {
			m.onRelease = park
		} else {
			m.onSBRel = park
		}
		done := make(chan error)
		go func() { done <- f.Close() }()
		<-entered
		// module code is running; the count of open files may be zero
		if inst.Refs() == 0 {
			t.Fatalf("%s: module reference dropped while module code runs", stage)
		}
		mustIs(t, unload(h, "pipemod"), raceless.ErrBusy)
		close(proceed)
		must(t, <-done)
		if inst.Refs() != 0 {
			t.Fatalf("%s: refs %d after close", stage, inst.Refs())
		}
		if stage == "handle release" {
			f, err = m.pipe()
			must(t, err)
		}
	}
	must(t, unload(h, "pipemod"))
}

// TestAnonHammer opens and closes anonymous files from many goroutines
// while another keeps trying to unload the module: no module code ever runs
// after Exit (checked inside the module), and opens after the unload fail
// cleanly.
func TestAnonHammer(t *testing.T) {
	h, _ := setup(t)
	m, _ := loadPipe(t, h)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				f, err := m.pipe()
				if err != nil {
					if !errors.Is(err, raceless.ErrGone) && !errors.Is(err, raceless.ErrNotLive) {
						t.Errorf("pipe: %v", err)
					}
					continue
				}
				if _, err := f.Write([]byte("a")); err != nil {
					t.Error(err)
				}
				if err := f.Close(); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	for i := 0; ; i++ {
		err := unload(h, "pipemod")
		if err == nil {
			break
		}
		if !errors.Is(err, raceless.ErrBusy) {
			t.Fatalf("unload: %v", err)
		}
	}
	close(stop)
	wg.Wait()
	if !m.exited.Load() {
		t.Fatal("module did not exit")
	}
}
