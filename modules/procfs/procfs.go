// Package procfs is the native module that provides the "proc" filesystem
// type (package vfs/procfs), a view of the host it is given. It is found by
// demand loading under the alias "fs-proc".
package procfs

import (
	"github.com/raceless/raceless"
	"github.com/raceless/raceless/vfs/procfs"
)

// Source returns the module "procfs" showing host h (the host that will load
// it: a module cannot reach its host otherwise).
func Source(h *raceless.Host) raceless.Source {
	info := raceless.Info{
		Name:        "procfs",
		Version:     "1.0",
		License:     "MIT",
		Description: "procfs-like view of the host: modules, mounts",
		Aliases:     []string{"fs-proc"},
	}
	return raceless.Native(info, func() raceless.Module { return &mod{h: h} })
}

type mod struct{ h *raceless.Host }

func (m *mod) Init(k *raceless.Kernel) error {
	return k.Register(raceless.KindFilesystem, "proc", procfs.Type(m.h))
}

func (m *mod) Exit() (int, error) { return 0, nil }
