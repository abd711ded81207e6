package wasm_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
	ramfsmod "github.com/raceless/raceless/modules/ramfs"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/wasm"
	"github.com/raceless/raceless/wasm/modinfo"
	"github.com/raceless/raceless/wasm/policy"
)

// Sandbox is the test module that tries what a module may get through WASI
// (see its main.go).
const sandbox = "wasm/testdata/sandbox"

// world is a host with ramfs mounted at /, a namespace holding the tree
// the grants are tried on, and a Loader whose Granter reads pol:
//
//	/srv/box/inside.txt   "inside"      the granted directory (fs-read /srv/box)
//	/srv/box/outside.txt  "decoy"       what a path to /outside.txt finds in the box
//	/srv/box/sub/         a directory
//	/srv/box/abs -> /outside.txt        absolute symlinks: resolved in the box
//	/srv/box/ok  -> /inside.txt
//	/srv/box/rel -> ../outside.txt      relative ones: ".." stops at its root
//	/srv/box/deep -> ../../../srv/outside.txt
//	/srv/box/m/           a ramfs mount: f "in a submount"
//	/srv/outside.txt      "outside!!"   what must stay out of reach
//	/outside.txt          "root outside"
type world struct {
	*env
	ns *vfs.Namespace
}

func newWorld(t *testing.T, pol string) *world {
	t.Helper()
	p, err := policy.Parse("test", []byte(pol))
	if err != nil {
		t.Fatal(err)
	}
	g := policy.NewGranter(p)
	cfg := wasmConfig()
	cfg.Granter = g
	e := newEnv(t, cfg)
	ctx := context.Background()
	if _, err := e.h.Load(ctx, ramfsmod.Source(), nil); err != nil {
		t.Fatal(err)
	}
	ns := vfs.NewNamespace(e.h)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ns.Mount(ctx, "none", "/", "ramfs", ""))
	must(ns.MkdirAll("/srv/box/sub", 0o755))
	must(ns.MkdirAll("/srv/box/m", 0o755))
	must(ns.WriteFile("/srv/box/inside.txt", []byte("inside"), 0o644))
	must(ns.WriteFile("/srv/box/outside.txt", []byte("decoy"), 0o644))
	must(ns.WriteFile("/srv/outside.txt", []byte("outside!!"), 0o644))
	must(ns.WriteFile("/outside.txt", []byte("root outside"), 0o644))
	must(ns.Symlink("/outside.txt", "/srv/box/abs"))
	must(ns.Symlink("/inside.txt", "/srv/box/ok"))
	must(ns.Symlink("../outside.txt", "/srv/box/rel"))
	must(ns.Symlink("../../../srv/outside.txt", "/srv/box/deep"))
	must(ns.Mount(ctx, "sub", "/srv/box/m", "ramfs", ""))
	must(ns.WriteFile("/srv/box/m/f", []byte("in a submount"), 0o644))
	g.SetRoot(ns.Proc)
	// Unmount before the host shuts down (newEnv's cleanup, registered
	// first, runs last).
	t.Cleanup(func() {
		for _, m := range []string{"/srv/box/m", "/"} {
			_ = ns.Unmount(m, vfs.MNT_DETACH)
		}
	})
	return &world{env: e, ns: ns}
}

// sandboxBin returns the sandbox module, declaring caps.
func sandboxBin(t testing.TB, caps ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(wasmtest.Build(t, sandbox))
	if err != nil {
		t.Fatal(err)
	}
	blk, err := modinfo.ReadBlock(b)
	if err != nil {
		t.Fatal(err)
	}
	blk.Capabilities = caps
	if b, err = modinfo.AppendBlock(b, blk); err != nil {
		t.Fatal(err)
	}
	return b
}

// loadSandbox loads the sandbox module (b) with its path parameter.
func (e *env) loadSandbox(b []byte, path string) (*raceless.Instance, error) {
	e.t.Helper()
	src, err := e.l.OpenBytes("/sandbox.wasm", b)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.h.Load(context.Background(), src, map[string]string{"path": path})
}

