package modindex

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm/modinfo"
)

// writeModules writes each Info as a module file of the directory: the
// smallest wasm binary with the Info as its modinfo block, read back as
// depmod reads it (the modinfo section).
func writeModules(t *testing.T, infos ...raceless.Info) string {
	t.Helper()
	dir := t.TempDir()
	for _, info := range infos {
		b, err := modinfo.Append([]byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}, info)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, info.Name+Ext), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func readModinfo(p string) (raceless.Info, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return raceless.Info{}, err
	}
	return modinfo.Read(b)
}

func warnText(w []Warning) string { return strings.Join(asStrings(w), "\n") }

// A module that declares imports depends on the modules whose
// "symbol:NAME" aliases provide them, as if it listed them in depends:
// in modules.dep, transitively, and in the resolver's load order. An
// import nobody provides is a warning, as kmod's "needs unknown symbol".
func TestImportsDepend(t *testing.T) {
	dir := writeModules(t,
		raceless.Info{Name: "provider", Aliases: []string{"symbol:add", "symbol:mul"}},
		raceless.Info{Name: "consumer", Imports: []string{"add", "nobody"}, Aliases: []string{"symbol:sum3"}},
		raceless.Info{Name: "top", Imports: []string{"sum3", "mul"}},
		// Importing a symbol of its own is no dependency (and no warning).
		raceless.Info{Name: "self", Imports: []string{"own"}, Aliases: []string{"symbol:own"}},
	)
	x, warns, err := Build(dir, readModinfo, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "consumer.wasm needs unknown symbol nobody"; warnText(warns) != want {
		t.Fatalf("warnings:\n%s\nwant:\n%s", warnText(warns), want)
	}
	dep, _ := x.Encode()
	want := "consumer.wasm: provider.wasm\nprovider.wasm:\nself.wasm:\ntop.wasm: consumer.wasm provider.wasm\n"
	if string(dep) != want {
		t.Fatalf("modules.dep:\n%s\nwant:\n%s", dep, want)
	}
	if err := x.Write(); err != nil {
		t.Fatal(err)
	}
	r := NewResolver(dir, nil, nil)
	tg, err := r.Lookup("top")
	if err != nil {
		t.Fatal(err)
	}
	// Loaded back to front: provider, then consumer, then top.
	if got, want := strings.Join(tg.Deps, " "), filepath.Join(dir, "consumer.wasm")+" "+filepath.Join(dir, "provider.wasm"); got != want {
		t.Fatalf("top's deps %q, want %q", got, want)
	}
}

// An import and a depends naming the same module give one dependency; an
// import is resolved by the first matching alias, in modules.alias order.
func TestImportsAndDependsMerge(t *testing.T) {
	dir := writeModules(t,
		raceless.Info{Name: "a", Aliases: []string{"symbol:f*"}},
		raceless.Info{Name: "b", Aliases: []string{"symbol:foo"}},
		raceless.Info{Name: "m", Depends: []string{"a"}, Imports: []string{"foo", "bar"}, Aliases: []string{"symbol:bar"}},
	)
	x, warns, err := Build(dir, readModinfo, nil)
	if err != nil || len(warns) != 0 {
		t.Fatalf("Build: %v, warnings %q", err, warns)
	}
	if dep, _ := x.Encode(); string(dep) != "a.wasm:\nb.wasm:\nm.wasm: a.wasm\n" {
		t.Fatalf("modules.dep:\n%s", dep)
	}
}

// A symbol only a built-in module provides: Build, which knows built-in
// modules by name only, warns; BuildWithBuiltins knows their aliases and
// neither warns nor lists the built-in module (loaded by name).
func TestImportsBuiltin(t *testing.T) {
	dir := writeModules(t, raceless.Info{Name: "c", Imports: []string{"hello_greet"}})
	_, warns, err := Build(dir, readModinfo, func(n string) bool { return n == "hello" })
	if err != nil || warnText(warns) != "c.wasm needs unknown symbol hello_greet" {
		t.Fatalf("Build: %v, warnings %q", err, warns)
	}
	x, warns, err := BuildWithBuiltins(dir, readModinfo, []raceless.Info{{Name: "hello", Aliases: []string{"symbol:hello_greet"}}})
	if err != nil || len(warns) != 0 {
		t.Fatalf("BuildWithBuiltins: %v, warnings %q", err, warns)
	}
	if dep, _ := x.Encode(); string(dep) != "c.wasm:\n" {
		t.Fatalf("modules.dep:\n%s", dep)
	}
	// BuildWithBuiltins knows the names too: a file named as a built-in
	// module is not indexed, and depending on one is no warning.
	dir = writeModules(t, raceless.Info{Name: "hello"}, raceless.Info{Name: "d", Depends: []string{"hello"}})
	_, warns, err = BuildWithBuiltins(dir, readModinfo, []raceless.Info{{Name: "hello"}})
	if err != nil || warnText(warns) != "hello.wasm: module hello is built in; file not indexed (the built-in module wins)" {
		t.Fatalf("BuildWithBuiltins: %v, warnings %q", err, warns)
	}
}

// Imports that go round are a dependency cycle, as depends that do.
func TestImportsCycle(t *testing.T) {
	dir := writeModules(t,
		raceless.Info{Name: "x", Imports: []string{"y1"}, Aliases: []string{"symbol:x1"}},
		raceless.Info{Name: "y", Imports: []string{"x1"}, Aliases: []string{"symbol:y1"}},
	)
	if _, _, err := Build(dir, readModinfo, nil); !errors.Is(err, raceless.ErrCycle) {
		t.Fatalf("cycle through imports: %v", err)
	}
}

// A module that lists itself in depends is still a cycle (imports of its
// own symbols are not).
func TestSelfDependCycle(t *testing.T) {
	dir := writeModules(t, raceless.Info{Name: "x", Depends: []string{"x"}})
	if _, _, err := Build(dir, readModinfo, nil); !errors.Is(err, raceless.ErrCycle) {
		t.Fatalf("self dependency: %v", err)
	}
}
