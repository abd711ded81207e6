package wasm_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteSeeds regenerates testdata/fuzz/FuzzOpen when RACELESS_WRITE_SEEDS=1.
func TestWriteSeeds(t *testing.T) {
	if os.Getenv("RACELESS_WRITE_SEEDS") != "1" {
		t.Skip("set RACELESS_WRITE_SEEDS=1 to regenerate the seed corpus")
	}
	good := tinyWithInfo(tinyOpts{}, "tiny")
	seeds := map[string][]byte{
		"good":       good,
		"truncated":  good[:len(good)-7],
		"nomodinfo":  tiny(tinyOpts{}),
		"noexports":  tinyWithInfo(tinyOpts{noInit: true, noExit: true, noMemory: true}, "x"),
		"withimport": tinyWithInfo(tinyOpts{importMod: "env", importName: "f"}, "imp"),
		"badleb":     {0, 'a', 's', 'm', 1, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff, 0x7f},
		"notwasm":    []byte("\x7fELF\x02\x01\x01"),
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzOpen")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seeds {
		if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
