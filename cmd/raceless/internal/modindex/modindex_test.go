package modindex

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/raceless/raceless"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// infos stands for the modinfo blocks of the files (depmod reads them with
// wasm.ReadInfo; here the test gives them).
var infos = map[string]raceless.Info{
	"a": {Name: "a", Aliases: []string{"fs-afs", "symbol:a_*"}},
	"b": {Name: "b", Depends: []string{"a"}},
	"c": {Name: "c", Depends: []string{"b", "builtin1"}, Aliases: []string{"cee"}},
	"d": {Name: "d", Depends: []string{"nope"}},
}

func build(t *testing.T) (string, *Index, []Warning) {
	t.Helper()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	for _, f := range []string{"a.wasm", "sub/b.wasm", "c.wasm", "d.wasm", "notes.txt"} {
		os.WriteFile(filepath.Join(dir, f), nil, 0o644)
	}
	x, w, err := Build(dir, func(p string) (raceless.Info, error) { return infos[NameOf(p)], nil }, func(n string) bool { return n == "builtin1" })
	if err != nil {
		t.Fatal(err)
	}
	return dir, x, w
}

func TestBuildEncodeRead(t *testing.T) {
	dir, x, warns := build(t)
	if len(warns) != 1 || string(warns[0]) != "d.wasm needs unknown module nope" {
		t.Fatalf("warnings: %q", warns)
	}
	dep, alias := x.Encode()
	if string(dep) != "a.wasm:\nc.wasm: sub/b.wasm a.wasm\nd.wasm:\nsub/b.wasm: a.wasm\n" {
		t.Fatalf("modules.dep:\n%s", dep)
	}
	if string(alias) != AliasHeader+"\nalias fs-afs a\nalias symbol:a_* a\nalias cee c\n" {
		t.Fatalf("modules.alias:\n%s", alias)
	}
	if err := x.Write(); err != nil {
		t.Fatal(err)
	}
	y, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	dep2, alias2 := y.Encode()
	if string(dep2) != string(dep) || string(alias2) != string(alias) {
		t.Fatalf("round trip:\n%s\n%s", dep2, alias2)
	}
}

func TestCycle(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x.wasm"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "y.wasm"), nil, 0o644)
	_, _, err := Build(dir, func(p string) (raceless.Info, error) {
		if NameOf(p) == "x" {
			return raceless.Info{Name: "x", Depends: []string{"y"}}, nil
		}
		return raceless.Info{Name: "y", Depends: []string{"x"}}, nil
	}, nil)
	if !errors.Is(err, raceless.ErrCycle) {
		t.Fatalf("cycle: %v", err)
	}
}

func TestResolver(t *testing.T) {
	dir, x, _ := build(t)
	if err := x.Write(); err != nil {
		t.Fatal(err)
	}
	// An alias pointing to an alias (cee) is refused.
	os.WriteFile(filepath.Join(dir, AliasFile), []byte(AliasHeader+"\nalias fs-afs a\nalias see cee\n"), 0o644)
	builtin := raceless.Native(raceless.Info{Name: "builtin1", Aliases: []string{"bi-*"}}, nil)
	opened := ""
	r := NewResolver(dir, []raceless.Source{builtin}, func(p string) (raceless.Source, error) {
		opened = p
		return builtin, nil
	})
	for _, tc := range []struct{ in, name, err string }{
		{"a", "a", ""},
		{"fs-afs", "a", ""},
		{"builtin1", "builtin1", ""},
		{"bi-x", "builtin1", ""},
		{"see", "", "alias see points to cee, which is not a module (aliases cannot point to aliases): not found"},
		{"zzz", "", "module zzz not found in directory " + dir + ": not found"},
		{"", "", "empty module name: not found"},
	} {
		tg, err := r.Lookup(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err || !errors.Is(err, raceless.ErrNotFound) {
				t.Errorf("Lookup(%q) = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || tg.Name != tc.name {
			t.Errorf("Lookup(%q) = %+v, %v", tc.in, tg, err)
		}
	}
	if _, err := r.Resolve(context.Background(), "c"); err != nil || opened != filepath.Join(dir, "c.wasm") {
		t.Fatalf("Resolve c: %v, opened %q", err, opened)
	}
	tg, _ := r.Lookup("c")
	if strings.Join(tg.Deps, " ") != filepath.Join(dir, "sub/b.wasm")+" "+filepath.Join(dir, "a.wasm") {
		t.Fatalf("deps: %q", tg.Deps)
	}
	// A broken index: a clear error naming file and line, never success.
	os.WriteFile(filepath.Join(dir, DepFile), []byte("a.wasm:\nbroken\n"), 0o644)
	_, err := r.Lookup("zzz")
	if !errors.Is(err, raceless.ErrInvalid) || !strings.Contains(err.Error(), DepFile+":2: malformed module index") {
		t.Fatalf("broken index: %v", err)
	}
	// Built-in modules still resolve.
	if _, err := r.Lookup("builtin1"); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, DepFile))
	if _, err := r.Lookup("zzz"); !errors.Is(err, ErrNoIndex) {
		t.Fatalf("missing index: %v", err)
	}
}
