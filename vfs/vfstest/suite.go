// Package vfstest is the conformance suite of the vfs package's
// filesystems: every filesystem type, built in or provided by a module, is
// held to it. Run(t, typ) checks the type through each way users reach it:
//
//   - "iofs": testing/fstest.TestFS over the io/fs view of a mount;
//   - "vfs": the VFS operations, in process, with Linux's answers: open
//     flags, modes, ownership, special files, link counts, timestamps,
//     rename, rmdir and unlink edge cases, names and their limits,
//     directory listings, Locs, mount points and size limits;
//   - "fuse": the mount exposed through FUSE (vfs/fusefs, with
//     allow_other) to processes: go-fuse's posixtest suite, and POSIX
//     checks made by child processes as root and as two other users
//     (ownership, permissions, sticky directories, setuid and setgid
//     rules, special files, paths near PATH_MAX, sizes).
//
// A read-only type (Type.ReadOnly) is checked for what it holds and for
// refusing every change; the checks that write are skipped, each saying
// so. Every skip names its reason. The FUSE checks need Linux, root
// (go-fuse's DirectMount, and other users' credentials) and /dev/fuse;
// elsewhere they are skipped, saying which is missing.
//
// Each check runs on a fresh host with the type's modules loaded and the
// type mounted at "/" of a new namespace; at its end everything is
// unmounted and every module's reference count must be back to zero.
//
// The FUSE checks run operations in child processes, under other
// credentials: the test binary executes itself, so the TestMain of a
// package that calls Run must call Main first:
//
//	func TestMain(m *testing.M) {
//		vfstest.Main()
//		os.Exit(m.Run())
//	}
package vfstest

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"syscall"
	"testing"
	"testing/fstest"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/testdeadline"
	"github.com/raceless/raceless/vfs"
)

// Type is a filesystem type under test, and what the suite may expect of
// it.
type Type struct {
	// Name is the filesystem type's name, as Mount takes it.
	Name string
	// Load loads into h the modules providing the type (and anything
	// they need). It runs once per check, on a fresh host.
	Load func(ctx context.Context, h *raceless.Host) error
	// Options are the mount options of the mounts the suite makes.
	Options string
	// ReadOnly says the type's files cannot be created or changed: the
	// suite checks that every change is refused (EACCES, EPERM or EROFS)
	// and changes nothing, and skips the checks that write.
	ReadOnly bool
	// Files are files a fresh mount of the type holds, as io/fs paths
	// below its root; a read-only type must name at least one.
	Files []string
	// LimitOptions are mount options under which the type holds at most
	// Limit bytes of file data (a multiple of its block size), answering
	// ENOSPC past it. Limit 0: the type declares no limit, and the limit
	// checks are skipped.
	LimitOptions string
	Limit        int64
	// MaxFileSize is the type's largest file size, past which sizes and
	// writes are EFBIG; 0: not checked.
	MaxFileSize int64
}

// Run runs the whole suite on typ.
func Run(t *testing.T, typ Type) {
	t.Helper()
	if typ.Name == "" || typ.Load == nil {
		t.Fatal("vfstest: Type needs a Name and a Load")
	}
	if typ.ReadOnly && len(typ.Files) == 0 {
		t.Fatal("vfstest: a read-only Type must name Files")
	}
	if (typ.Limit > 0) != (typ.LimitOptions != "") {
		t.Fatal("vfstest: Type.Limit and Type.LimitOptions go together")
	}
	t.Run("iofs", func(t *testing.T) { checkIOFS(t, typ) })
	t.Run("vfs", func(t *testing.T) {
		runChecks(t, typ, vfsChecks, func(t *testing.T) *env { return newEnv(t, typ) })
	})
	t.Run("fuse", func(t *testing.T) { runFUSE(t, typ) })
}

// which types a check applies to
const (
	writable = iota + 1 // writable types only
	readOnly            // read-only types only
	both
)

// check is one named check; E is the world it runs in (*env, or
// *fuseEnv for the FUSE checks).
type check[E any] struct {
	name  string
	kinds int // writable, readOnly or both
	run   func(t *testing.T, e E)
}

// skipReason says why a check of kinds does not apply to typ, or "".
func skipReason(typ Type, kinds int) string {
	switch {
	case kinds == writable && typ.ReadOnly:
		return "read-only type: this check writes"
	case kinds == readOnly && !typ.ReadOnly:
		return "writable type: this check is of a read-only type's refusals (the writable checks cover its answers)"
	}
	return ""
}

