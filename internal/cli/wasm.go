package cli

import (
	"fmt"
	"os"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/modindex"
	"github.com/raceless/raceless/wasm/modinfo"
)

// readInfo reads a loadable module's modinfo block without loading it.
func readInfo(path string) (raceless.Info, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return raceless.Info{}, err
	}
	info, err := modinfo.Read(b)
	if err != nil {
		return raceless.Info{}, fmt.Errorf("%s: %w: %w", path, raceless.ErrInvalid, err)
	}
	return info, nil
}

// wasmOpen returns the loader of loadable modules, nil while package wasm
// has none.
func wasmOpen() modindex.OpenFunc { return nil }
