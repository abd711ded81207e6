package wasm_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm/modinfo"
)

// consumerImporting returns the path of a copy of the consumer module
// (which imports add in its init) whose modinfo declares imports.
func consumerImporting(t *testing.T, imports ...string) string {
	t.Helper()
	b, err := os.ReadFile(wasmtest.Build(t, wasmtest.Consumer))
	if err != nil {
		t.Fatal(err)
	}
	info, err := modinfo.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	info.Imports = imports
	if b, err = modinfo.Append(b, info); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "consumer.wasm")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUndeclaredImportRefused: a module whose modinfo declares imports may
// import only those. The consumer declares mul but imports add: the import
// fails with EINVAL (although provider exports add), a debug line names
// the symbol, and nothing is recorded: provider gets no holder.
func TestUndeclaredImportRefused(t *testing.T) {
	e := newEnv(t, wasmConfig())
	prov := e.mustLoad(wasmtest.Provider, nil)
	src, err := e.l.Open(consumerImporting(t, "mul"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.h.Load(context.Background(), src, nil)
	if !errors.Is(err, raceless.ErrInvalid) {
		t.Fatalf("load of a consumer importing an undeclared symbol: %v, want ErrInvalid", err)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "symbol not declared in modinfo imports") || !strings.Contains(logs, "symbol=add") {
		t.Fatalf("no debug line naming the undeclared import:\n%s", logs)
	}
	if _, ok := e.h.Module("consumer"); ok {
		t.Fatal("consumer registered after its init failed")
	}
	if h := prov.Holders(); len(h) != 0 {
		t.Fatalf("provider holders %v after a refused import", h)
	}
	// provider is not held: it unloads.
	if err := e.h.Unload(context.Background(), "provider", raceless.UnloadOptions{}); err != nil {
		t.Fatalf("unload provider: %v", err)
	}
}

// TestDeclaredImportAllowed: the same consumer declaring add imports it
// and works as one that declares nothing.
func TestDeclaredImportAllowed(t *testing.T) {
	e := newEnv(t, wasmConfig())
	prov := e.mustLoad(wasmtest.Provider, nil)
	src, err := e.l.Open(consumerImporting(t, "mul", "add"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.h.Load(context.Background(), src, nil); err != nil {
		t.Fatalf("load of a consumer importing a declared symbol: %v", err)
	}
	if h := prov.Holders(); len(h) != 1 || h[0] != "consumer" {
		t.Fatalf("provider holders %v", h)
	}
	if r, err := e.call("sum3", 1, 2, 3); err != nil || r[0] != 6 {
		t.Fatalf("sum3: %v %v", r, err)
	}
	if strings.Contains(e.logs.String(), "not declared") {
		t.Fatalf("a declared import was logged as undeclared:\n%s", e.logs)
	}
}
