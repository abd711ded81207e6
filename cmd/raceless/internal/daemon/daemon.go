// Package daemon is `raceless serve`: a Host with the embedded default
// modules, a module directory's index for demand loading, the control socket
// (package control), optional FUSE exposure and Prometheus metrics, an
// autoclean sweeper, and a graceful shutdown.
//
// Start-up order (each step undone in reverse by Close): host → boot
// modules → mounts → metrics listener → HTTP listener (module routes,
// package web) → control socket. The control socket
// appears last, so a client that finds it finds a daemon ready to serve.
// Before all of them, with a FUSE directory, a stale FUSE mount left there
// by a daemon that died is detached (see clearStaleFuse).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/desired"
	"github.com/raceless/raceless/cmd/raceless/internal/modindex"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/web"
)

// Config configures a daemon.
type Config struct {
	Socket      string        // control socket path
	ModulesDir  string        // module directory with its index; "" for none
	FuseDir     string        // expose the namespace there through FUSE; "" for none
	MetricsAddr string        // serve Prometheus metrics there; "" for none
	Autoclean   time.Duration // autoclean sweep period; 0 disables the sweeper
	NoAutoload  bool          // disable demand loading (Host.Request fails ErrNotFound)
	// ShutdownTimeout bounds how long shutdown waits for references before
	// forcing (default 10s).
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
	// Builtins returns the built-in (native) modules of host h.
	Builtins func(h *raceless.Host) []raceless.Source
	Boot     []string          // built-in modules loaded at start
	Open     modindex.OpenFunc // opens loadable module files; nil: not supported
	// Inspect reads a loadable module file's modinfo and checks its
	// signature against the daemon's keyring (modinfo); nil: not supported.
	Inspect func(path string) (ModInfo, error)
	// Trust is the loader's signature enforcement (the sig_enforce op);
	// nil when loadable modules are not supported.
	Trust Trust
	// OnNamespace, if set, is called with the namespace once its boot
	// mounts are made, before the control socket listens: the capability
	// policy resolves granted directories in it.
	OnNamespace func(*vfs.Namespace)
	Mounts      []BootMount // mounted at start, in order
	// HTTPAddr is where the routes modules register (raceless.KindRoute)
	// are served over HTTP (package web); "" for nowhere.
	HTTPAddr string
	// HTTPBodyLimit is the largest request body handed to a route module
	// (0: web.DefaultBodyLimit; negative: no limit).
	HTTPBodyLimit int64
	// HTTPMiddleware names the middleware every HTTP request goes
	// through, outermost first (web.Config.Middleware).
	HTTPMiddleware []string
	// HTTPPools, if set, reports the http-wasm route modules' instance
	// pools for the metrics.
	HTTPPools func() []PoolStat

	// FuseAllowOther mounts FuseDir with allow_other: other users reach
	// it, the kernel checking the permission bits (default_permissions).
	// Without it the kernel refuses every user but the daemon's.
	FuseAllowOther bool

	// Config is the desired state, a TOML file or a directory of them
	// (package desired; serve --config): read before anything starts (a
	// file that does not parse stops the start) and reconciled after the
	// boot modules, the boot mounts and the HTTP router, before the
	// control socket listens; read and reconciled again by Reload
	// (SIGHUP) and the "apply" op. "" for none.
	Config string
	// ReconcileWait bounds how long a reconciliation waits for a
	// module's references to drain (an unload, or the old instance of a
	// replace) before leaving it busy and retrying (default 10s).
	ReconcileWait time.Duration
	// ReconcileRetry is the delay before the first retry of a
	// reconciliation that left items busy; it doubles up to 64 times
	// itself (default 1s).
	ReconcileRetry time.Duration
	// OnReconcile, if set, is called with the report of every
	// reconciliation (at start, apply, reload, retry) once it is done,
	// one at a time, with the reconciliation lock held: it must not call
	// Reconcile, Diff or Reload.
	OnReconcile func(desired.Report)
}

// Trust is what the daemon drives of module signing (a *wasm.Loader).
// Enforcement goes on and never off: there is no method to clear it.
type Trust interface {
	EnforceSignatures()
	SignaturesEnforced() bool
}

