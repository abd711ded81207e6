package vfs

import (
	"errors"
	"os"
	"sync"
)

var errClosedProc = errors.New("process context closed")

// Proc is a process context: a root directory (chroot) and a working
// directory, each pinning its mount like a process's fs_struct does. A
// mount that is some Proc's root or working directory cannot be unmounted
// (EBUSY) until the Proc leaves it (Chdir) or is closed. Relative paths
// resolve from the working directory, absolute ones from the root, and ".."
// never climbs above the root. What a Proc creates is owned by its
// credentials (Cred); it is not permission-checked (see "Permissions" in
// the package doc). Safe for concurrent use.
type Proc struct {
	ns   *Namespace
	cred Cred // immutable: the owner of what the path methods create

	mu     sync.Mutex // guards cwd and closed
	root   loc        // immutable after creation; holds a mount reference
	cwd    loc        // holds a mount reference
	closed bool
}

// processCred is the credentials of this process (effective IDs): a
// namespace's own context acts as the process that made it, so that a
// daemon run by a user owns what it creates, as a FUSE server's own files
// are its user's.
func processCred() Cred {
	uid, gid := os.Geteuid(), os.Getegid()
	if uid < 0 || gid < 0 { // no such IDs on this system (Windows)
		return Cred{}
	}
	return Cred{UID: uint32(uid), GID: uint32(gid)}
}

// Cred returns the credentials the Proc creates nodes with: the namespace's
// own context has the process's effective user and group IDs, a Proc made
// by NewProc those of the Proc it was made from.
func (p *Proc) Cred() Cred { return p.cred }

// NewProc returns a process context whose root and working directory are
// the directory root (resolved in p); Close releases them.
func (p *Proc) NewProc(root string) (*Proc, error) {
	l, err := p.walk(root, true)
	if err != nil {
		return nil, pathErr("chroot", root, err)
	}
	if !l.isDir() {
		l.m.put()
		return nil, pathErr("chroot", root, ENOTDIR)
	}
	return &Proc{ns: p.ns, cred: p.cred, root: l, cwd: l.dup()}, nil
}

// Namespace returns the namespace the context lives in.
func (p *Proc) Namespace() *Namespace { return p.ns }

// Chdir changes the working directory.
func (p *Proc) Chdir(dir string) error {
	l, err := p.walk(dir, true)
	if err != nil {
		return pathErr("chdir", dir, err)
	}
	if !l.isDir() {
		l.m.put()
		return pathErr("chdir", dir, ENOTDIR)
	}
	p.mu.Lock()
	old := p.cwd
	p.cwd = l
	p.mu.Unlock()
	old.m.put()
	return nil
}

// Close releases the root and the working directory. A second Close
// returns fs.ErrClosed. The namespace's own context cannot be closed.
func (p *Proc) Close() error {
	if p == p.ns.Proc {
		return pathErr("close", "/", EBUSY)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return pathErr("close", "proc", errClosed)
	}
	p.closed = true
	root, cwd := p.root, p.cwd
	p.mu.Unlock()
	cwd.m.put()
	root.m.put()
	return nil
}
