// Command raceless is the raceless daemon (raceless serve) and its
// kmod-style command line. Linked or copied under the name insmod, rmmod,
// lsmod, modprobe, modinfo, depmod, mount or umount it runs that command.
// See docs/cli.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/raceless/raceless/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	_, terr := unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS)
	code := cli.Main(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr, terr == nil)
	stop()
	os.Exit(code)
}
