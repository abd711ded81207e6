package desired_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/desired"
)

const digestA = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseComplete(t *testing.T) {
	src := `# a host
[[module]]
name = "hello"
params = { greeting = "hi", repeat = "2" }

[[module]]
file = "mods/provider.wasm"   # relative to this file's directory
digest = "` + digestA + `"
version = "1.0"
force = true
[module.params]
level = "3"

[[mount]]
source = "none"
target = "/data"
type = "ramfs"
options = "ro"
mkdir = true

[http]
middleware = ["auth", "log"]
`
	s, err := desired.Parse("/etc/raceless/host.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := &desired.State{
		Modules: []desired.Module{
			{Name: "hello", Params: map[string]string{"greeting": "hi", "repeat": "2"}, At: "/etc/raceless/host.toml:2"},
			{File: "/etc/raceless/mods/provider.wasm", Digest: digestA, Version: "1.0", Force: true, Params: map[string]string{"level": "3"}, At: "/etc/raceless/host.toml:6"},
		},
		Mounts: []desired.Mount{{Source: "none", Target: "/data", Type: "ramfs", Options: "ro", Mkdir: true, At: "/etc/raceless/host.toml:14"}},
		HTTP:   desired.HTTP{Middleware: []string{"auth", "log"}, At: "/etc/raceless/host.toml:22"},
	}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("got  %+v\nwant %+v", s, want)
	}
}

// An empty middleware list is "no middleware", not "left as it is".
func TestParseMiddlewareEmptyVsAbsent(t *testing.T) {
	s, err := desired.Parse("a.toml", []byte("[http]\nmiddleware = []\n"))
	if err != nil || s.HTTP.Middleware == nil || len(s.HTTP.Middleware) != 0 {
		t.Fatalf("%+v %v", s, err)
	}
	s, err = desired.Parse("a.toml", []byte("[[module]]\nname = \"x\"\n"))
	if err != nil || s.HTTP.Middleware != nil {
		t.Fatalf("%+v %v", s, err)
	}
}

