package modindex

import (
	"context"
	"errors"
	"log/slog"
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

// A file with a built-in module's name is not indexed (kmod's
// modules.builtin: the built-in module wins), with a warning naming it; a
// file readInfo refuses is skipped with a one-line warning naming it and
// why, and the rest is indexed.
func TestBuildSkipsBuiltinAndMalformed(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "extra"), 0o755)
	for _, f := range []string{"a.wasm", "extra/hello.wasm", "bad.wasm", "user.wasm"} {
		os.WriteFile(filepath.Join(dir, f), nil, 0o644)
	}
	read := func(p string) (raceless.Info, error) {
		switch NameOf(p) {
		case "bad":
			return raceless.Info{}, errors.New("wasm open " + p + ":\nnot a WebAssembly module")
		case "hello":
			t.Errorf("readInfo called for the built-in's file %s", p)
			return raceless.Info{Name: "hello", Aliases: []string{"greeting-*"}}, nil
		case "user":
			return raceless.Info{Name: "user", Depends: []string{"hello", "a", "bad"}}, nil
		}
		return raceless.Info{Name: NameOf(p)}, nil
	}
	x, warns, err := Build(dir, read, func(n string) bool { return n == "hello" })
	if err != nil {
		t.Fatal(err)
	}
	want := []Warning{
		Warning("bad.wasm: not indexed: wasm open " + filepath.Join(dir, "bad.wasm") + ": not a WebAssembly module"),
		"extra/hello.wasm: module hello is built in; file not indexed (the built-in module wins)",
		"user.wasm needs unknown module bad",
	}
	if strings.Join(asStrings(warns), "\n") != strings.Join(asStrings(want), "\n") {
		t.Fatalf("warnings:\n%s\nwant:\n%s", strings.Join(asStrings(warns), "\n"), strings.Join(asStrings(want), "\n"))
	}
	dep, alias := x.Encode()
	if string(dep) != "a.wasm:\nuser.wasm: a.wasm\n" || string(alias) != AliasHeader+"\n" {
		t.Fatalf("index:\n%s%s", dep, alias)
	}
}

func asStrings(w []Warning) []string {
	out := make([]string, len(w))
	for i, s := range w {
		out[i] = string(s)
	}
	return out
}

// An index that lists a file with a built-in module's name (written before
// the rule, or by hand): the built-in module wins by name and by alias, the
// file is left out of its dependents' dependencies, and the resolver warns
// once per index read, naming the file.
func TestResolverBuiltinWins(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, DepFile), []byte("extra/hello.wasm:\nuser.wasm: extra/hello.wasm\n"), 0o644)
	os.WriteFile(filepath.Join(dir, AliasFile), []byte(AliasHeader+"\nalias greeting-* hello\n"), 0o644)
	hello := raceless.Native(raceless.Info{Name: "hello"}, nil)
	var opened []string
	r := NewResolver(dir, []raceless.Source{hello}, func(p string) (raceless.Source, error) {
		opened = append(opened, p)
		return hello, nil
	})
	var logs strings.Builder
	r.SetLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}})))
	for _, in := range []string{"hello", "greeting-fr"} {
		tg, err := r.Lookup(in)
		if err != nil || !tg.Builtin || tg.Name != "hello" || tg.Path != "" {
			t.Fatalf("Lookup(%q) = %+v, %v; want the built-in hello", in, tg, err)
		}
		src, err := r.Resolve(context.Background(), in)
		if err != nil || src.Info().Name != "hello" || len(opened) != 0 {
			t.Fatalf("Resolve(%q) = %v, %v", in, src, err)
		}
	}
	tg, err := r.Lookup("user")
	if err != nil || tg.Builtin || tg.Path != filepath.Join(dir, "user.wasm") || len(tg.Deps) != 0 {
		t.Fatalf("Lookup(user) = %+v, %v; want user.wasm without the shadowed file in its deps", tg, err)
	}
	if len(opened) != 0 {
		t.Fatalf("opened %q", opened)
	}
	want := `level=WARN msg="module index entry shadowed by a built-in module of the same name; the built-in module wins (run depmod)" module=hello file=` + filepath.Join(dir, "extra", "hello.wasm") + "\n"
	if logs.String() != want {
		t.Fatalf("log:\n%s\nwant:\n%s", logs.String(), want)
	}
	if got := r.Shadowed(); len(got) != 1 || got[0] != filepath.Join(dir, "extra", "hello.wasm") {
		t.Fatalf("Shadowed() = %q", got)
	}
}
