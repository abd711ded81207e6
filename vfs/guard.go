package vfs

import (
	"fmt"

	"github.com/raceless/raceless"
)

// Every call into a filesystem's code (FileSystemType.Mount, Superblock,
// Node, DirNode, WritableDir, SymlinkNode, OpenNode, SetattrNode and
// Handle methods, and the optional Handle interfaces) goes through guard,
// the VFS's one recovering path: a panic there is module code failing, not
// the host. guard turns it into an error wrapping EIO (a *PanicError) for
// the caller, as a Linux driver's oops kills the system call and not the
// kernel, and taints the module owning the filesystem. The panic stops
// inside guard, so the caller goes on down its ordinary error path: the
// locks it holds (mpMu, File.wmu or AnonMount.mu: see "Concurrency" in the
// package doc) and the references it took are released as after any error.
// Calls on a nil Node or Handle a module returned panic inside guard too,
// and so are EIO as well. Panics in VFS code itself are not recovered.

// PanicError is the error of a filesystem operation whose module code
// panicked. It wraps EIO (so errors.Is(err, syscall.EIO) holds and a FUSE
// client reads EIO); the owning module was tainted with the same text.
type PanicError struct {
	Module string // the module owning the filesystem type ("" for the built-in rootfs)
	FSType string // the filesystem type
	Op     string // the operation: "lookup", "read", "release", ...
	Value  any    // what was passed to panic
}

// Error is the text the module is tainted with; it names the filesystem
// type and the operation (Module names the module).
func (e *PanicError) Error() string {
	return fmt.Sprintf("panic in filesystem %s %s: %v", e.FSType, e.Op, e.Value)
}

// Unwrap returns EIO.
func (e *PanicError) Unwrap() error { return EIO }

// guard calls fn, module code of sb's filesystem doing op, recovering a
// panic (see above). sb needs only fstype and its module reference set: Mount is guarded
// before the superblock exists.
func guard[T any](sb *superblock, op string, fn func() (T, error)) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			pe := &PanicError{FSType: sb.fstype, Op: op, Value: p}
			if o := sb.owner(); o != nil {
				pe.Module = o.Name()
				o.Taint(raceless.TaintDied, pe.Error())
			}
			var zero T
			v, err = zero, pe
		}
	}()
	return fn()
}

// guard0 is guard for an operation with no result but its error.
func guard0(sb *superblock, op string, fn func() error) error {
	_, err := guard(sb, op, func() (struct{}, error) { return struct{}{}, fn() })
	return err
}

// The node operations, each through guard. n belongs to sb's filesystem.

func (s *superblock) stat(n Node) (Attr, error) {
	return guard(s, "stat", func() (Attr, error) { return n.Stat() })
}

func (s *superblock) lookup(d DirNode, name string) (Node, error) {
	return guard(s, "lookup", func() (Node, error) { return d.Lookup(name) })
}

func (s *superblock) readDir(d DirNode) ([]DirEntry, error) {
	return guard(s, "readdir", func() ([]DirEntry, error) { return d.ReadDir() })
}

func (s *superblock) readlink(l SymlinkNode) (string, error) {
	return guard(s, "readlink", func() (string, error) { return l.Readlink() })
}

func (s *superblock) open(n OpenNode, flag int) (Handle, error) {
	return guard(s, "open", func() (Handle, error) { return n.Open(flag) })
}

func (s *superblock) setattr(n SetattrNode, a SetAttr) error {
	return guard0(s, "setattr", func() error { return n.Setattr(a) })
}

func (s *superblock) statfs() (Statfs, error) {
	return guard(s, "statfs", func() (Statfs, error) { return s.sb.Statfs() })
}