func (e *env) callInt(name string) int64 {
	e.t.Helper()
	r, err := e.call(name)
	if err != nil {
		e.t.Fatalf("call %s: %v", name, err)
	}
	return int64(r[0])
}

func (e *env) unload(name string) {
	e.t.Helper()
	if err := e.h.Unload(context.Background(), name, raceless.UnloadOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// A module that declares no capability gets no preopened directory, no
// environment and no arguments, even when the policy would grant it one;
// it has clocks and random numbers.
func TestNothingByDefault(t *testing.T) {
	w := newWorld(t, "grant sandbox fs-read /srv/box\n")
	if _, err := w.loadSandbox(sandboxBin(t), "/inside.txt"); err != nil {
		t.Fatal(err)
	}
	for sym, want := range map[string]int64{"preopens": 0, "environ": 0, "args": 0} {
		if got := w.callInt(sym); got != want {
			t.Errorf("%s: %d, want %d", sym, got, want)
		}
	}
	for _, sym := range []string{"read_os", "open_raw"} {
		if got := w.callInt(sym); got >= 0 {
			t.Errorf("%s of /inside.txt without a grant: %d bytes", sym, got)
		}
	}
	if now, got := time.Now().UnixNano(), w.callInt("clock"); got < now-int64(time.Minute) || got > now+int64(time.Minute) {
		t.Errorf("clock: %d, the host's %d", got, now)
	}
	if a, b := w.callInt("random"), w.callInt("random"); a == b || a == -1 {
		t.Errorf("random: %d then %d", a, b)
	}
}

// A module that declares a capability its policy does not grant is refused,
// naming the module and the capability; so is one whose granted directory
// does not exist. Nothing stays loaded.
func TestCapabilityRefused(t *testing.T) {
	for _, tc := range []struct {
		name, policy string
		want         error
		msg          string
	}{
		{"no grant", "grant other fs-read /srv/box\n", wasm.ErrCapability, "module sandbox wants capability fs-read: the policy does not grant it to sandbox"},
		{"no such directory", "grant sandbox fs-read /srv/nope\n", fs.ErrNotExist, "module sandbox wants capability fs-read: the granted directory: chroot /srv/nope: no such file or directory"},
		{"not a directory", "grant sandbox fs-read /srv/outside.txt\n", nil, "module sandbox wants capability fs-read: the granted directory: chroot /srv/outside.txt: not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, tc.policy)
			_, err := w.loadSandbox(sandboxBin(t, modinfo.CapFSRead), "/inside.txt")
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("%v; want %v: ...%s", err, tc.want, tc.msg)
			}
			if _, ok := w.h.Module("sandbox"); ok {
				t.Fatal("sandbox loaded")
			}
		})
	}
	// No Granter at all: nothing is granted.
	e := newEnv(t, wasmConfig())
	_, err := e.loadSandbox(sandboxBin(t, modinfo.CapFSRead), "/x")
	if !errors.Is(err, wasm.ErrCapability) || !strings.Contains(err.Error(), "module sandbox wants capability fs-read: no policy grants capabilities") {
		t.Fatalf("no Granter: %v", err)
	}
}

