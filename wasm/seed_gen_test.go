package wasm_test

import (
	"fmt"
	"github.com/raceless/raceless/internal/wasmtest"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteSeeds regenerates testdata/fuzz/FuzzOpen when RACELESS_WRITE_SEEDS=1.
func TestWriteSeeds(t *testing.T) {
	if os.Getenv("RACELESS_WRITE_SEEDS") != "1" {
		t.Skip("set RACELESS_WRITE_SEEDS=1 to regenerate the seed corpus")
	}
	good := tinyWithInfo(wasmtest.TinyOptions{}, "tiny")
	seeds := map[string][]byte{
		"good":       good,
		"truncated":  good[:len(good)-7],
		"nomodinfo":  tiny(wasmtest.TinyOptions{}),
		"noexports":  tinyWithInfo(wasmtest.TinyOptions{NoInit: true, NoExit: true, NoMemory: true}, "x"),
		"withimport": tinyWithInfo(wasmtest.TinyOptions{ImportModule: "env", ImportName: "f"}, "imp"),
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
