package daemon_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
	"github.com/raceless/raceless/cmd/raceless/internal/defaults"
	"github.com/raceless/raceless/cmd/raceless/internal/desired"
	"github.com/raceless/raceless/internal/testdeadline"
)

// symModule exports the symbol "<name>_sym" (a reference can be held on
// it with Host.Acquire).
type symModule struct{}

func (symModule) Init(k *raceless.Kernel) error { return k.Export(k.Name()+"_sym", 1) }
func (symModule) Exit() (int, error)            { return 0, nil }

func nativeMod(info raceless.Info) raceless.Source {
	return raceless.Native(info, func() raceless.Module { return symModule{} })
}

// The test modules: svc (parameter level, an int, default 1), base, and
// top, which depends on base.
func testBuiltins(h *raceless.Host) []raceless.Source {
	return append(defaults.Sources(h),
		nativeMod(raceless.Info{Name: "svc", Version: "1.0", Params: []raceless.ParamSpec{{Name: "level", Type: raceless.ParamInt, Default: "1"}}}),
		nativeMod(raceless.Info{Name: "base"}),
		nativeMod(raceless.Info{Name: "top", Depends: []string{"base"}}),
	)
}

// fileSource is the test's loadable module file format: the file's text is
// "NAME VERSION"; its key is "file:PATH@SHA256", as the wasm loader's.
type fileSource struct {
	info raceless.Info
	key  string
}

func (s fileSource) Info() raceless.Info { return s.info }
func (s fileSource) Key() string         { return s.key }
func (s fileSource) Instantiate(context.Context) (raceless.Module, error) {
	return symModule{}, nil
}

func openTestFile(path string) (raceless.Source, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(abs)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return nil, fmt.Errorf("%s: not a test module: %w", path, raceless.ErrInvalid)
	}
	sum := sha256.Sum256(b)
	return fileSource{info: raceless.Info{Name: f[0], Version: f[1]}, key: "file:" + abs + "@" + hex.EncodeToString(sum[:])}, nil
}