// BootMount is a mount made at start.
type BootMount struct {
	Source, Target, Type, Options string
	Mkdir                         bool // create Target first
}

// Daemon is a running `raceless serve`.
type Daemon struct {
	cfg      Config
	log      *slog.Logger
	host     *raceless.Host
	resolver *modindex.Resolver
	metrics  *metrics
	ns       *namespace
	srv      *control.Server
	httpSrv  *http.Server
	httpLn   net.Listener
	router   *web.Router // nil without HTTPAddr
	webSrv   *http.Server
	webLn    net.Listener

	wg sync.WaitGroup // the sweeper and the listeners' goroutines

	// stopping is cancelled when shutdown begins: waiting unloads and
	// loads in flight give up (and restore), while plain calls in flight
	// keep their references until Host.Shutdown's deadline forces them.
	stopping    context.Context
	stopWaiters context.CancelFunc
	unsubscribe func()

	rec *reconciler // the desired state's reconciler (reconcile.go)
}

// New starts a daemon: it creates the host, loads the boot modules, mounts
// the namespace, and listens on the metrics address and the control socket.
// On error everything already started is undone.
func New(cfg Config) (_ *Daemon, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.ReconcileWait <= 0 {
		cfg.ReconcileWait = defaultReconcileWait
	}
	if cfg.ReconcileRetry <= 0 {
		cfg.ReconcileRetry = defaultReconcileRetry
	}
	var state *desired.State
	if cfg.Config != "" {
		// A bad desired state stops the start before anything starts.
		if state, err = desired.Load(cfg.Config); err != nil {
			return nil, fmt.Errorf("--config %s: %w", cfg.Config, err)
		}
	}
	if cfg.FuseDir != "" {
		// A daemon killed with its FUSE mount up leaves the mount dead
		// at FuseDir: detach it (and say so) before anything starts.
		if err := clearStaleFuse(cfg.FuseDir, cfg.Logger); err != nil {
			return nil, fmt.Errorf("--fuse %s: %w", cfg.FuseDir, err)
		}
	}
	d := &Daemon{cfg: cfg, log: cfg.Logger, metrics: newMetrics()}
	d.stopping, d.stopWaiters = context.WithCancel(context.Background())
	d.rec = newReconciler(d)
	d.resolver = modindex.NewResolver(cfg.ModulesDir, nil, cfg.Open)
	d.resolver.SetLogger(cfg.Logger) // the index-shadow warnings in the daemon's own log
	opts := []raceless.Option{raceless.WithLogger(cfg.Logger)}
	if !cfg.NoAutoload {
		opts = append(opts, raceless.WithResolver(d.resolver))
	}
	d.host = raceless.New(opts...)
	d.unsubscribe = d.host.Subscribe(d.metrics.observe)
	if cfg.Builtins != nil {
		d.resolver.AddBuiltins(cfg.Builtins(d.host)...)
	}
	defer func() {
		if err != nil {
			d.shutdownHost(context.Background())
		}
	}()
	if cfg.ModulesDir != "" {
		if _, ierr := d.resolver.Index(); ierr != nil {
			d.log.Warn("module index unusable; loadable modules cannot be demand-loaded until depmod is run", "dir", cfg.ModulesDir, "err", ierr)
		}
	}
	for _, name := range cfg.Boot {
		src, ok := d.resolver.Builtin(name)
		if !ok {
			return nil, fmt.Errorf("boot module %s is not built in: %w", name, raceless.ErrNotFound)
		}
		if _, err := d.load(context.Background(), src, nil); err != nil {
			return nil, err
		}
	}
	if d.ns, err = newNamespace(d); err != nil {
		return nil, err
	}
	if cfg.OnNamespace != nil {
		cfg.OnNamespace(d.ns.ns)
	}
	if cfg.MetricsAddr != "" {
		if d.httpLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", d.metricsHandler())
		d.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	}
	if cfg.HTTPAddr != "" {
		if d.webLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			if d.httpLn != nil {
				d.httpLn.Close()
			}
			return nil, fmt.Errorf("http: %w", err)
		}
		d.router = web.New(d.host, web.Config{Logger: d.log, BodyLimit: cfg.HTTPBodyLimit, Observe: d.metrics.route, Middleware: cfg.HTTPMiddleware})
		d.webSrv = &http.Server{Handler: d.router, ReadHeaderTimeout: 10 * time.Second, ConnContext: web.ConnContext,
			ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelWarn)}
	}
	if state != nil {
		// Items that fail are reported and retried or left; they do not
		// stop the start (a module file may be fixed while the daemon runs).
		d.Reconcile(d.stopping, state)
	}
	if d.srv, err = control.Listen(cfg.Socket, d.handle, d.log); err != nil {
		if d.httpLn != nil {
			d.httpLn.Close()
		}
		if d.webLn != nil {
			d.webLn.Close()
			d.router.Close()
		}
		return nil, err
	}
	return d, nil
}

