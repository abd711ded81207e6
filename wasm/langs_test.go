package wasm_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm"
)

// TestModulesInCAndWAT builds the C and the WAT module of
// docs/module-authors.md ("A module in C or in WAT") from the blocks as
// written there, with clang and wabt, and loads each: its modinfo is read,
// its init exports add, and add(2, 40) is 42. So the recipe an author in C
// or WAT follows is the one that is tested.
//
// The tools come from Debian (clang lld wabt llvm): without them the test
// skips, saying which is missing, unless RACELESS_REQUIRE_LANGS is set (as
// .ci/run sets it, having installed them), when it fails.
func TestModulesInCAndWAT(t *testing.T) {
	for _, tool := range []string{"clang", "wasm-ld", "wat2wasm", "llvm-objcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("RACELESS_REQUIRE_LANGS") != "" {
				t.Fatalf("%s not found, and RACELESS_REQUIRE_LANGS is set", tool)
			}
			t.Skipf("%s not found (Debian: apt-get install clang lld wabt llvm)", tool)
		}
	}
	doc, err := os.ReadFile("../docs/module-authors.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(doc)
	start := strings.Index(section, "## A module in C or in WAT\n")
	if start < 0 {
		t.Fatal(`docs/module-authors.md has no "A module in C or in WAT" section`)
	}
	section = section[start:]
	section = section[:strings.Index(section, "\n## The ABI\n")]
	blocks := regexp.MustCompile("(?s)```(c|wat|sh)\n(.*?)```").FindAllStringSubmatch(section, -1)
	if len(blocks) != 4 {
		t.Fatalf("want the c, sh, wat, sh blocks; found %d", len(blocks))
	}
	dir := t.TempDir()
	for _, b := range blocks {
		switch lang, body := b[1], b[2]; lang {
		case "c":
			write(t, filepath.Join(dir, "add.c"), body)
		case "wat":
			write(t, filepath.Join(dir, "add.wat"), body)
		case "sh":
			cmd := exec.Command("bash", "-euo", "pipefail", "-c", body)
			cmd.Dir = dir
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", body, err, out)
			}
		}
	}
	e := newEnv(t, wasm.Config{})
	for _, m := range []struct{ file, name string }{{"cadd.wasm", "cadd"}, {"watadd.wasm", "watadd"}} {
		src, err := e.l.Open(filepath.Join(dir, m.file))
		if err != nil {
			t.Fatalf("%s: %v", m.file, err)
		}
		if info := src.Info(); info.Name != m.name || info.Version != "1.0" {
			t.Fatalf("%s: modinfo %+v", m.file, info)
		}
		if _, err := e.h.Load(context.Background(), src, nil); err != nil {
			t.Fatalf("load %s: %v", m.file, err)
		}
		if r, err := e.call("add", 2, 40); err != nil || len(r) != 1 || r[0] != 42 {
			t.Fatalf("%s: add(2, 40) = %v, %v", m.name, r, err)
		}
		if err := e.h.Unload(context.Background(), m.name, raceless.UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
