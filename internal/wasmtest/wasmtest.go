// Package wasmtest builds raceless WebAssembly modules from Go source for
// tests and benchmarks, and encodes tiny ones by hand (ULEB, Name, Section,
// Vec: modules without a Go runtime, for bad input and fast cycles).
//
// Build compiles a module directory (a package main using the sdk, with a
// modinfo.json beside main.go) with the standard toolchain,
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared
//
// and appends the modinfo block. Results are cached by content (the
// directory's files, the sdk's files and the Go version) under
// os.TempDir()/raceless-wasmtest, so each module is built once per machine
// until its source changes, not once per test binary; within a process
// concurrent Builds of one directory build it once. Building costs a few
// seconds on two cores when the Go build cache is cold.
//
// Build is safe for concurrent use.
package wasmtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm/modinfo"
)

// Module directories of this repository, relative to its root.
const (
	Hello    = "examples/wasm/hello"
	Provider = "examples/wasm/provider"
	Consumer = "examples/wasm/consumer"
	Refuser  = "examples/wasm/refuser"
	// Misbehave is a test module that loops (spin), panics (boom,
	// nilderef), eats memory (eat MiB) and echoes (echo); its bool
	// parameter "fail" makes its init fail.
	Misbehave = "wasm/testdata/misbehave"
	// Values is a test module whose symbols take and return i32, i64, f32
	// and f64: one32(i64) -> i32 (always 1), neg32(i32) -> i32,
	// neg64(i64) -> i64, mulf32(f32, f32) -> f32, divf64(f64, f64) -> f64.
	Values = "wasm/testdata/values"
)

var (
	mu     sync.Mutex
	builds = map[string]*build{}
)

type build struct {
	once sync.Once
	path string
	err  error
}

// Build returns the path of the built module (with modinfo) for dir, a
// directory relative to the repository root or absolute. It fails the test
// if the build fails.
func Build(t testing.TB, dir string) string {
	t.Helper()
	p, err := BuildCached(context.Background(), dir)
	if err != nil {
		t.Fatalf("wasmtest: %v", err)
	}
	return p
}

// BuildCached is Build without a testing.TB, for benchmarks and tools.
func BuildCached(ctx context.Context, dir string) (string, error) {
	abs, err := resolve(dir)
	if err != nil {
		return "", err
	}
	mu.Lock()
	b := builds[abs]
	if b == nil {
		b = &build{}
		builds[abs] = b
	}
	mu.Unlock()
	b.once.Do(func() { b.path, b.err = buildCached(ctx, abs) })
	return b.path, b.err
}

// resolve makes dir absolute, relative to the module root when relative.
func resolve(dir string) (string, error) {
	if filepath.IsAbs(dir) {
		return dir, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, dir), nil
}

// RepoRoot returns the root of the raceless module (the directory of the
// go.mod above the working directory).
func RepoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && len(b) > 0 {
			return d, nil
		}
		up := filepath.Dir(d)
		if up == d {
			return "", fmt.Errorf("wasmtest: no go.mod above the working directory")
		}
		d = up
	}
}

func buildCached(ctx context.Context, dir string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version(), dir)
	inputs, err := moduleDeps(ctx, root, dir)
	if err != nil {
		return "", err
	}
	for _, d := range inputs {
		if err := hashDir(h, d); err != nil {
			return "", err
		}
	}
	sum := hex.EncodeToString(h.Sum(nil))[:16]
	cache := filepath.Join(os.TempDir(), "raceless-wasmtest")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(cache, filepath.Base(dir)+"-"+sum+".wasm")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	tmp, err := os.CreateTemp(cache, filepath.Base(dir)+"-*.tmp")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	if err := BuildTo(ctx, dir, tmp.Name()); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", err
	}
	return out, nil
}

// moduleDeps returns the directories of the packages of this repository
// that the guest in dir is built from: its own and every one it imports,
// directly or not (go list -deps for wasip1), so that a change to any of
// them, the SDK's internal packages included, builds the guest again.
func moduleDeps(ctx context.Context, root, dir string) ([]string, error) {
	cmd := exec.CommandContext(ctx, goTool(), "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return nil, fmt.Errorf("wasmtest: go list -deps in %s: %w", dir, err)
	}
	var dirs []string
	for _, d := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if d == root || strings.HasPrefix(d, root+string(filepath.Separator)) {
			dirs = append(dirs, d)
		}
	}
	return dirs, nil
}

func hashDir(h interface{ Write([]byte) (int, error) }, dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("wasmtest: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		if !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %d\n", n, len(b))
		h.Write(b)
	}
	return nil
}

// BuildTo builds the module in dir into out (no caching) and appends the
// modinfo block read from dir/modinfo.json (capabilities included).
func BuildTo(ctx context.Context, dir, out string) error {
	path := filepath.Join(dir, "modinfo.json")
	p, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("wasmtest: %w", err)
	}
	blk, err := modinfo.DecodeBlock(p)
	if err != nil {
		return fmt.Errorf("wasmtest: %s: %w", path, err)
	}
	cmd := exec.CommandContext(ctx, goTool(),
		"build", "-buildmode=c-shared", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("wasmtest: go build %s: %v\n%s", dir, err, b)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		return err
	}
	if bin, err = modinfo.AppendBlock(bin, blk); err != nil {
		return fmt.Errorf("%s: %w", out, err)
	}
	return os.WriteFile(out, bin, 0o644)
}

// AppendInfoFile rewrites the wasm file at path with info as its modinfo
// block (replacing an existing one).
func AppendInfoFile(path string, info raceless.Info) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := modinfo.Append(b, info)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, out, 0o644)
}

// MustJSON is a helper for tests printing an Info.
func MustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// goTool is the go command to build with: the one on PATH (under go test,
// the toolchain running the test). Without one, the build fails saying so.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}
