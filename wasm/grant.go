package wasm

import (
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/tetratelabs/wazero"

	"github.com/raceless/raceless/wasm/modinfo"
)

// Granter decides what the modules of a Loader get from their host beyond
// clocks and random numbers (Config.Granter). Package wasm/policy has one
// that reads a policy file and grants directories of a VFS namespace.
type Granter interface {
	// Grant returns what module may use for capability, one that its
	// modinfo block declares, or an error: one wrapping ErrCapability
	// when module is not granted capability. It is called as an instance
	// is created, once per capability declared, and must be safe for
	// concurrent use.
	Grant(module, capability string) (Grant, error)
}

// Grant is what a Granter gives a module for one capability.
type Grant struct {
	// FS, for modinfo.CapFSRead, is the file system the module sees
	// through WASI as its root directory ("/"), preopened. The module
	// only reads it: its files are offered to the guest with their
	// reading methods alone, whatever else they implement. A file stays
	// open while the guest keeps it open, and until the instance is
	// closed at the latest.
	FS fs.FS
	// Release, if set, is called once, when the instance no longer uses
	// the grant: after it is closed (its files closed with it), or when
	// the load fails.
	Release func()
}

// grants is what an instance was granted: its WASI file system
// configuration, and what to release when it is closed.
type grants struct {
	fsConfig wazero.FSConfig // nil: no preopened directory
	releases []func()
}

// release releases every grant, once.
func (g *grants) release() {
	if g == nil {
		return
	}
	rs := g.releases
	g.releases = nil
	for _, r := range rs {
		r()
	}
}

// grant asks the Loader's Granter for each capability src declares. Any
// refusal fails the load, naming the capability, and releases what was
// granted before it.
func (l *Loader) grant(src *Source) (*grants, error) {
	g := &grants{}
	for _, c := range src.caps {
		if l.cfg.Granter == nil {
			g.release()
			return nil, fileErr("instantiate", src.path, fmt.Errorf("module %s wants capability %s: no policy grants capabilities: %w", src.info.Name, c, ErrCapability))
		}
		gr, err := l.cfg.Granter.Grant(src.info.Name, c)
		if err != nil {
			g.release()
			return nil, fileErr("instantiate", src.path, fmt.Errorf("module %s wants capability %s: %w", src.info.Name, c, err))
		}
		if gr.Release != nil {
			g.releases = append(g.releases, gr.Release)
		}
		switch c {
		case modinfo.CapFSRead:
			if gr.FS == nil {
				g.release()
				return nil, fileErr("instantiate", src.path, fmt.Errorf("module %s wants capability %s: granted no file system: %w", src.info.Name, c, ErrCapability))
			}
			g.fsConfig = wazero.NewFSConfig().WithFSMount(readOnlyFS{gr.FS}, "/")
		}
	}
	return g, nil
}

// readOnlyFS is a granted fs.FS as a module's WASI sees it: its files have
// only their reading methods. wazero writes to a file of an fs.FS that
// implements io.Writer; this wrapper makes "read" the grant's property
// instead of the granted files'.
type readOnlyFS struct{ fsys fs.FS }

func (r readOnlyFS) Open(name string) (fs.File, error) {
	f, err := r.fsys.Open(name)
	if err != nil {
		return nil, err
	}
	return readOnlyFile{f}, nil
}

// readOnlyFile offers the reading methods a wazero fs.FS file may have: a
// method its file lacks fails with errors.ErrUnsupported.
type readOnlyFile struct{ f fs.File }

func (r readOnlyFile) Stat() (fs.FileInfo, error) { return r.f.Stat() }
func (r readOnlyFile) Read(p []byte) (int, error) { return r.f.Read(p) }
func (r readOnlyFile) Close() error               { return r.f.Close() }

func (r readOnlyFile) ReadAt(p []byte, off int64) (int, error) {
	if ra, ok := r.f.(io.ReaderAt); ok {
		return ra.ReadAt(p, off)
	}
	return 0, errors.ErrUnsupported
}

func (r readOnlyFile) Seek(offset int64, whence int) (int64, error) {
	if s, ok := r.f.(io.Seeker); ok {
		return s.Seek(offset, whence)
	}
	return 0, errors.ErrUnsupported
}

func (r readOnlyFile) ReadDir(n int) ([]fs.DirEntry, error) {
	if d, ok := r.f.(fs.ReadDirFile); ok {
		return d.ReadDir(n)
	}
	return nil, errors.ErrUnsupported
}
