package wasm_test

import (
	"context"
	"errors"
	"github.com/raceless/raceless/internal/wasmtest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm"
	"github.com/raceless/raceless/wasm/modinfo"
)

func tinyInfo(name string) raceless.Info {
	return raceless.Info{Name: name, Version: "1", License: "MIT"}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, wasm.Config{MaxFileSize: 1 << 20})
	good := tinyWithInfo(wasmtest.TinyOptions{}, "tiny")
	custom := func(payload string) []byte {
		body := append(wasmtest.Name(modinfo.SectionName), payload...)
		return append(tiny(wasmtest.TinyOptions{}), wasmtest.Section(0, body)...)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want error
		text string
	}{
		{"empty", nil, wasm.ErrEmpty, "empty"},
		{"text", []byte("hello world\n"), wasm.ErrNotWasm, "not a WebAssembly"},
		{"truncated", good[:len(good)-10], wasm.ErrTruncated, "truncated"},
		{"oversized", append(good, make([]byte, 1<<20)...), wasm.ErrTooLarge, "too large"},
		{"no modinfo", tiny(wasmtest.TinyOptions{}), wasm.ErrNoModinfo, "modinfo"},
		{"malformed modinfo", custom(`{"name":`), wasm.ErrBadModinfo, "malformed"},
		{"oversized modinfo", custom(`{"name":"x","description":"` + strings.Repeat("x", modinfo.MaxSize) + `"}`), wasm.ErrBadModinfo, "too large"},
		{"no init", tinyWithInfo(wasmtest.TinyOptions{NoInit: true}, "x"), wasm.ErrMissingExport, "raceless_init"},
		{"no exit", tinyWithInfo(wasmtest.TinyOptions{NoExit: true}, "x"), wasm.ErrMissingExport, "raceless_exit"},
		{"no memory", tinyWithInfo(wasmtest.TinyOptions{NoMemory: true}, "x"), wasm.ErrMissingExport, "memory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.wasm")
			if err := os.WriteFile(path, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := e.l.Open(path)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("Open: got %v, want %v naming %s and %q", err, tc.want, path, tc.text)
			}
			var fe *wasm.FileError
			if !errors.As(err, &fe) || fe.Path != path {
				t.Fatalf("not a *FileError for %s: %#v", path, err)
			}
			if tc.want != wasm.ErrTooLarge && tc.want != wasm.ErrMissingExport {
				if _, err := wasm.ReadInfo(path); !errors.Is(err, tc.want) {
					t.Fatalf("ReadInfo: %v", err)
				}
			}
		})
	}
	if _, err := e.l.Open(filepath.Join(t.TempDir(), "missing.wasm")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestUnknownImport(t *testing.T) {
	e := newEnv(t, wasm.Config{})
	for _, imp := range [][2]string{{"env", "foo"}, {"raceless", "nope"}, {"raceless", "log"} /* wrong signature */} {
		src, err := e.l.OpenBytes("/virtual/imp.wasm", tinyWithInfo(wasmtest.TinyOptions{ImportModule: imp[0], ImportName: imp[1]}, "imp"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.h.Load(context.Background(), src, nil)
		if !errors.Is(err, wasm.ErrUnknownImport) || !strings.Contains(err.Error(), imp[0]+"."+imp[1]) || !strings.Contains(err.Error(), "/virtual/imp.wasm") {
			t.Fatalf("import %v: %v", imp, err)
		}
	}
}

func TestTinyLifecycle(t *testing.T) {
	e := newEnv(t, wasm.Config{})
	src, err := e.l.OpenBytes("/virtual/tiny.wasm", tinyWithInfo(wasmtest.TinyOptions{ExitCode: 3}, "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(src.Key(), "file:/virtual/tiny.wasm@") || src.Info().Name != "tiny" {
		t.Fatalf("key %q info %+v", src.Key(), src.Info())
	}
	if _, err := e.h.Load(context.Background(), src, nil); err != nil {
		t.Fatal(err)
	}
	// Its exit returns 3: busy, refused.
	var be *raceless.BusyError
	if err := e.h.Unload(context.Background(), "tiny", raceless.UnloadOptions{}); !errors.As(err, &be) || be.Refs != 3 {
		t.Fatalf("unload: %v", err)
	}
	// Forcing works nonetheless, and frees it.
	if err := e.h.Unload(context.Background(), "tiny", raceless.UnloadOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
}
