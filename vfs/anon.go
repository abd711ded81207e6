package vfs

import (
	"context"
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
// before it is live) and calls NewFile from its own code.
type AnonMount struct {
	owner  *raceless.Instance
	fstype string

	mu    sync.Mutex // guards count and mnt (Jamie's semaphore); held across the internal mount's creation (package doc, "Concurrency")
	count int        // open anonymous files
	mnt   *Mount     // the internal mount while count > 0
}

// NewAnonMount returns an AnonMount for the filesystem type fstype
// registered by owner (k.Instance() in Init).
func NewAnonMount(owner *raceless.Instance, fstype string) *AnonMount {
	return &AnonMount{owner: owner, fstype: fstype}
}

type instanceHost struct{ m *raceless.Instance }

func (h instanceHost) Acquire(kind raceless.Kind, name string) (raceless.Binding, error) {
	return h.m.Acquire(kind, name)
}
func (h instanceHost) Request(context.Context, string) (*raceless.Instance, error) {
	return nil, raceless.ErrNotFound
}

// NewFile opens an anonymous file whose I/O goes to h; its node is the
// internal mount's root. flag is the os.O_* access mode. On error h was
// not used: the caller still owns it (and no module code was called).
func (a *AnonMount) NewFile(ctx context.Context, name string, h Handle, flag int) (*File, error) {
	a.mu.Lock()
	if a.count == 0 {
		m, err := newMount(ctx, instanceHost{a.owner}, nil, a.fstype, a.fstype, "", mountInternal)
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
	return &File{m: m, n: m.root, h: h, name: name, flag: flag, onClose: a.closed}, nil
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