func digestOf(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

type recDaemon struct {
	*daemon.Daemon
	sock    string
	reports chan desired.Report // every reconciliation's report, in order
}

// startRecDaemon runs a daemon with the test modules; cfg's Config,
// HTTPAddr and the reconcile timings are taken from it.
func startRecDaemon(t *testing.T, cfg daemon.Config) *recDaemon {
	t.Helper()
	rd := &recDaemon{sock: filepath.Join(t.TempDir(), "sock"), reports: make(chan desired.Report, 100)}
	cfg.Socket = rd.sock
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Builtins = testBuiltins
	cfg.Boot = defaults.Boot()
	cfg.Mounts = defaults.Mounts()
	cfg.Open = openTestFile
	if cfg.ReconcileWait == 0 {
		cfg.ReconcileWait = 100 * time.Millisecond
	}
	if cfg.ReconcileRetry == 0 {
		cfg.ReconcileRetry = 10 * time.Millisecond
	}
	cfg.OnReconcile = func(r desired.Report) {
		select {
		case rd.reports <- r:
		default:
			panic("test: OnReconcile reports not read")
		}
	}
	rd.Daemon = runDaemon(t, cfg)
	return rd
}

// next returns the next reconciliation's report, failing at the test's
// deadline.
func (rd *recDaemon) next(t *testing.T) desired.Report {
	t.Helper()
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	select {
	case r := <-rd.reports:
		return r
	case <-ctx.Done():
		t.Fatal("no reconciliation by the test's deadline")
	}
	return desired.Report{}
}

// apply reconciles the state text and checks the report of its
// reconciliation reached OnReconcile.
func (rd *recDaemon) apply(t *testing.T, text string) desired.Report {
	t.Helper()
	s, err := desired.Parse(filepath.Join(t.TempDir(), "state.toml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	rep := rd.Reconcile(context.Background(), s)
	if got := rd.next(t); !slices.Equal(got.Items, rep.Items) {
		t.Fatalf("OnReconcile got %+v, Reconcile returned %+v", got, rep)
	}
	return rep
}

// items formats a report as "kind name action[ retry][: error]" lines.
func items(r desired.Report) []string {
	var out []string
	for _, it := range r.Items {
		s := it.Kind + " " + it.Name + " " + it.Action
		if it.Retry {
			s += " retry"
		}
		if it.Err != "" {
			s += ": " + it.Err
		}
		out = append(out, s)
	}
	return out
}

func wantItems(t *testing.T, r desired.Report, converged bool, want ...string) {
	t.Helper()
	got := items(r)
	ok := len(got) == len(want) && r.Converged == converged
	for i := 0; ok && i < len(got); i++ {
		w, prefix := strings.CutSuffix(want[i], "...")
		ok = got[i] == w || prefix && strings.HasPrefix(got[i], w)
	}
	if !ok {
		t.Fatalf("report (converged %v):\n  %s\nwant (converged %v):\n  %s", r.Converged, strings.Join(got, "\n  "), converged, strings.Join(want, "\n  "))
	}
}

func loaded(d *recDaemon) []string {
	var out []string
	for _, m := range d.Host().Modules() {
		out = append(out, m.Name())
	}
	slices.Sort(out)
	return out
}

func mountTargets(t *testing.T, d *recDaemon) []string {
	t.Helper()
	data, err := control.Call(context.Background(), d.sock, &control.Request{Op: "mounts"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mr struct{ Mounts []struct{ Target string } }
	if err := json.Unmarshal(data, &mr); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range mr.Mounts {
		out = append(out, m.Target)
	}
	return out
}

const fullState = `
[[module]]
name = "top"            # loads base first (its dependency)
[[module]]
name = "svc"
params = { level = "5" }
[[mount]]
target = "/data"
type = "ramfs"
mkdir = true
`

// From the boot state to a desired one; a second reconciliation keeps
// everything; Diff then shows nothing to do.
func TestReconcileFromEmptyThenIdempotent(t *testing.T) {
	d := startRecDaemon(t, daemon.Config{})
	// A dependency the state names too is one item, loaded first.
	both, _ := desired.Parse("x.toml", []byte("[[module]]\nname = \"top\"\n[[module]]\nname = \"base\"\n"))
	wantItems(t, d.Diff(both), false, "module base load", "module top load")
	wantItems(t, d.apply(t, fullState), true,
		"module base load", "module top load", "module svc load", "mount /data mount")
	if got, want := loaded(d), []string{"base", "hello", "procfs", "ramfs", "svc", "top"}; !slices.Equal(got, want) {
		t.Fatalf("modules %q, want %q", got, want)
	}
	m, _ := d.Host().Module("svc")
	if m.Params()["level"] != "5" {
		t.Fatalf("svc params %v", m.Params())
	}
	if got := mountTargets(t, d); !slices.Contains(got, "/data") {
		t.Fatalf("mounts %q", got)
	}
	wantItems(t, d.apply(t, fullState), true, "module top keep", "module svc keep", "mount /data keep")
	s, _ := desired.Parse("x.toml", []byte(fullState))
	wantItems(t, d.Diff(s), true, "module top keep", "module svc keep", "mount /data keep")
	if m2, _ := d.Host().Module("svc"); m2 != m {
		t.Fatal("a keep replaced the instance")
	}
}

// A parameter change replaces the instance (Host.Replace); removing
// modules and mounts from the state unloads and unmounts them, the
// dependency base included; a module loaded by hand is left alone.
func TestReconcileReplaceAndRemove(t *testing.T) {
	d := startRecDaemon(t, daemon.Config{})
	d.apply(t, fullState)
	old, _ := d.Host().Module("svc")
	if _, err := d.Host().Load(context.Background(), nativeMod(raceless.Info{Name: "byhand"}), nil); err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(fullState, `level = "5"`, `level = "0x10"`, 1)
	s, _ := desired.Parse("x.toml", []byte(changed))
	wantItems(t, d.Diff(s), false, "module top keep", "module svc replace", "mount /data keep")
	wantItems(t, d.apply(t, changed), true, "module top keep", "module svc replace", "mount /data keep")
	m, _ := d.Host().Module("svc")
	if m == old || m.Params()["level"] != "16" {
		t.Fatalf("svc not replaced: same %v, params %v", m == old, m.Params())
	}
	wantItems(t, d.apply(t, "[[module]]\nname = \"svc\"\nparams = { level = \"16\" }\n"), true,
		"mount /data umount", "module top unload", "module base unload", "module svc keep")
	if got, want := loaded(d), []string{"byhand", "hello", "procfs", "ramfs", "svc"}; !slices.Equal(got, want) {
		t.Fatalf("modules %q, want %q", got, want)
	}
	if got := mountTargets(t, d); slices.Contains(got, "/data") {
		t.Fatalf("mounts %q", got)
	}
	// An empty state unloads what the state loaded, and only that.
	wantItems(t, d.apply(t, ""), true, "module svc unload")
	if got, want := loaded(d), []string{"byhand", "hello", "procfs", "ramfs"}; !slices.Equal(got, want) {
		t.Fatalf("modules %q, want %q", got, want)
	}
}

// A module the state no longer names but whose reference is held is left
// loaded (not forced) and retried; once the reference is dropped a retry
// converges.
func TestReconcileBusyRetriedNotForced(t *testing.T) {
	d := startRecDaemon(t, daemon.Config{})
	d.apply(t, "[[module]]\nname = \"svc\"\n")
	b, err := d.Host().Acquire(raceless.KindSymbol, "svc_sym")
	if err != nil {
		t.Fatal(err)
	}
	wantItems(t, d.apply(t, ""), false, "module svc unload retry: unload svc: 1 references still held after 100ms...")
	if _, ok := d.Host().Module("svc"); !ok {
		t.Fatal("busy module unloaded")
	}
	// Retries come, each leaving it busy, while the reference is held.
	wantItems(t, d.next(t), false, "module svc unload retry...")
	b.Release()
	for {
		r := d.next(t)
		if r.Converged {
			wantItems(t, r, true, "module svc unload")
			break
		}
		wantItems(t, r, false, "module svc unload retry...") // the retry that raced with Release
	}
	if _, ok := d.Host().Module("svc"); ok {
		t.Fatal("svc still loaded after converging")
	}
	if taints := d.Host().Taints(); len(taints) != 0 {
		t.Fatalf("host tainted: %q (forced?)", taints)
	}
}

// force = true in the state's entry: the module goes despite the
// reference held, tainting the host as rmmod -f does.
func TestReconcileForce(t *testing.T) {
	d := startRecDaemon(t, daemon.Config{})
	d.apply(t, "[[module]]\nname = \"svc\"\nforce = true\n")
	b, err := d.Host().Acquire(raceless.KindSymbol, "svc_sym")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	wantItems(t, d.apply(t, ""), true, "module svc unload")
	if _, ok := d.Host().Module("svc"); ok {
		t.Fatal("forced module still loaded")
	}
	if len(d.Host().Taints()) == 0 {
		t.Fatal("forced unload did not taint the host")
	}
}

// A file whose bytes are not the digest is refused and nothing loads; the
// right digest loads it; a new file with its new digest replaces it.
func TestReconcileDigest(t *testing.T) {
	d := startRecDaemon(t, daemon.Config{})
	dir := t.TempDir()
	file := filepath.Join(dir, "filemod.mod")
	if err := os.WriteFile(file, []byte("filemod 1.0"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := digestOf(t, file)
	bad := "sha256:" + strings.Repeat("0", 64)
	state := func(digest, version string) string {
		return fmt.Sprintf("[[module]]\nfile = %q\ndigest = %q\nversion = %q\n", file, digest, version)
	}
	before := loaded(d)
	wantItems(t, d.apply(t, state(bad, "1.0")), false,
		"module filemod load: module filemod: digest mismatch: the file is "+good+", the state wants "+bad+": module file digest mismatch")
	if got := loaded(d); !slices.Equal(got, before) {
		t.Fatalf("modules %q after a digest mismatch, want %q", got, before)
	}
	wantItems(t, d.apply(t, state(good, "2.0")), false, `module filemod load: module filemod: version "2.0" wanted, its source is version "1.0": invalid argument`)
	wantItems(t, d.apply(t, state(good, "1.0")), true, "module filemod load")
	old, _ := d.Host().Module("filemod")
	if err := os.WriteFile(file, []byte("filemod 1.1"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantItems(t, d.apply(t, state(good, "1.0")), false, "module filemod replace: module filemod: digest mismatch...")
	if m, _ := d.Host().Module("filemod"); m != old {
		t.Fatal("the loaded module changed after a refused digest")
	}
	wantItems(t, d.apply(t, state(digestOf(t, file), "1.1")), true, "module filemod replace")
	if m, _ := d.Host().Module("filemod"); m == old || m.Info().Version != "1.1" {
		t.Fatal("not replaced by the new file")
	}
}

// apply and diff over the control socket; a bad file is refused whole
// (code invalid, with the line and field) and the running state is
// untouched; Reload (SIGHUP's handler) re-reads --config.
func TestReconcileControlAndReload(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "host.toml")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(fullState)
	d := startRecDaemon(t, daemon.Config{Config: config})
	wantItems(t, d.next(t), true, "module base load", "module top load", "module svc load", "mount /data mount")
	call := func(req *control.Request) (desired.Report, error) {
		t.Helper()
		data, err := control.Call(context.Background(), d.sock, req, nil)
		var r desired.Report
		if err == nil {
			err = json.Unmarshal(data, &r)
		}
		return r, err
	}
	before := loaded(d)
	svc, _ := d.Host().Module("svc")
	write("[[module]]\nname = \"svc\"\n\n[[mount]]\ntarget = \"/data\"\ntype = \"ramfs\"\nsize = 3\n")
	for _, op := range []string{"apply", "diff"} {
		_, err := call(&control.Request{Op: op})
		var we *control.Error
		if !errors.As(err, &we) || we.Code != control.CodeInvalid || we.Message != config+":7: mount[0].size: unknown key: invalid desired state" {
			t.Fatalf("%s of a bad file: %v", op, err)
		}
	}
	if _, err := d.Reload(context.Background()); !errors.Is(err, desired.ErrInvalid) {
		t.Fatalf("Reload of a bad file: %v", err)
	}
	if m, _ := d.Host().Module("svc"); !slices.Equal(loaded(d), before) || m != svc {
		t.Fatalf("a bad file changed the modules: %q, want %q", loaded(d), before)
	}
	select {
	case r := <-d.reports:
		t.Fatalf("a bad file was reconciled: %+v", r)
	default:
	}

	write("[[module]]\nname = \"svc\"\nparams = { level = \"7\" }\n")
	r, err := call(&control.Request{Op: "diff"})
	if err != nil {
		t.Fatal(err)
	}
	wantItems(t, r, false, "mount /data umount", "module top unload", "module base unload", "module svc replace")
	if m, _ := d.Host().Module("svc"); m != svc {
		t.Fatal("diff changed svc")
	}
	r, err = d.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wantItems(t, r, true, "mount /data umount", "module top unload", "module base unload", "module svc replace")
	d.next(t)
	other := filepath.Join(dir, "other.toml")
	if err := os.WriteFile(other, []byte("[[module]]\nname = \"svc\"\nparams = { level = \"7\" }\n[[module]]\nname = \"top\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err = call(&control.Request{Op: "apply", Path: other})
	if err != nil {
		t.Fatal(err)
	}
	wantItems(t, r, true, "module svc keep", "module base load", "module top load")
	d.next(t)
}

// Without --config, apply and diff need a FILE.
func TestReconcileNoConfig(t *testing.T) {
	d := startRecDaemon(t, daemon.Config{})
	_, err := control.Call(context.Background(), d.sock, &control.Request{Op: "apply"}, nil)
	var we *control.Error
	if !errors.As(err, &we) || we.Code != control.CodeUsage {
		t.Fatalf("apply without --config: %v", err)
	}
	if _, err := d.Reload(context.Background()); err == nil {
		t.Fatal("Reload without --config succeeded")
	}
}

// A bad --config stops the start, naming the line and field; nothing is
// left running.
func TestReconcileBadConfigAtStart(t *testing.T) {
	config := filepath.Join(t.TempDir(), "host.toml")
	if err := os.WriteFile(config, []byte("[[module]]\nname = \"svc\"\nfile = \"x.wasm\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := daemon.New(daemon.Config{Socket: filepath.Join(t.TempDir(), "sock"), Config: config,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Builtins: testBuiltins})
	want := "--config " + config + ": " + config + ":3: module[0].file: both name and file are set: name a module, or give its file: invalid desired state"
	if err == nil || err.Error() != want || !errors.Is(err, raceless.ErrInvalid) {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

// A daemon started twice with the same --config ends with the same
// modules, parameters and mounts.
func TestReconcileRestart(t *testing.T) {
	config := filepath.Join(t.TempDir(), "host.toml")
	if err := os.WriteFile(config, []byte(fullState), 0o644); err != nil {
		t.Fatal(err)
	}
	type snapshot struct {
		modules map[string]map[string]string
		mounts  []string
	}
	var snaps []snapshot
	for i := range 2 {
		// Each daemon stops (its subtest's cleanup) before the next starts.
		t.Run(fmt.Sprint("start", i), func(t *testing.T) {
			d := startRecDaemon(t, daemon.Config{Config: config})
			wantItems(t, d.next(t), true, "module base load", "module top load", "module svc load", "mount /data mount")
			s := snapshot{modules: map[string]map[string]string{}, mounts: mountTargets(t, d)}
			for _, m := range d.Host().Modules() {
				s.modules[m.Name()] = m.Params()
			}
			snaps = append(snaps, s)
		})
	}
	if len(snaps) != 2 {
		t.FailNow()
	}
	if !maps.EqualFunc(snaps[0].modules, snaps[1].modules, maps.Equal) || !slices.Equal(snaps[0].mounts, snaps[1].mounts) {
		t.Fatalf("restart differs:\n%+v\n%+v", snaps[0], snaps[1])
	}
}

// The HTTP middleware chain follows the state, and goes back to the
// daemon's own once the state stops setting it.
func TestReconcileMiddleware(t *testing.T) {
	d := startRecDaemon(t, daemon.Config{HTTPAddr: "127.0.0.1:0", HTTPMiddleware: []string{"flagmw"}})
	wantItems(t, d.apply(t, "[http]\nmiddleware = [\"a\", \"b\"]\n"), true, "http middleware set")
	if got := d.Router().Middleware(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("middleware %q", got)
	}
	wantItems(t, d.apply(t, "[http]\nmiddleware = [\"a\", \"b\"]\n"), true, "http middleware keep")
	wantItems(t, d.apply(t, "[http]\nmiddleware = []\n"), true, "http middleware set")
	if got := d.Router().Middleware(); len(got) != 0 {
		t.Fatalf("middleware %q", got)
	}
	wantItems(t, d.apply(t, ""), true, "http middleware set")
	if got := d.Router().Middleware(); !slices.Equal(got, []string{"flagmw"}) {
		t.Fatalf("middleware %q, want the flag's", got)
	}
	wantItems(t, d.apply(t, ""), true)
}

// A mount the state did not make is not replaced: an error, no retry.
func TestReconcileForeignMount(t *testing.T) {
	d := startRecDaemon(t, daemon.Config{})
	wantItems(t, d.apply(t, "[[mount]]\ntarget = \"/proc\"\ntype = \"ramfs\"\n"), false,
		"mount /proc mount: /proc is mounted (proc from proc), not by the desired state: unmount it first: busy")
	wantItems(t, d.apply(t, "[[mount]]\nsource = \"proc\"\ntarget = \"/proc\"\ntype = \"proc\"\n"), true, "mount /proc keep")
	wantItems(t, d.apply(t, ""), true) // found, not made: left
	if got := mountTargets(t, d); !slices.Contains(got, "/proc") {
		t.Fatalf("mounts %q", got)
	}
}

// Once shutdown has begun a reconciliation does nothing.
func TestReconcileAfterShutdown(t *testing.T) {
	d, err := daemon.New(daemon.Config{Socket: filepath.Join(t.TempDir(), "sock"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Builtins: testBuiltins, Boot: defaults.Boot(), Mounts: defaults.Mounts()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Run(ctx); err != nil {
		t.Fatal(err)
	}
	s, _ := desired.Parse("x.toml", []byte("[[module]]\nname = \"svc\"\n"))
	if r := d.Reconcile(context.Background(), s); r.Converged || len(r.Items) != 0 {
		t.Fatalf("after shutdown: %+v", r)
	}
	if n := len(d.Host().Modules()); n != 0 {
		t.Fatalf("%d modules loaded after shutdown", n)
	}
}
