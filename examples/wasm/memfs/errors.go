//go:build wasip1

package main

import (
	"errors"
	"io"

	"github.com/raceless/raceless/vfs"
)

func asErrno(err error, e *vfs.Errno) bool { return errors.As(err, e) }

func isEOF(err error) bool { return errors.Is(err, io.EOF) }
