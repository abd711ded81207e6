package cli

import (
	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm"
)

// readInfo reads a loadable module's modinfo block without loading it. Its
// errors are the wasm package's (control.Classes classifies them: a file
// that is not a valid module is "Invalid module format", a missing one
// ENOENT).
func readInfo(path string) (raceless.Info, error) { return wasm.ReadInfo(path) }