// A module granted fs-read of /srv/box sees it as its root and reaches
// nothing outside it: not by "..", not by an absolute path, not by a
// symbolic link (absolute or relative), through Go's os package (which
// cleans paths itself) or through WASI's path_open with the path as given.
// A path meant for /outside.txt finds the box's decoy at best (5 bytes),
// never the files outside (9 and 12 bytes). It cannot write either.
func TestFSReadGrant(t *testing.T) {
	w := newWorld(t, "grant sandbox fs-read /srv/box\n")
	bin := sandboxBin(t, modinfo.CapFSRead)
	const fails = -1 // any failure
	for _, tc := range []struct {
		sym, path string
		want      int64 // bytes read, or fails
	}{
		{"read_os", "/inside.txt", 6},
		{"read_os", "inside.txt", 6},
		{"read_os", "/sub/../inside.txt", 6},
		{"read_os", "/ok", 6},
		{"read_os", "/m/f", 13},
		{"read_os", "/../outside.txt", 5}, // Go cleans it to /outside.txt
		{"read_os", "../../srv/outside.txt", fails},
		{"read_os", "/abs", 5},
		{"read_os", "/rel", 5},
		{"read_os", "/deep", fails},
		{"open_raw", "inside.txt", 6},
		{"open_raw", "sub/../inside.txt", 6},
		{"open_raw", "ok", 6},
		{"open_raw", "m/f", 13},
		{"open_raw", "../outside.txt", fails},
		{"open_raw", "sub/../../outside.txt", fails},
		{"open_raw", "../../srv/outside.txt", fails},
		{"open_raw", "/srv/outside.txt", fails},
		{"open_raw", "abs", 5},
		{"open_raw", "rel", 5},
		{"open_raw", "deep", fails},
		{"open_raw", "sub/../rel", 5},
		{"write_os", "inside.txt", fails},
	} {
		if _, err := w.loadSandbox(bin, tc.path); err != nil {
			t.Fatal(err)
		}
		got := w.callInt(tc.sym)
		if tc.want >= 0 && got != tc.want || tc.want < 0 && got >= 0 {
			t.Errorf("%s(%q): %d, want %d", tc.sym, tc.path, got, tc.want)
		}
		if n := w.callInt("preopens"); n != 1 {
			t.Errorf("%d preopened directories, want 1", n)
		}
		w.unload("sandbox")
	}
	if b, err := w.ns.ReadFile("/srv/box/inside.txt"); err != nil || string(b) != "inside" {
		t.Fatalf("inside.txt after the module tried to write it: %q, %v", b, err)
	}
}

