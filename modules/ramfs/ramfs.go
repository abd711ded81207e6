// Package ramfs is the native module that provides the "ramfs" filesystem
// type (package vfs/ramfs). Load it with host.Load(ctx, ramfs.Source(), nil);
// it is also found by demand loading under the alias "fs-ramfs".
package ramfs

import (
	"github.com/raceless/raceless"
	"github.com/raceless/raceless/vfs/ramfs"
)

// Source returns the module's source: a native module named "ramfs".
func Source() raceless.Source { return SourceAs("ramfs", "ramfs") }

// SourceAs returns a ramfs module named module that registers the ramfs
// implementation under the filesystem type name fstype (for example an
// "initrd" type), with the alias "fs-<fstype>".
func SourceAs(module, fstype string) raceless.Source {
	info := raceless.Info{
		Name:        module,
		Version:     "1.0",
		License:     "MIT",
		Description: "in-memory filesystem (" + fstype + ")",
		Aliases:     []string{"fs-" + fstype},
	}
	return raceless.Native(info, func() raceless.Module { return &mod{fstype: fstype} })
}

type mod struct{ fstype string }

func (m *mod) Init(k *raceless.Kernel) error {
	return k.Register(raceless.KindFilesystem, m.fstype, ramfs.Type())
}

// Exit never refuses: while a ramfs superblock exists the module holds a
// reference, so the host does not get here.
func (m *mod) Exit() (int, error) { return 0, nil }
