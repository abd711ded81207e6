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

	"github.com/raceless/raceless/cmd/raceless/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := cli.Main(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr, isTerminal(int(os.Stderr.Fd())))
	stop()
	os.Exit(code)
}
