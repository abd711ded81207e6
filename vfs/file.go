package vfs

import (
	"io"
	"io/fs"
	"os"
	"sync"
)

// File is an open file. It holds a reference on its mount (and so on the
// superblock, the filesystem type and the owner module) until Close; the
// release order at Close is the filesystem's Handle.Release (module code),
// then the mount reference (which may shut the superblock down and drop the
// module reference), all outside module code. Read, Write and Seek share
// one offset and are safe for concurrent use; ReadAt and WriteAt do not
// touch it.
type File struct {
	m    *Mount
	n    Node
	ino  uint64
	h    Handle // nil for directories
	name string
	flag int
	dir  bool

	onClose func() // anonymous files: the AnonMount's count, after Release

	// Lock rules: the package doc, "Concurrency".
	wmu     sync.Mutex // serializes Write calls sharing the offset; held across the filesystem's write; taken before mu
	mu      sync.Mutex // guards off, dirents, dirRead, closed; a leaf, never held across filesystem code
	off     int64
	dirents []fs.DirEntry
	dirRead bool
	closed  bool
}

// Name returns the name the file was opened by.
func (f *File) Name() string { return f.name }

// Mount returns the mount the file pins (for tests and views).
func (f *File) Mount() *Mount { return f.m }

func (f *File) check(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return pathErr(op, f.name, errClosed)
	}
	return nil
}

// Close releases the file. A second Close returns fs.ErrClosed.
func (f *File) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return pathErr("close", f.name, errClosed)
	}
	f.closed = true
	f.mu.Unlock()
	var err error
	if f.h != nil {
		err = guard0(f.m.sb, "release", f.h.Release)
	}
	if f.onClose != nil {
		f.onClose()
	}
	f.m.put()
	return pathErr("close", f.name, err)
}

// Stat returns the file's metadata (also after it was unlinked).
func (f *File) Stat() (fs.FileInfo, error) {
	if err := f.check("stat"); err != nil {
		return nil, err
	}
	a, err := f.m.sb.stat(f.n)
	if err != nil {
		return nil, pathErr("stat", f.name, err)
	}
	a.Dev = f.m.sb.id
	return fileInfo{baseName(f.name), a}, nil
}

// Node returns the filesystem node (for views such as FUSE).
func (f *File) Node() Node { return f.n }

// Loc returns the place of the open node (which the File keeps alive; the
// Loc alone does not).
func (f *File) Loc() Loc { return Loc{m: f.m, n: f.n, ino: f.ino, name: baseName(f.name)} }

func (f *File) readable() bool { return f.flag&(os.O_WRONLY|os.O_RDWR) != os.O_WRONLY }
func (f *File) writable() bool { return f.flag&(os.O_WRONLY|os.O_RDWR) != 0 }

// ReadAt reads at off without moving the offset.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if err := f.check("read"); err != nil {
		return 0, err
	}
	if f.dir {
		return 0, pathErr("read", f.name, EISDIR)
	}
	if !f.readable() {
		return 0, pathErr("read", f.name, EBADF)
	}
	if off < 0 {
		return 0, pathErr("read", f.name, EINVAL)
	}
	n, err := guard(f.m.sb, "read", func() (int, error) { return f.h.ReadAt(p, off) })
	if err != nil && err != io.EOF {
		err = pathErr("read", f.name, err)
	}
	return n, err
}

// Read reads at the offset and advances it.
func (f *File) Read(p []byte) (int, error) {
	f.mu.Lock()
	off := f.off
	f.mu.Unlock()
	n, err := f.ReadAt(p, off)
	f.mu.Lock()
	f.off = off + int64(n)
	f.mu.Unlock()
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// WriteAt writes at off (O_APPEND files: at the end).
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	n, _, err := f.write(p, off)
	return n, err
}

func (f *File) write(p []byte, off int64) (int, int64, error) {
	if err := f.check("write"); err != nil {
		return 0, 0, err
	}
	if f.dir {
		return 0, 0, pathErr("write", f.name, EISDIR)
	}
	if !f.writable() {
		return 0, 0, pathErr("write", f.name, EBADF)
	}
	if off < 0 || off+int64(len(p)) < off { // rw_verify_area: a negative offset, or an end past int64
		return 0, 0, pathErr("write", f.name, EINVAL)
	}
	if f.flag&os.O_APPEND != 0 {
		if ap, ok := f.h.(Appender); ok {
			var end int64
			n, err := guard(f.m.sb, "append", func() (n int, err error) {
				n, end, err = ap.Append(p)
				return n, err
			})
			return n, end, pathErr("write", f.name, err)
		}
		a, err := f.m.sb.stat(f.n)
		if err != nil {
			return 0, 0, pathErr("write", f.name, err)
		}
		off = a.Size
	}
	n, err := guard(f.m.sb, "write", func() (int, error) { return f.h.WriteAt(p, off) })
	return n, off + int64(n), pathErr("write", f.name, err)
}

