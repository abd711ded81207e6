package cli

import (
	"context"

	"flag"
	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
	"github.com/raceless/raceless/cmd/raceless/internal/defaults"
)

func runServe(e *env) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	socket := fs.String("socket", control.DefaultSocketPath(), "control socket path")
	modules := fs.String("modules", "", "module directory (loadable modules and their index)")
	fuse := fs.String("fuse", "", "expose the namespace at this directory through FUSE")
	metricsAddr := fs.String("metrics-addr", "", "serve Prometheus metrics at ADDR (host:port)")
	autoclean := fs.Duration("autoclean", 0, "autoclean sweep period (0: off)")
	noAutoload := fs.Bool("no-autoload", false, "disable demand loading")
	shutdownTimeout := fs.Duration("shutdown-timeout", 10*time.Second, "how long shutdown waits for references before forcing")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	cacheDir := fs.String("cache-dir", "", "on-disk compilation cache of wasm modules (default: in memory)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(e.args.pos); err != nil {
		return usageErrorf("%s", err)
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageErrorf("bad --log-level %q", *logLevel)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch strings.ToLower(*logFormat) {
	case "text":
		h = slog.NewTextHandler(e.stderr, hopts)
	case "json":
		h = slog.NewJSONHandler(e.stderr, hopts)
	default:
		return usageErrorf("bad --log-format %q (text or json)", *logFormat)
	}
	log := slog.New(h)
	loader, err := wasm.NewLoader(e.ctx, wasm.Config{CacheDir: *cacheDir, Stderr: e.stderr})
	if err != nil {
		return e.fail(err, "cannot start the wasm loader: %v", err)
	}
	defer loader.Close(context.WithoutCancel(e.ctx))
	open := func(path string) (raceless.Source, error) {
		src, err := loader.Open(path)
		if err != nil {
			return nil, formatError(err)
		}
		return src, nil
	}
	d, err := daemon.New(daemon.Config{
		Socket:          *socket,
		ModulesDir:      *modules,
		FuseDir:         *fuse,
		MetricsAddr:     *metricsAddr,
		Autoclean:       *autoclean,
		NoAutoload:      *noAutoload,
		ShutdownTimeout: *shutdownTimeout,
		Logger:          log,
		Builtins:        defaults.Sources,
		Boot:            defaults.Boot(),
		Mounts:          defaults.Mounts(),
		Open:            open,
		ReadInfo:        readInfo,
		Signature: func(owner *raceless.Instance, symbol string) (params, results []string, ok bool) {
			p, r, ok := loader.Signature(owner, symbol)
			return typeNames(p), typeNames(r), ok
		},
	})
	if err != nil {
		return e.fail(err, "cannot start: %v", err)
	}
	if err := d.Run(e.ctx); err != nil {
		return e.fail(err, "%v", err)
	}
	return nil
}
