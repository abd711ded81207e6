package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/testdeadline"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm/modinfo"
)

// Tiny modules (encoded with internal/wasmtest's encoder): no Go runtime,
// built in microseconds, for the rejections of the compile stage and for
// the cache.

// tinyModule is wasmtest.Tiny with a modinfo naming it name.
func tinyModule(t *testing.T, name string, o wasmtest.TinyOptions) []byte {
	t.Helper()
	out, err := modinfo.Append(wasmtest.Tiny(o), raceless.Info{Name: name, Version: "1", License: "MIT", Description: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func writeModule(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name+".wasm")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Files the compiler or the linker rejects are "Invalid module format"
// (exit 7), as a file that is not wasm at all is; an Init that returns
// EINVAL is "Module init failed" (exit 1), not "Invalid parameters", which
// stays for parameters refused before Init.
func TestExitStatusOfModuleRejections(t *testing.T) {
	d := startDaemon(t)
	dir := t.TempDir()
	good := writeModule(t, dir, "good", tinyModule(t, "good", wasmtest.TinyOptions{}))
	d.run("insmod", good).ok(t)
	d.run("rmmod", "good").ok(t)
	for _, tc := range []struct {
		name string
		o    wasmtest.TinyOptions
		text string
	}{
		{"reserved", wasmtest.TinyOptions{ExtraExport: "raceless_interrupt"}, "reserved for the host"},
		{"unknownimport", wasmtest.TinyOptions{ImportModule: "env", ImportName: "foo"}, "env.foo"},
		{"badcode", wasmtest.TinyOptions{BadCode: true}, "invalid WebAssembly code"},
		{"hugememory", wasmtest.TinyOptions{MemoryPages: 5000}, ""},
	} {
		path := writeModule(t, dir, tc.name, tinyModule(t, tc.name, tc.o))
		r := d.run("insmod", path)
		prefix := "insmod: ERROR: could not insert module " + path + ": Invalid module format ("
		if r.code != 7 || !strings.HasPrefix(r.stderr, prefix) || !strings.Contains(r.stderr, tc.text) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%s: exit %d, stderr %q; want exit 7, %q...%q", tc.name, r.code, r.stderr, prefix, tc.text)
		}
	}
	einval := writeModule(t, dir, "einval", tinyModule(t, "einval", wasmtest.TinyOptions{InitCode: -22}))
	r := d.run("insmod", einval)
	if r.code != 1 || !strings.HasPrefix(r.stderr, "insmod: ERROR: could not insert module "+einval+": Module init failed (") ||
		strings.Contains(r.stderr, "Invalid parameters") || !strings.Contains(r.stderr, "code -22") {
		t.Errorf("init returning EINVAL: exit %d, stderr %q", r.code, r.stderr)
	}
	d.run("insmod", good, "nope=1").fails(t, 7, "insmod: ERROR: could not insert module "+good+": Invalid parameters (param good: unknown parameter \"nope\": invalid argument)")
}

// Help goes to stdout with status 0, a usage error to stderr with 2; the
// version is what the Go toolchain recorded in the binary.
func TestHelpAndVersion(t *testing.T) {
	r := runCmd(t, "", nil, "raceless", "--help").ok(t)
	if r.stderr != "" || !strings.HasPrefix(r.stdout, "Usage: raceless COMMAND") {
		t.Fatalf("raceless --help: %+v", r)
	}
	for _, argv := range [][]string{{"raceless", "serve", "--help"}, {"raceless", "lsmod", "-h"}, {"insmod", "--help"}, {"raceless", "help", "rmmod"}} {
		r := runCmd(t, "", nil, argv[0], argv[1:]...).ok(t)
		if r.stderr != "" || !strings.HasPrefix(r.stdout, "Usage: ") || !strings.Contains(r.stdout, "-h, --help") {
			t.Errorf("%q: %+v", argv, r)
		}
	}
	if r := runCmd(t, "", nil, "raceless"); r.code != 2 || r.stdout != "" || !strings.HasPrefix(r.stderr, "raceless: ERROR: no command given\nUsage: raceless COMMAND") {
		t.Errorf("raceless alone: %+v", r)
	}
	checkVersion(t, bin)
	// The same with VCS information recorded, where the checkout allows it.
	vcsBin := filepath.Join(t.TempDir(), "raceless")
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-buildvcs=true", "-o", vcsBin, ".").CombinedOutput(); err != nil {
		t.Logf("no VCS information to record (%v): %s", err, out)
		return
	}
	if got := checkVersion(t, vcsBin); !regexp.MustCompile(` vcs\.revision=[0-9a-f]{40} vcs\.time=\S+ vcs\.modified=(true|false) `).MatchString(got) {
		t.Errorf("built with -buildvcs=true: %q", got)
	}
}

// checkVersion checks that path's --version agrees with `go version -m`.
func checkVersion(t *testing.T, path string) string {
	t.Helper()
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	got := string(out)
	m, err := exec.CommandContext(ctx, "go", "version", "-m", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"vcs.revision": "unknown", "vcs.time": "unknown", "vcs.modified": "unknown"}
	version, gover := "", ""
	for i, line := range strings.Split(string(m), "\n") {
		f := strings.Fields(line)
		switch {
		case i == 0 && len(f) == 2:
			gover = f[1]
		case len(f) >= 3 && f[0] == "mod":
			version = f[2]
		case len(f) == 2 && f[0] == "build":
			if k, v, ok := strings.Cut(f[1], "="); ok {
				if _, known := want[k]; known {
					want[k] = v
				}
			}
		}
	}
	exp := "raceless " + version + " vcs.revision=" + want["vcs.revision"] + " vcs.time=" + want["vcs.time"] + " vcs.modified=" + want["vcs.modified"] + " " + gover + " protocol=1\n"
	if got != exp {
		t.Errorf("%s --version:\n got %q\nwant %q (from go version -m)", path, got, exp)
	}
	if out2, _ := exec.CommandContext(ctx, path, "version").Output(); string(out2) != got {
		t.Errorf("version %q, --version %q", out2, got)
	}
	return got
}

// cacheFiles lists the regular files under dir ("" when dir is missing).
func cacheFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && path == dir {
				return filepath.SkipDir
			}
			return err
		}
		if e.Type().IsRegular() {
			files = append(files, strings.TrimPrefix(path, dir+"/"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// The daemon's compilation cache is on disk by default, under
// os.UserCacheDir()/raceless; --cache-dir moves it; --cache-dir off and an
// empty --cache-dir keep it in memory (nothing written); a default
// directory that cannot be created is a warning, not a failure.
func TestCompilationCacheDir(t *testing.T) {
	mod := writeModule(t, t.TempDir(), "cached", tinyModule(t, "cached", wasmtest.TinyOptions{}))
	load := func(d *daemon) {
		t.Helper()
		d.run("insmod", mod).ok(t)
		d.run("rmmod", "cached").ok(t)
		d.stop()
	}
	// With the instrumented binary and wazero's compiled code.
	wantFiles := func(what, dir string) {
		t.Helper()
		files := cacheFiles(t, dir)
		var instrumented, compiled bool
		for _, f := range files {
			instrumented = instrumented || strings.HasPrefix(f, "raceless-instrumented-")
			compiled = compiled || !strings.HasPrefix(f, "raceless-instrumented-")
		}
		if !instrumented || !compiled {
			t.Errorf("%s: %s holds %q, want the instrumented binary and the compiled code", what, dir, files)
		}
	}

	home := t.TempDir()
	load(startDaemonEnv(t, []string{"XDG_CACHE_HOME=" + home}))
	wantFiles("default", filepath.Join(home, "raceless"))

	moved := t.TempDir()
	home = t.TempDir()
	load(startDaemonEnv(t, []string{"XDG_CACHE_HOME=" + home}, "--cache-dir", moved))
	wantFiles("--cache-dir DIR", moved)
	if files := cacheFiles(t, home); len(files) != 0 {
		t.Errorf("--cache-dir DIR: the default directory holds %q", files)
	}

	for _, off := range [][]string{{"--cache-dir=off"}, {"--cache-dir", "off"}, {"--cache-dir="}} {
		home := t.TempDir()
		d := startDaemonEnv(t, []string{"XDG_CACHE_HOME=" + home}, off...)
		load(d)
		if files := cacheFiles(t, home); len(files) != 0 {
			t.Errorf("%q: the default directory holds %q", off, files)
		}
		if _, err := os.Stat(filepath.Join(home, "raceless")); !os.IsNotExist(err) {
			t.Errorf("%q: the default directory was created (%v)", off, err)
		}
		if _, err := os.Stat("off"); !os.IsNotExist(err) {
			t.Errorf("%q: a directory named off was created", off)
		}
	}

	// A default directory that cannot be created: a warning, then the
	// daemon runs (and loads) without a disk cache.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemonEnv(t, []string{"XDG_CACHE_HOME=" + file})
	load(d)
	if log := d.log.String(); !strings.Contains(log, "level=WARN msg=\"no on-disk compilation cache: the default cache directory cannot be created (see --cache-dir)\"") {
		t.Errorf("no warning about the default cache directory:\n%s", log)
	}
	// A directory given with --cache-dir that cannot be used is an error.
	r := runCmd(t, "", nil, "raceless", "serve", "--socket", filepath.Join(t.TempDir(), "s"), "--cache-dir", filepath.Join(file, "sub"))
	if r.code != 1 || !strings.HasPrefix(r.stderr, "serve: ERROR: cannot start the wasm loader: ") {
		t.Errorf("--cache-dir under a file: %+v", r)
	}
}

// serve refuses a --call-timeout that is not a positive duration, before
// it starts anything.
func TestServeCallTimeoutFlag(t *testing.T) {
	for _, v := range []string{"0s", "-1s"} {
		r := runCmd(t, filepath.Join(t.TempDir(), "sock"), nil, "raceless", "serve", "--cache-dir", "off", "--call-timeout", v)
		want := "serve: ERROR: bad --call-timeout " + v + " (a positive duration) (usage: "
		if r.code != 2 || !strings.HasPrefix(r.stderr, want) {
			t.Errorf("--call-timeout %s: exit %d, stderr %q; want exit 2, %q...", v, r.code, r.stderr, want)
		}
	}
}
