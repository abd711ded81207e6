// Package defaults is the default module set embedded in the raceless
// daemon: the native modules every `raceless serve` can load without any
// file on disk, the ones it loads at boot, and its boot mounts.
package defaults

import (
	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
	"github.com/raceless/raceless/modules/hello"
	"github.com/raceless/raceless/modules/hello/consumer"
	"github.com/raceless/raceless/modules/homepage"
	"github.com/raceless/raceless/modules/procfs"
	"github.com/raceless/raceless/modules/ramfs"
)

// Sources returns every built-in module of host h (procfs shows h).
func Sources(h *raceless.Host) []raceless.Source {
	return []raceless.Source{
		ramfs.Source(),
		procfs.Source(h),
		// initrd is a second ramfs-backed type, demand-loaded by
		// "mount -t initrd" (the thread's initrd scenario).
		ramfs.SourceAs("initrd", "initrd"),
		hello.Source(),
		consumer.Source(),
		homepage.Source(h),
	}
}

// Boot lists the modules `raceless serve` loads at start, in order (other
// filesystem modules are demand-loaded by mounting their type: fs-TYPE).
func Boot() []string { return []string{"ramfs", "procfs", hello.Name} }

// HTTPBoot lists the modules `raceless serve` loads at start, after Boot,
// when it serves HTTP (--http): the default route module, answering /.
func HTTPBoot() []string { return []string{homepage.Name} }

// Mounts lists the mounts `raceless serve` makes at start.
func Mounts() []daemon.BootMount {
	return []daemon.BootMount{
		{Source: "none", Target: "/", Type: "ramfs"},
		{Source: "proc", Target: "/proc", Type: "proc", Mkdir: true},
	}
}
