package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/wasm"
	"github.com/raceless/raceless/wasm/httpwasm"

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
	autoclean, shutdownTimeout, callTimeout                 *time.Duration
	noAutoload, allowOther                                  *bool
	keyring, policy                                         *string
	sigEnforce                                              *bool
	httpAddr, httpMiddleware                                *string
	httpBodyLimit                                           *int64
	config                                                  *string
	etcd, fleet, fleetHost, blobDir                         *string // fleet (command_fleet.go)
}

func newServeFlags() *serveFlags {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &serveFlags{
		fs:              fs,
		socket:          fs.String("socket", control.DefaultSocketPath(), "control socket `PATH`"),
		modules:         fs.String("modules", "", "module directory `DIR`: .wasm files and their index (depmod DIR)"),
		fuse:            fs.String("fuse", "", "expose the namespace at `DIR` through FUSE"),
		allowOther:      fs.Bool("allow-other", false, "let users other than the daemon's reach the --fuse directory (FUSE's allow_other; the permission bits then decide)"),
		metricsAddr:     fs.String("metrics-addr", "", "serve Prometheus metrics at http://`HOST:PORT`/metrics"),
		httpAddr:        fs.String("http", defaultHTTPAddr(), "serve the modules' HTTP routes, and the default route module homepage, at `HOST:PORT` (off: none; default from RACELESS_HTTP)"),
		httpBodyLimit:   fs.Int64("http-body-limit", 10<<20, "the largest request body, in `BYTES`, handed to a route module (larger: 413)"),
		httpMiddleware:  fs.String("http-middleware", "", "pass every HTTP request through the middleware `M1,M2,...` (module names, outermost first) before the routes"),
		autoclean:       fs.Duration("autoclean", 0, "run an autoclean sweep every `INTERVAL` (0: never)"),
		noAutoload:      fs.Bool("no-autoload", false, "disable demand loading"),
		shutdownTimeout: fs.Duration("shutdown-timeout", 10*time.Second, "how long (`D`) shutdown waits for references before forcing"),
		callTimeout:     fs.Duration("call-timeout", wasm.DefaultCallTimeout, "the deadline (`D`) of one call into a wasm module (a symbol, a hook, a filesystem operation): past it the call fails and the instance is aborted"),
		cacheDir:        fs.String("cache-dir", defaultCacheDirText(), "on-disk compilation cache of wasm modules, in `DIR` (off or an empty value: in memory only)"),
		keyring:         fs.String("keyring", "", "trust the public keys (*.pub) in `DIR` for module signatures"),
		sigEnforce:      fs.Bool("sig-enforce", false, "refuse modules not signed by a key of the keyring (cannot be switched off while the daemon runs)"),
		policy:          fs.String("policy", "", "the capability policy `FILE`: what each module may use of its host (grant MODULE fs-read DIR)"),
		config:          fs.String("config", "", "the desired state: a TOML file or a directory of them at `PATH`, reconciled at start, on SIGHUP and by raceless apply"),
		etcd:            fs.String("etcd", "", "follow a fleet's desired state in etcd at `ENDPOINTS` (comma-separated client URLs; with --fleet; see docs/fleet.md)"),
		fleet:           fs.String("fleet", "", "the fleet `NAME` to follow (with --etcd)"),
		fleetHost:       fs.String("host", "", "this host's `NAME` in the fleet (default: the machine's host name)"),
		blobDir:         fs.String("blob-dir", "", "keep the module files fetched from the fleet in `DIR`, by digest (default: the user cache directory's raceless/blobs)"),
		logFormat:       fs.String("log-format", "text", "log format, `text|json`"),
		logLevel:        fs.String("log-level", "info", "log `LEVEL`: debug, info, warn or error"),
	}
}

// isHTTPGuest reports whether the file at path is an http-wasm handler
// guest (one that cannot be read is left to the loader to report).
func isHTTPGuest(path string) bool {
	bin, err := os.ReadFile(path)
	return err == nil && httpwasm.IsGuest(bin)
}