// runChecks runs each check as a subtest in a world newE makes, or skips
// it, saying why.
func runChecks[E any](t *testing.T, typ Type, checks []check[E], newE func(t *testing.T) E) {
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if why := skipReason(typ, c.kinds); why != "" {
				t.Skip(why)
			}
			c.run(t, newE(t))
		})
	}
}

// env is one check's world: a host with the type's modules and a
// namespace with the type mounted at "/".
type env struct {
	typ Type
	h   *raceless.Host
	ns  *vfs.Namespace
}

// newEnv makes the check's host and namespace. Cleanup (registered
// first, so it runs after the check's own cleanups, FUSE unmounts
// included) unmounts everything lazily, checks that every module's
// references are back to zero and shuts the host down.
func newEnv(t *testing.T, typ Type) *env {
	t.Helper()
	ctx := context.Background()
	h := raceless.New()
	e := &env{typ: typ, h: h, ns: vfs.NewNamespace(h)}
	t.Cleanup(func() {
		ms := e.ns.Mounts()
		for i := len(ms) - 1; i > 0; i-- {
			_ = e.ns.Unmount(ms[i].Target, vfs.MNT_DETACH)
		}
		for _, m := range h.Modules() {
			if r := m.Refs(); r != 0 {
				t.Errorf("module %s: %d references left after unmounting everything", m.Name(), r)
			}
		}
		sctx, cancel := testdeadline.Context(t)
		defer cancel()
		if _, err := h.Shutdown(sctx); err != nil {
			t.Errorf("host shutdown: %v", err)
		}
	})
	if err := typ.Load(ctx, h); err != nil {
		t.Fatalf("loading the modules of %s: %v", typ.Name, err)
	}
	if err := e.ns.Mount(ctx, "vfstest", "/", typ.Name, typ.Options); err != nil {
		t.Fatalf("mount -t %s -o %q at /: %v", typ.Name, typ.Options, err)
	}
	return e
}

// mount mounts another instance of the type at dir, with options.
func (e *env) mount(t *testing.T, dir, options string) {
	t.Helper()
	if err := e.ns.Mount(context.Background(), "vfstest", dir, e.typ.Name, options); err != nil {
		t.Fatalf("mount -t %s -o %q at %s: %v", e.typ.Name, options, dir, err)
	}
}

func ok(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wantErr checks that err is an *fs.PathError wrapping want.
func wantErr(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	var pe *fs.PathError
	if !errors.Is(err, want) || !errors.As(err, &pe) {
		t.Fatalf("%s: got %v, want %v (an *fs.PathError)", what, err, errnoName(want))
	}
}

// refused are the answers a read-only type may give to a change.
var refused = []syscall.Errno{syscall.EACCES, syscall.EPERM, syscall.EROFS}

// wantRefused checks that err refuses a change to a read-only type.
func wantRefused(t *testing.T, what string, err error) {
	t.Helper()
	var en syscall.Errno
	if !errors.As(err, &en) || !slices.Contains(refused, en) {
		t.Fatalf("%s on a read-only type: got %v, want EACCES, EPERM or EROFS", what, err)
	}
}

// attr returns the attributes of name (not following a final symlink).
func (e *env) attr(t *testing.T, name string) vfs.Attr {
	t.Helper()
	fi, err := e.ns.Lstat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(vfs.Attr)
}

// checkIOFS runs testing/fstest.TestFS over the io/fs view: of a tree the
// suite writes, or of the Files a read-only type holds.
func checkIOFS(t *testing.T, typ Type) {
	e := newEnv(t, typ)
	files := typ.Files
	if !typ.ReadOnly {
		for _, d := range []string{"/a", "/a/b", "/empty"} {
			ok(t, e.ns.Mkdir(d, 0o755))
		}
		tree := map[string]string{"/a/b/c.txt": "c\n", "/a/d.txt": "d", "/e": "", "/a/b/big": string(make([]byte, 3*4096+17))}
		for name, data := range tree {
			ok(t, e.ns.WriteFile(name, []byte(data), 0o644))
			files = append(files, name[1:])
		}
		ok(t, e.ns.Symlink("d.txt", "/a/link"))
	}
	if err := fstest.TestFS(e.ns.FS(), files...); err != nil {
		t.Fatal(err)
	}
}