// Write writes at the offset and advances it.
func (f *File) Write(p []byte) (int, error) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.mu.Lock()
	off := f.off
	f.mu.Unlock()
	n, end, err := f.write(p, off)
	f.mu.Lock()
	if err == nil || n > 0 {
		f.off = end
	}
	f.mu.Unlock()
	return n, err
}

// Seek sets the offset (io.Seeker).
func (f *File) Seek(offset int64, whence int) (int64, error) {
	if err := f.check("seek"); err != nil {
		return 0, err
	}
	var base int64
	switch whence {
	case io.SeekStart, io.SeekCurrent:
	case io.SeekEnd:
		// The size comes from filesystem code: asked before taking f.mu.
		if sh, ok := f.h.(SizedHandle); ok {
			var err error
			if base, err = guard(f.m.sb, "size", func() (int64, error) { return sh.Size(), nil }); err != nil {
				return 0, pathErr("seek", f.name, err)
			}
			break
		}
		a, err := f.m.sb.stat(f.n)
		if err != nil {
			return 0, pathErr("seek", f.name, err)
		}
		base = a.Size
	default:
		return 0, pathErr("seek", f.name, EINVAL)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if whence == io.SeekCurrent {
		base = f.off
	}
	if base+offset < 0 {
		return 0, pathErr("seek", f.name, EINVAL)
	}
	f.off = base + offset
	if f.dir && f.off == 0 {
		f.dirents, f.dirRead = nil, false
	}
	return f.off, nil
}

// Truncate changes the file's size, as ftruncate(2): EINVAL for a
// negative size, a file not open for writing or not a regular file; the
// modification time becomes now even when the size does not change.
func (f *File) Truncate(size int64) error {
	if err := f.check("truncate"); err != nil {
		return err
	}
	if !f.writable() || f.dir || size < 0 {
		return pathErr("truncate", f.name, EINVAL)
	}
	return pathErr("truncate", f.name, truncateNode(f.m.sb, f.n, size, true))
}

// Setattr changes the file's metadata (fchmod, ftruncate, futimes); a Size
// is checked as truncate(2) checks it.
func (f *File) Setattr(a SetAttr) error {
	if err := f.check("setattr"); err != nil {
		return err
	}
	return pathErr("setattr", f.name, setattrNode(f.m.sb, f.n, a))
}

// Sync flushes the file, when the filesystem can.
func (f *File) Sync() error {
	if err := f.check("sync"); err != nil {
		return err
	}
	if s, ok := f.h.(Syncer); ok {
		return pathErr("sync", f.name, guard0(f.m.sb, "sync", s.Sync))
	}
	return nil
}

// ReadDir reads directory entries, sorted by name, with fs.ReadDirFile's
// contract: n > 0 returns at most n and io.EOF at the end; n <= 0 returns
// all that are left and a nil error.
func (f *File) ReadDir(n int) ([]fs.DirEntry, error) {
	if err := f.check("readdirent"); err != nil {
		return nil, err
	}
	if !f.dir {
		return nil, pathErr("readdirent", f.name, ENOTDIR)
	}
	f.mu.Lock()
	read := f.dirRead
	f.mu.Unlock()
	if !read {
		// The listing is filesystem code: made without f.mu. A
		// concurrent ReadDir may list too; the first to finish wins.
		ents, err := readDirLoc(nil, loc{m: f.m, n: f.n})
		if err != nil {
			return nil, pathErr("readdirent", f.name, err)
		}
		f.mu.Lock()
		if !f.dirRead {
			f.dirents, f.dirRead = ents, true
		}
	} else {
		f.mu.Lock()
	}
	defer f.mu.Unlock()
	if n <= 0 {
		out := f.dirents
		f.dirents = nil
		return out, nil
	}
	if len(f.dirents) == 0 {
		return nil, io.EOF
	}
	if n > len(f.dirents) {
		n = len(f.dirents)
	}
	out := f.dirents[:n:n]
	f.dirents = f.dirents[n:]
	return out, nil
}