// defaultHTTPAddr is --http's default: RACELESS_HTTP, else
// 127.0.0.1:8080 (loopback only).
func defaultHTTPAddr() string {
	if a := os.Getenv("RACELESS_HTTP"); a != "" {
		return a
	}
	return "127.0.0.1:8080"
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
	fleetCli, err := dialServeFleet(e, sf)
	if err != nil {
		return err
	}
	if fleetCli != nil {
		defer fleetCli.Close()
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
	trust, err := loadTrust(e, *sf.keyring, *sf.policy, *sf.sigEnforce)
	if err != nil {
		return err
	}
	if *sf.callTimeout <= 0 {
		return usageErrorf("bad --call-timeout %s (a positive duration)", *sf.callTimeout)
	}
	loader, err := newLoader(e, log, *sf.cacheDir, cacheSet, trust, *sf.callTimeout)
	if err != nil {
		return err
	}
	log.Info("module trust", "keyring", *sf.keyring, "keys", len(trust.keys.Keys()), "sig_enforce", *sf.sigEnforce, "policy", *sf.policy)
	if *sf.sigEnforce && len(trust.keys.Keys()) == 0 {
		log.Warn("signatures are enforced and no key is trusted: only built-in modules can load (see --keyring)")
	}
	defer loader.Close(context.WithoutCancel(e.ctx))
	// http-wasm handler guests (files importing "http_handler") load
	// through their own runtime (package wasm/httpwasm), with the same
	// signature rules; every other file through the module loader.
	httpRT, err := httpwasm.NewRuntime(e.ctx, httpwasm.Config{Logger: log})
	if err != nil {
		return e.fail(err, "cannot start the http-wasm runtime: %v", err)
	}
	defer httpRT.Close(context.WithoutCancel(e.ctx))
	open := func(path string) (raceless.Source, error) {
		if isHTTPGuest(path) {
			return httpRT.Open(e.ctx, path, loader.Keyring(), loader.SignaturesEnforced())
		}
		src, err := loader.Open(path)
		if err != nil {
			return nil, err // not a typed nil
		}
		return src, nil
	}
	httpAddr, boot := *sf.httpAddr, defaults.Boot()
	if httpAddr == "off" {
		httpAddr = ""
	} else {
		boot = append(boot, defaults.HTTPBoot()...)
	}
	var middleware []string
	if *sf.httpMiddleware != "" {
		middleware = strings.Split(*sf.httpMiddleware, ",")
		for _, m := range middleware {
			if !raceless.ValidName(m) {
				return usageErrorf("bad --http-middleware %q: %q is not a module name", *sf.httpMiddleware, m)
			}
		}
	}
	pools := func() []daemon.PoolStat {
		var out []daemon.PoolStat
		for _, p := range httpRT.Pools() {
			out = append(out, daemon.PoolStat{Module: p.Module, Size: p.Size, Busy: p.Busy, Errors: p.Errors})
		}
		return out
	}
	d, err := daemon.New(daemon.Config{
		HTTPAddr:        httpAddr,
		HTTPBodyLimit:   *sf.httpBodyLimit,
		HTTPMiddleware:  middleware,
		HTTPPools:       pools,
		Socket:          *socket,
		ModulesDir:      *modules,
		FuseDir:         *fuse,
		FuseAllowOther:  *sf.allowOther,
		MetricsAddr:     *metricsAddr,
		Autoclean:       *autoclean,
		NoAutoload:      *noAutoload,
		ShutdownTimeout: *shutdownTimeout,
		Logger:          log,
		Builtins:        defaults.Sources,
		Boot:            boot,
		Mounts:          defaults.Mounts(),
		Open:            open,
		Inspect:         func(path string) (daemon.ModInfo, error) { return inspect(path, trust.keys) },
		Trust:           loader,
		OnNamespace:     func(ns *vfs.Namespace) { trust.granter.SetRoot(ns.Proc) },
		Config:          *sf.config,
	})
	if err != nil {
		return e.fail(err, "cannot start: %v", err)
	}
	stopHUP := reloadOnHUP(d, log)
	stopAgent := runServeAgent(e, sf, fleetCli, d, log)
	err = d.Run(e.ctx)
	stopAgent()
	stopHUP()
	if err != nil {
		return e.fail(err, "%v", err)
	}
	return nil
}

// reloadOnHUP makes SIGHUP re-read and reconcile the daemon's --config
// (daemon.Reload; a file that does not parse is logged and changes
// nothing; without --config SIGHUP is logged and ignored) until the
// returned stop is called, which waits for a reload in progress.
func reloadOnHUP(d *daemon.Daemon, log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-hup:
				log.Info("SIGHUP: reloading the desired state")
				if _, err := d.Reload(context.Background()); err != nil {
					log.Error("SIGHUP: reload", "err", err)
				}
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-finished
	}
}

// ownerOnly refuses a cache directory that users other than its owner may
// write (mode bits 022): the daemon runs the compiled code it finds there,
// so whoever can write there could run their code in the daemon, signed
// modules or not. A directory that cannot be stat'ed is left to the
// loader, which creates a missing one with mode 0700 and reports the rest.
func ownerOnly(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil
	}
	if m := fi.Mode().Perm(); m&0o022 != 0 {
		return fmt.Errorf("%s is writable by users other than its owner (mode %#o): the daemon runs the compiled code it holds: %w", dir, m, fs.ErrPermission)
	}
	return nil
}

// newLoader creates the daemon's wasm loader with its on-disk compilation
// cache: dir when set is true ("off" or "": none; a directory that cannot
// be used is an error), else the default, os.UserCacheDir()/raceless,
// where a directory that cannot be created or used is a warning and the
// cache stays in memory.
func newLoader(e *env, log *slog.Logger, dir string, set bool, trust *trust, callTimeout time.Duration) (*wasm.Loader, error) {
	if !set {
		var err error
		if dir, err = defaultCacheDir(); err == nil {
			err = os.MkdirAll(dir, 0o700)
		}
		if err != nil {
			log.Warn("no on-disk compilation cache: the default cache directory cannot be created (see --cache-dir)", "err", err)
			dir = ""
		} else if err := ownerOnly(dir); err != nil {
			log.Warn("no on-disk compilation cache: the default cache directory is not the owner's alone (see --cache-dir)", "err", err)
			dir = ""
		}
	} else if dir == "off" {
		dir = ""
	} else if dir != "" {
		if err := ownerOnly(dir); err != nil {
			return nil, e.fail(err, "cannot start: --cache-dir %s: %v", dir, err)
		}
	}
	cfg := trust.config(wasm.Config{CacheDir: dir, Stderr: e.stderr, CallTimeout: callTimeout})
	loader, err := wasm.NewLoader(e.ctx, cfg)
	if err != nil && dir != "" && !set {
		log.Warn("no on-disk compilation cache: the default cache directory cannot be used (see --cache-dir)", "dir", dir, "err", err)
		dir, cfg.CacheDir = "", ""
		loader, err = wasm.NewLoader(e.ctx, cfg)
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