// Every refusal names the file, the line and the field, and matches
// desired.ErrInvalid and raceless.ErrInvalid.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
	}{
		{"syntax", "[[module]]\nname = \"a\n", "f.toml:2: "},
		{"unknown key", "[[module]]\nname = \"a\"\n\n[[module]]\nname = \"b\"\nnmae = \"c\"\n", "f.toml:6: module[1].nmae: unknown key: invalid desired state"},
		{"unknown top-level", "[modules]\nx = 1\n", "f.toml:1: modules: unknown key: invalid desired state"},
		{"bad type", "[[module]]\nname = \"a\"\nforce = \"yes\"\n", "f.toml:3: module.force: incompatible types: TOML value has type string; destination has type boolean: invalid desired state"},
		{"param not a string", "[[module]]\nname = \"a\"\nparams = { repeat = 3 }\n", "f.toml:3: module.params.repeat: incompatible types: TOML value has type int64; destination has type string: invalid desired state"},
		{"name and file", "[[module]]\nname = \"a\"\nfile = \"/m/a.wasm\"\n", "f.toml:3: module[0].file: both name and file are set: name a module, or give its file: invalid desired state"},
		{"neither", "[[module]]\nname = \"a\"\n[[module]]\nversion = \"1\"\n", "f.toml:3: module[1]: neither name nor file is set: invalid desired state"},
		{"bad digest", "[[module]]\nfile = \"/m/a.wasm\"\n\ndigest = \"sha256:abc\"\n", `f.toml:4: module[0].digest: "sha256:abc" is not "sha256:" and 64 lowercase hex digits: invalid desired state`},
		{"bad digest algo", "[[module]]\nfile = \"/m/a.wasm\"\ndigest = \"md5:" + strings.Repeat("0", 64) + "\"\n", `f.toml:3: module[0].digest: "md5:`},
		{"empty version", "[[module]]\nname = \"a\"\nversion = \"\"\n", "f.toml:3: module[0].version: empty"},
		{"duplicate module", "[[module]]\nname = \"a\"\n[[module]]\nname = \"a\"\n", `f.toml:3: module[1].name: module "a" is also named at f.toml:1: invalid desired state`},
		{"duplicate key", "[[module]]\nname = \"a\"\nname = \"b\"\n", "f.toml:3: module.name: Key 'module.name' has already been defined."},
		{"mount without target", "[[mount]]\ntype = \"ramfs\"\n", "f.toml:1: mount[0].target: missing: invalid desired state"},
		{"mount relative", "[[mount]]\ntype = \"ramfs\"\ntarget = \"data\"\n", `f.toml:3: mount[0].target: "data" is not a clean absolute path`},
		{"mount twice", "[[mount]]\ntype = \"ramfs\"\ntarget = \"/d\"\n[[mount]]\ntype = \"ramfs\"\ntarget = \"/d\"\n", "f.toml:4: mount[1].target: mount target /d is also named at f.toml:1"},
		{"bad middleware", "[http]\nmiddleware = [\"ok\", \"no way\"]\n", `f.toml:2: http.middleware[1]: "no way" is not a module name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := desired.Parse("f.toml", []byte(tc.src))
			if err == nil {
				t.Fatalf("accepted: %+v", s)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("got  %q\nwant %q...", err, tc.want)
			}
			var de *desired.Error
			if !errors.Is(err, desired.ErrInvalid) || !errors.Is(err, raceless.ErrInvalid) || !errors.As(err, &de) || de.Line == 0 {
				t.Fatalf("%v: not a *desired.Error with a line matching ErrInvalid", err)
			}
		})
	}
}

// A directory is its *.toml files in lexical order, merged; other files
// and dotfiles are left out; a module named by two files is refused,
// naming both files.
func TestLoadDirectory(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("20-b.toml", "[[module]]\nname = \"b\"\n[[mount]]\ntarget = \"/b\"\ntype = \"ramfs\"\n")
	write("10-a.toml", "[[module]]\nname = \"a\"\n[[module]]\nfile = \"a.wasm\"\n")
	write("30-c.toml.bak", "not toml at all [[[")
	write(".30-c.toml.swp", "not toml at all [[[")
	write("README", "not toml at all [[[")
	s, err := desired.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range s.Modules {
		got = append(got, m.Name+m.File)
	}
	if want := []string{"a", filepath.Join(dir, "a.wasm"), "b"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("modules %q, want %q", got, want)
	}
	if len(s.Mounts) != 1 || s.Mounts[0].Target != "/b" || s.Mounts[0].Source != "none" {
		t.Fatalf("mounts %+v", s.Mounts)
	}

	write("40-d.toml", "# again\n\n[[module]]\nname = \"a\"\n")
	_, err = desired.Load(dir)
	want := filepath.Join(dir, "40-d.toml") + `:3: module[0].name: module "a" is also named at ` + filepath.Join(dir, "10-a.toml") + ":1: invalid desired state"
	if err == nil || err.Error() != want || !errors.Is(err, desired.ErrInvalid) {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	os.Remove(filepath.Join(dir, "40-d.toml"))
	write("05-http.toml", "[http]\nmiddleware = [\"x\"]\n")
	write("50-http.toml", "[http]\nmiddleware = []\n")
	_, err = desired.Load(dir)
	if err == nil || !strings.Contains(err.Error(), "50-http.toml:2: http.middleware: http.middleware is also named at "+filepath.Join(dir, "05-http.toml")+":2") {
		t.Fatalf("got %v", err)
	}
	os.Remove(filepath.Join(dir, "50-http.toml"))
	write("60-bad.toml", "[[module]]\nname = 'z'\nfrobnicate = true\n")
	_, err = desired.Load(dir)
	if err == nil || !strings.HasPrefix(err.Error(), filepath.Join(dir, "60-bad.toml")+":3: module[0].frobnicate: unknown key") {
		t.Fatalf("got %v", err)
	}
	if _, err := desired.Load(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
	empty := t.TempDir()
	if s, err := desired.Load(empty); err != nil || len(s.Modules)+len(s.Mounts) != 0 || s.HTTP.Middleware != nil {
		t.Fatalf("empty directory: %+v %v", s, err)
	}
}

// Keys inside multi-line strings are not taken for keys of the file.
func TestParseLinesSkipMultilineStrings(t *testing.T) {
	src := "[[module]]\nname = \"a\"\nversion = \"\"\"\nnmae = 1\n\"\"\"\n[[module]]\nname = \"b\"\nnmae = 2\n"
	_, err := desired.Parse("f.toml", []byte(src))
	if err == nil || !strings.HasPrefix(err.Error(), "f.toml:8: module[1].nmae: unknown key") {
		t.Fatalf("got %v", err)
	}
}

// docs/fleet.md's complete example parses, as it is.
func TestFleetDocExample(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "docs", "fleet.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "## Desired state file")
	_, rest, ok2 := strings.Cut(rest, "```toml\n")
	block, _, ok3 := strings.Cut(rest, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("docs/fleet.md has no ```toml example under \"## Desired state file\"")
	}
	s, err := desired.Parse("/etc/raceless/host.toml", []byte(block))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Modules) != 3 || len(s.Mounts) != 1 || len(s.HTTP.Middleware) != 2 || !s.Modules[2].Force || s.Modules[1].Params["greeting"] != "salut" {
		t.Fatalf("%+v", s)
	}
}
