package vfs

import (
	"context"
	"fmt"
	"sync"

	"github.com/raceless/raceless"
)

// AnonMount hands out anonymous files (like pipes or eventfds) of one
// filesystem type, all sharing the root of one internal mount that is in
// no namespace. It is variant (b) of the thread: the internal mount is
// created by the first file and dropped at the last close, so the module
// owning the type is pinned exactly while one of its anonymous files is
// open. The final decrement happens in the VFS after the module's release
// operations have returned (File.Close: Handle.Release, then this count,
// then the mount reference, whose last put runs Superblock.Release and only
// then drops the module reference), never in module code.
//
// A module typically creates one AnonMount in Init (it cannot open files
// before it is live) and calls NewFile from its own code. The internal
// mount pins the module as kern_mount does, with a reference the module
// takes on itself (Kernel.Get): the type need not be registered.
type AnonMount struct {
	k      *raceless.Kernel
	fstype string
	t      FileSystemType

	mu    sync.Mutex // guards count and mnt (Jamie's semaphore); held across the internal mount's creation (package doc, "Concurrency")
	count int        // open anonymous files
	mnt   *Mount     // the internal mount while count > 0
}

// NewAnonMount returns an AnonMount whose files live on an internal mount
// of t, named fstype, owned by the module of k (the Kernel its Init got).
func NewAnonMount(k *raceless.Kernel, fstype string, t FileSystemType) *AnonMount {
	return &AnonMount{k: k, fstype: fstype, t: t}
}

// NewFile opens an anonymous file whose I/O goes to h; its node is the
// internal mount's root. flag is the os.O_* access mode. On error h was
// not used: the caller still owns it (and no module code was called).
func (a *AnonMount) NewFile(ctx context.Context, name string, h Handle, flag int) (*File, error) {
	a.mu.Lock()
	if a.count == 0 {
		sb := &superblock{fstype: a.fstype, self: a.k}
		var err error
		if err = a.pin(); err != nil {
			err = fmt.Errorf("filesystem type %q: %w: %w", a.fstype, ENODEV, err)
		}
		var m *Mount
		if err == nil {
			m, err = newMount(ctx, sb, a.t, MountRequest{Source: a.fstype, Cred: processCred()}, mountInternal)
		}
		if err != nil {
			a.mu.Unlock()
			return nil, pathErr("open", name, err)
		}
		a.mnt = m // the creation reference becomes this file's
	} else {
		a.mnt.get()
	}
	a.count++
	m := a.mnt
	a.mu.Unlock()
	return &File{m: m, n: m.root, ino: m.rootIno, h: h, name: name, flag: flag, onClose: a.closed}, nil
}

// pin takes the internal mount's reference on the module, as
// try_module_get does: only while the module is live. Kernel.Get alone
// also succeeds while it is going, even after an unload's final count,
// when a new file would run module code after Exit. The reference is
// taken before the state is read: a live state read after it means an
// unload (which leaves live before its final count) has not counted yet,
// and will count this reference (Unload then fails with ErrBusy).
func (a *AnonMount) pin() error {
	if !a.k.Get() {
		return fmt.Errorf("%s: %w", a.k.Name(), raceless.ErrGone)
	}
	if st := a.k.Instance().State(); st != raceless.StateLive {
		a.k.Put()
		return fmt.Errorf("%s is %s: %w", a.k.Name(), st, raceless.ErrNotLive)
	}
	return nil
}

// closed runs at each anonymous file's close, after its Release and before
// its mount reference is dropped.
func (a *AnonMount) closed() {
	a.mu.Lock()
	a.count--
	if a.count == 0 {
		a.mnt = nil
	}
	a.mu.Unlock()
}

// Open reports the number of open anonymous files.
func (a *AnonMount) Open() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.count
}