// Host returns the daemon's host.
func (d *Daemon) Host() *raceless.Host { return d.host }

// MetricsAddr returns the metrics listener's address ("" if none).
func (d *Daemon) MetricsAddr() string {
	if d.httpLn == nil {
		return ""
	}
	return d.httpLn.Addr().String()
}

// HTTPAddr returns the address the module routes are served at ("" if
// none).
func (d *Daemon) HTTPAddr() string {
	if d.webLn == nil {
		return ""
	}
	return d.webLn.Addr().String()
}

// Router returns the router of the module routes (nil without HTTPAddr).
func (d *Daemon) Router() *web.Router { return d.router }

// Run serves until ctx is done, then shuts down: it stops accepting
// requests (cancelling those in flight), unmounts, and unloads every module
// with Host.Shutdown under the configured deadline, logging what it had to
// force.
func (d *Daemon) Run(ctx context.Context) error {
	// Requests are not cancelled by ctx itself: shutdown cancels them in
	// its own order (below).
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	errc := make(chan error, 2)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := d.srv.Serve(sctx); err != nil {
			errc <- fmt.Errorf("control socket: %w", err)
		}
	}()
	if d.httpSrv != nil {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := d.httpSrv.Serve(d.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics: %w", err)
			}
		}()
	}
	if d.webSrv != nil {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := d.webSrv.Serve(d.webLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http: %w", err)
			}
		}()
	}
	if d.cfg.Autoclean > 0 {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.sweep(d.stopping)
		}()
	}
	d.log.Info("raceless daemon ready", "socket", d.srv.Path(), "modules", d.cfg.ModulesDir, "metrics", d.MetricsAddr(), "http", d.HTTPAddr(), "autoclean", d.cfg.Autoclean)
	var runErr error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down", "cause", context.Cause(ctx))
	case runErr = <-errc:
		d.log.Error("shutting down", "err", runErr)
	}
	// Stop accepting; let waiting operations give up; unload everything
	// (waiting for references held by calls in flight until the deadline,
	// then forcing); only then close the connections left.
	d.srv.StopAccepting()
	d.stopWaiters()
	if d.webSrv != nil {
		// Let requests in flight finish (they hold their modules'
		// references) while accepting no new ones; the host's shutdown
		// deadline bounds the wait, then the connections are closed.
		sctx, cancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout)
		if err := d.webSrv.Shutdown(sctx); err != nil {
			d.webSrv.Close()
		}
		cancel()
		d.router.Close()
	}
	if err := d.shutdownHost(context.Background()); err != nil && runErr == nil {
		runErr = err
	}
	stop()
	d.srv.Close()
	if d.httpSrv != nil {
		d.httpSrv.Close()
	}
	d.wg.Wait()
	return runErr
}

func (d *Daemon) shutdownHost(parent context.Context) error {
	d.rec.stop()
	if d.ns != nil {
		d.ns.close()
	}
	ctx, cancel := context.WithTimeout(parent, d.cfg.ShutdownTimeout)
	defer cancel()
	forced, err := d.host.Shutdown(ctx)
	if len(forced) > 0 {
		d.log.Warn("shutdown forced modules that still had references", "forced", forced, "taints", d.host.Taints())
	}
	if err != nil {
		d.log.Error("shutdown", "err", err)
		return err
	}
	d.log.Info("shutdown complete", "forced", len(forced))
	d.unsubscribe()
	return nil
}

