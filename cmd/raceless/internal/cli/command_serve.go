package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm"

	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
	"github.com/raceless/raceless/cmd/raceless/internal/defaults"
)

// serveFlags are serve's flags, parsed with the flag package (serve takes
// no positional arguments).
type serveFlags struct {
	fs                                                      *flag.FlagSet
	socket, modules, fuse, metricsAddr, logFormat, logLevel *string
	cacheDir                                                *string
	autoclean, shutdownTimeout                              *time.Duration
	noAutoload                                              *bool
}

func newServeFlags() *serveFlags {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &serveFlags{
		fs:              fs,
		socket:          fs.String("socket", control.DefaultSocketPath(), "control socket `PATH`"),
		modules:         fs.String("modules", "", "module directory `DIR`: .wasm files and their index (depmod DIR)"),
		fuse:            fs.String("fuse", "", "expose the namespace at `DIR` through FUSE"),
		metricsAddr:     fs.String("metrics-addr", "", "serve Prometheus metrics at http://`HOST:PORT`/metrics"),
		autoclean:       fs.Duration("autoclean", 0, "run an autoclean sweep every `INTERVAL` (0: never)"),
		noAutoload:      fs.Bool("no-autoload", false, "disable demand loading"),
		shutdownTimeout: fs.Duration("shutdown-timeout", 10*time.Second, "how long (`D`) shutdown waits for references before forcing"),
		cacheDir:        fs.String("cache-dir", defaultCacheDirText(), "on-disk compilation cache of wasm modules, in `DIR` (off or an empty value: in memory only)"),
		logFormat:       fs.String("log-format", "text", "log format, `text|json`"),
		logLevel:        fs.String("log-level", "info", "log `LEVEL`: debug, info, warn or error"),
	}
}

// defaultCacheDir is --cache-dir's default: os.UserCacheDir()/raceless,
// as Go's build cache is os.UserCacheDir()/go-build.
func defaultCacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(base, "raceless"), nil
}

// defaultCacheDirText is --cache-dir's default as the help shows it.
func defaultCacheDirText() string {
	dir, err := defaultCacheDir()
	if err != nil {
		return "none: " + err.Error()
	}
	return dir
}

// serveHelp writes serve's complete help.
func serveHelp(w io.Writer, prefix string) {
	fmt.Fprintf(w, "Usage: %s\n", prefix+commands["serve"].usage)
	fmt.Fprintln(w, "Runs the daemon: the host, its control socket and its namespace. Options:")
	newServeFlags().fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		left := "--" + f.Name
		if arg != "" {
			left += " " + arg
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0s" {
			usage += " (default " + f.DefValue + ")"
		}
		writeOption(w, left, usage)
	})
	writeOption(w, "-h, --help", "print this help and exit")
}

func runServe(e *env) error {
	for _, a := range e.args.pos { // help wins wherever it is, as for the other commands
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			serveHelp(e.stdout, e.prefix)
			return nil
		}
	}
	sf := newServeFlags()
	fs := sf.fs
	if err := fs.Parse(e.args.pos); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			serveHelp(e.stdout, e.prefix)
			return nil
		}
		return usageErrorf("%s", err)
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	socket, modules, fuse, metricsAddr, logFormat, logLevel := sf.socket, sf.modules, sf.fuse, sf.metricsAddr, sf.logFormat, sf.logLevel
	autoclean, shutdownTimeout, noAutoload := sf.autoclean, sf.shutdownTimeout, sf.noAutoload
	cacheSet := false
	fs.Visit(func(f *flag.Flag) { cacheSet = cacheSet || f.Name == "cache-dir" })
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
	loader, err := newLoader(e, log, *sf.cacheDir, cacheSet)
	if err != nil {
		return err
	}
	defer loader.Close(context.WithoutCancel(e.ctx))
	open := func(path string) (raceless.Source, error) {
		src, err := loader.Open(path)
		if err != nil {
			return nil, err // not a typed nil
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
	})
	if err != nil {
		return e.fail(err, "cannot start: %v", err)
	}
	if err := d.Run(e.ctx); err != nil {
		return e.fail(err, "%v", err)
	}
	return nil
}

// newLoader creates the daemon's wasm loader with its on-disk compilation
// cache: dir when set is true ("off" or "": none; a directory that cannot
// be used is an error), else the default, os.UserCacheDir()/raceless,
// where a directory that cannot be created or used is a warning and the
// cache stays in memory.
func newLoader(e *env, log *slog.Logger, dir string, set bool) (*wasm.Loader, error) {
	if !set {
		var err error
		if dir, err = defaultCacheDir(); err == nil {
			err = os.MkdirAll(dir, 0o700)
		}
		if err != nil {
			log.Warn("no on-disk compilation cache: the default cache directory cannot be created (see --cache-dir)", "err", err)
			dir = ""
		}
	} else if dir == "off" {
		dir = ""
	}
	loader, err := wasm.NewLoader(e.ctx, wasm.Config{CacheDir: dir, Stderr: e.stderr})
	if err != nil && dir != "" && !set {
		log.Warn("no on-disk compilation cache: the default cache directory cannot be used (see --cache-dir)", "dir", dir, "err", err)
		dir = ""
		loader, err = wasm.NewLoader(e.ctx, wasm.Config{Stderr: e.stderr})
	}
	if err != nil {
		return nil, e.fail(err, "cannot start the wasm loader: %v", err)
	}
	if dir != "" {
		log.Debug("compilation cache", "dir", dir)
	} else {
		log.Debug("compilation cache in memory only")
	}
	return loader, nil
}
