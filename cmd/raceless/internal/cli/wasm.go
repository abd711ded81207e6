package cli

import (
	"errors"
	"github.com/raceless/raceless/cmd/raceless/internal/control"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm"
)

// readInfo reads a loadable module's modinfo block without loading it. A
// file that is not a valid module is ErrInvalid; a missing one ENOENT.
func readInfo(path string) (raceless.Info, error) {
	info, err := wasm.ReadInfo(path)
	if err != nil {
		return info, formatError(err)
	}
	return info, nil
}

// formatError classifies an error of a module file: a missing file is
// ErrNotFound, any other an invalid module format (kmod's ENOEXEC).
func formatError(err error) error {
	if isNotExist(err) || errors.Is(err, raceless.ErrNotFound) {
		return err
	}
	return &control.Error{Code: control.CodeInvalid, Reason: "format", Message: err.Error()}
}