// The granted directory pins its mount while the module is loaded, as a
// directory a WASI runtime preopens does; a file the module opens pins its
// mount until it is closed, as any open file does; and a lazy unmount
// leaves the open file readable. Unloading the module releases all of it.
func TestGrantPins(t *testing.T) {
	w := newWorld(t, "grant sandbox fs-read /srv/box/m\ngrant reader fs-read /srv/box\n")
	ramfs, _ := w.h.Module("ramfs")
	base := ramfs.Refs()

	// The grant's root is the mount at /srv/box/m: busy while loaded.
	if _, err := w.loadSandbox(sandboxBin(t, modinfo.CapFSRead), "/f"); err != nil {
		t.Fatal(err)
	}
	if err := w.ns.Unmount("/srv/box/m", 0); !errors.Is(err, vfs.EBUSY) {
		t.Fatalf("umount of the granted mount while the module is loaded: %v", err)
	}
	w.unload("sandbox")
	if err := w.ns.Unmount("/srv/box/m", 0); err != nil {
		t.Fatalf("umount once the module is gone: %v", err)
	}
	if got := ramfs.Refs(); got != base-1 {
		t.Fatalf("ramfs references %d, want %d (the unmounted one gone)", got, base-1)
	}
	ctx := context.Background()
	if err := w.ns.Mount(ctx, "sub", "/srv/box/m", "ramfs", ""); err != nil {
		t.Fatal(err)
	}
	if err := w.ns.WriteFile("/srv/box/m/f", []byte("in a submount"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Granted /srv/box: the submount /srv/box/m is pinned by the file
	// the module holds open in it, and only by that file.
	bin := sandboxBin(t, modinfo.CapFSRead)
	blk, _ := modinfo.ReadBlock(bin)
	blk.Name = "reader"
	bin, _ = modinfo.AppendBlock(bin, blk)
	if _, err := w.loadSandbox(bin, "/m/f"); err != nil {
		t.Fatal(err)
	}
	if got := w.callInt("hold"); got != 0 {
		t.Fatalf("hold: %d", got)
	}
	if err := w.ns.Unmount("/srv/box/m", 0); !errors.Is(err, vfs.EBUSY) {
		t.Fatalf("umount with the module's file open: %v", err)
	}
	if got := w.callInt("release"); got != 0 {
		t.Fatalf("release: %d", got)
	}
	if err := w.ns.Unmount("/srv/box/m", 0); err != nil {
		t.Fatalf("umount after the module closed its file: %v", err)
	}
	if err := w.ns.Mount(ctx, "sub", "/srv/box/m", "ramfs", ""); err != nil {
		t.Fatal(err)
	}
	if err := w.ns.WriteFile("/srv/box/m/f", []byte("in a submount"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := w.callInt("hold"); got != 0 {
		t.Fatalf("hold: %d", got)
	}
	// Lazily unmounted under the open file: it still reads.
	if err := w.ns.Unmount("/srv/box/m", vfs.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if got := w.callInt("read_held"); got != 13 {
		t.Fatalf("read of the held file after umount -l: %d", got)
	}
	before := ramfs.Refs()
	w.unload("reader") // closes the file the module left open
	if got := ramfs.Refs(); got != before-1 {
		t.Fatalf("ramfs references %d after the unload, want %d (the detached mount released)", got, before-1)
	}
}

// countingGranter grants every capability a file system of its own and
// counts the grants and their releases.
type countingGranter struct {
	mu               sync.Mutex
	grants, releases int
	fsys             fs.FS
}

func (g *countingGranter) Grant(module, capability string) (wasm.Grant, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.grants++
	return wasm.Grant{FS: g.fsys, Release: func() {
		g.mu.Lock()
		g.releases++
		g.mu.Unlock()
	}}, nil
}

func (g *countingGranter) counts() (int, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.grants, g.releases
}

// writableFS is an fs.FS whose files implement io.Writer (and record what
// is written): the loader must offer the guest none of it.
type writableFS struct {
	mu      sync.Mutex
	written []byte
}

type writableFile struct {
	fs.File
	w *writableFS
}

func (w *writableFS) Open(name string) (fs.File, error) {
	f, err := fstest.MapFS{"f": {Data: []byte("data")}}.Open(name)
	if err != nil {
		return nil, err
	}
	return writableFile{f, w}, nil
}

func (f writableFile) Write(p []byte) (int, error) {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	f.w.written = append(f.w.written, p...)
	return len(p), nil
}

// Every grant is released once, whether the load succeeds (at unload) or
// fails after the grant (its init fails, its code does not link); and a
// file system whose files are writable is still read-only to the module.
func TestGrantReleased(t *testing.T) {
	wfs := &writableFS{}
	g := &countingGranter{fsys: wfs}
	cfg := wasmConfig()
	cfg.Granter = g
	e := newEnv(t, cfg)
	withCaps := func(b []byte, name string) []byte {
		b, err := modinfo.AppendBlock(b, modinfo.Block{Info: raceless.Info{Name: name}, Capabilities: []string{modinfo.CapFSRead}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, err := e.openLoad("/initfails.wasm", withCaps(tiny(wasmtest.TinyOptions{InitCode: -5}), "initfails")); !errors.Is(err, raceless.ErrInit) {
		t.Fatalf("init failing: %v", err)
	}
	if _, err := e.openLoad("/nolink.wasm", withCaps(tiny(wasmtest.TinyOptions{ImportModule: "env", ImportName: "f"}), "nolink")); !errors.Is(err, wasm.ErrUnknownImport) {
		t.Fatalf("unknown import: %v", err)
	}
	if grants, releases := g.counts(); grants != 2 || releases != 2 {
		t.Fatalf("after two failed loads: %d grants, %d releases", grants, releases)
	}
	if _, err := e.loadSandbox(sandboxBin(t, modinfo.CapFSRead), "f"); err != nil {
		t.Fatal(err)
	}
	if got := e.callInt("read_os"); got != 4 {
		t.Fatalf("read_os: %d", got)
	}
	if got := e.callInt("write_os"); got >= 0 {
		t.Fatalf("write_os on a read-only grant: %d", got)
	}
	wfs.mu.Lock()
	written := string(wfs.written)
	wfs.mu.Unlock()
	if written != "" {
		t.Fatalf("the module wrote %q through its grant", written)
	}
	if _, releases := g.counts(); releases != 2 {
		t.Fatalf("released while loaded: %d", releases)
	}
	e.unload("sandbox")
	if grants, releases := g.counts(); grants != 3 || releases != 3 {
		t.Fatalf("after the unload: %d grants, %d releases", grants, releases)
	}
}
