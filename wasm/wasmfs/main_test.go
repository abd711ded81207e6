package wasmfs_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/vfs/vfstest"
	"github.com/raceless/raceless/wasm"
	"go.uber.org/goleak"
)

// loader is the tests' wasm loader, made after vfstest.Main (which may
// be a helper process that exits) and closed before the leak check.
var loader *wasm.Loader

func TestMain(m *testing.M) {
	vfstest.Main()
	// An on-disk compilation cache: every check loads the module into a
	// fresh host, and compiling it again each time is most of the
	// suite's time under -race.
	cache, err := os.MkdirTemp("", "wasmfs-cache-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	loader, err = wasm.NewLoader(context.Background(), wasm.Config{CacheDir: cache})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := m.Run()
	if err := loader.Close(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "loader close:", err)
		code = 1
	}
	_ = os.RemoveAll(cache)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// load builds the module in dir (a directory of the repository) and
// loads it into h.
func load(ctx context.Context, h *raceless.Host, dir string) error {
	path, err := wasmtest.BuildCached(ctx, dir)
	if err != nil {
		return err
	}
	src, err := loader.Open(path)
	if err != nil {
		return err
	}
	_, err = h.Load(ctx, src, nil)
	return err
}

func quietHost() *raceless.Host {
	return raceless.New(raceless.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