// sweep runs an autoclean pass every period until ctx is done.
func (d *Daemon) sweep(ctx context.Context) {
	t := time.NewTicker(d.cfg.Autoclean)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		removed, err := d.autoclean(ctx)
		if len(removed) > 0 || err != nil {
			d.log.Info("autoclean", "removed", removed, "err", err)
		}
	}
}

func (d *Daemon) autoclean(ctx context.Context) ([]string, error) {
	return d.host.Autoclean(ctx)
}

// load loads src; a failure before Init (the metrics' notifier sees Init
// failures) is counted.
func (d *Daemon) load(ctx context.Context, src raceless.Source, params map[string]string) (*raceless.Instance, error) {
	m, err := d.host.Load(ctx, src, params)
	if err != nil && !errors.Is(err, raceless.ErrInit) && !errors.Is(err, raceless.ErrExists) {
		d.metrics.failed(src.Info().Name, "load")
	}
	return m, err
}

// unload unloads name; a refusal is counted.
//
// With Force, the requests in flight on the module's routes are aborted
// first (web.Router.Abort: 503 or a closed connection), their handlers
// given abortGrace to return. A refusal because of references names the
// routes with requests in flight, and the mounts of the filesystem types
// the module provides (busyMounts).
//
// An unload that frees a module of at least freeOSAfter bytes (a wasm
// module's linear memory) returns the memory to the operating system at
// once (debug.FreeOSMemory) rather than at the Go runtime's pace: an idle
// daemon collects only every two minutes.
func (d *Daemon) unload(ctx context.Context, name string, opts raceless.UnloadOptions) error {
	var size int64
	if m, ok := d.host.Module(name); ok {
		size = m.Size()
	}
	if opts.Force && d.router != nil {
		actx, cancel := context.WithTimeout(ctx, abortGrace)
		if n := d.router.Abort(actx, name); n > 0 {
			d.log.Warn("forced unload: requests in flight aborted", "module", name, "requests", n)
		}
		cancel()
	}
	err := d.host.Unload(ctx, name, opts)
	if err != nil {
		d.metrics.failed(name, "unload")
		var be *raceless.BusyError
		if errors.As(err, &be) && be.Refs > 0 {
			var ce *control.Error
			if d.router != nil {
				if routes := d.router.InFlight(name); len(routes) > 0 {
					c := *control.ErrorOf(err)
					c.Message += "; requests in flight on routes: " + strings.Join(routes, ", ")
					c.Routes = routes
					ce = &c
				}
			}
			if mounts := d.busyMounts(name); len(mounts) > 0 {
				if ce == nil {
					c := *control.ErrorOf(err)
					ce = &c
				}
				ce.Message += "; mounted at " + strings.Join(mounts, ", ")
				ce.Mounts = mounts
			}
			if ce != nil {
				return ce
			}
		}
		return err
	}
	if size >= freeOSAfter {
		debug.FreeOSMemory()
	}
	return nil
}

// freeOSAfter is the size of a module whose unload returns the freed
// memory to the operating system at once.
const freeOSAfter = 16 << 20

// busyMounts lists the mounts of the filesystem types module name
// provides, which pin it (each superblock holds a reference): "/m" for
// an attached mount, "/m (detached with open files: N)" for one that
// left the namespace (umount -l) and that open files still hold (N counts
// the mount's references besides the tree's: open files, and walks in
// progress).
func (d *Daemon) busyMounts(name string) []string {
	if d.ns == nil {
		return nil
	}
	var out []string
	for _, r := range d.host.Lookup(raceless.KindFilesystem) {
		if r.Owner != name {
			continue
		}
		for _, m := range d.ns.ns.MountsOfType(r.Name) {
			if m.Detached {
				out = append(out, fmt.Sprintf("%s (detached with open files: %d)", m.Target, m.Users))
			} else {
				out = append(out, m.Target)
			}
		}
	}
	return out
}

// abortGrace is how long a forced unload lets aborted requests' handlers
// return before closing their connections.
const abortGrace = time.Second
