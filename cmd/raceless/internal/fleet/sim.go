package fleet

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
	"github.com/raceless/raceless/cmd/raceless/internal/defaults"
	"github.com/raceless/raceless/web"
)

// Simulated hosts, for the tests and the benchmark: a real daemon
// (daemon.New, its control socket in a temporary directory) and a real
// Agent, many in one process against one etcd. Their loadable modules are
// "sim module" files (SimModule), opened without a wasm runtime so that
// fifty hosts of twenty modules each cost what the fleet costs, not what
// compiling wasm costs; the bytes still go through etcd, the cache and
// both digest checks as a real module file's do.

// simMagic starts a sim module file.
const simMagic = "raceless-fleet-sim-module\n"

// SimModule returns the bytes of a sim module file: a native module named
// name at version, whose Init fails when failInit is set, that serves
// GET /sim/NAME with status (200 when 0) on a daemon's HTTP routes, padded
// with pad bytes (a Go-built wasm module is about 2 MB).
func SimModule(name, version string, failInit bool, status, pad int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%sname=%s\nversion=%s\nfail=%t\nstatus=%d\n\n", simMagic, name, version, failInit, status)
	for i := 0; b.Len() < pad; i++ {
		fmt.Fprintf(&b, "%08x", i) // not compressible to nothing, and not random: reproducible digests
	}
	return b.Bytes()
}

// simSource is an opened sim module file. Its key is a loadable file's,
// "file:PATH@SHA256", which the reconciler checks digests against.
type simSource struct {
	info   raceless.Info
	key    string
	fail   bool
	status int
}

func (s *simSource) Info() raceless.Info { return s.info }
func (s *simSource) Key() string         { return s.key }
func (s *simSource) Instantiate(context.Context) (raceless.Module, error) {
	return &simModule{src: s}, nil
}

type simModule struct{ src *simSource }

func (m *simModule) Init(k *raceless.Kernel) error {
	if m.src.fail {
		return fmt.Errorf("sim module %s %s: init fails (as its file says)", m.src.info.Name, m.src.info.Version)
	}
	status := m.src.status
	if status == 0 {
		status = http.StatusOK
	}
	body := m.src.info.Name + " " + m.src.info.Version + "\n"
	return web.Register(k, "GET /sim/"+m.src.info.Name, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
}

func (m *simModule) Exit() (int, error) { return 0, nil }

// errNotSim is returned by OpenSim for a file that is not a sim module.
var errNotSim = errors.New("not a sim module file")

// OpenSim opens a sim module file (daemon.Config.Open).
func OpenSim(path string) (raceless.Source, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(data, []byte(simMagic)) {
		return nil, fmt.Errorf("%s: %w: %w", path, errNotSim, raceless.ErrInvalid)
	}
	sum := sha256.Sum256(data)
	s := &simSource{key: "file:" + path + "@" + hex.EncodeToString(sum[:])}
	sc := bufio.NewScanner(bytes.NewReader(data[len(simMagic):]))
	for sc.Scan() && sc.Text() != "" {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "name":
			s.info.Name = v
		case "version":
			s.info.Version = v
		case "fail":
			s.fail = v == "true"
		case "status":
			s.status, _ = strconv.Atoi(v)
		}
	}
	if !raceless.ValidName(s.info.Name) {
		return nil, fmt.Errorf("%s: bad name %q: %w", path, s.info.Name, raceless.ErrInvalid)
	}
	s.info.License = "Apache-2.0"
	s.info.Description = "fleet simulation module"
	return s, nil
}

// SimHost is a simulated host: a daemon and its agent.
type SimHost struct {
	Name   string
	Daemon *daemon.Daemon
	Agent  *Agent
	cancel context.CancelFunc
	done   chan struct{}
}

// SimConfig configures StartSim.
type SimConfig struct {
	Dir    string // the host's socket and blob cache go under Dir/NAME
	Fleet  string
	Name   string
	Client *clientv3.Client
	HTTP   bool          // serve module routes on a loopback port
	TTL    time.Duration // the agent's lease TTL (0: the default)
	Logger *slog.Logger  // nil: discard
}

// StartSim starts a simulated host: its daemon runs and its agent follows
// the fleet until Stop.
func StartSim(cfg SimConfig) (*SimHost, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dir := filepath.Join(cfg.Dir, cfg.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	dc := daemon.Config{
		Socket:   filepath.Join(dir, "sock"),
		Logger:   log,
		Builtins: defaults.Sources,
		Boot:     defaults.Boot(),
		Open:     OpenSim,
	}
	if cfg.HTTP {
		dc.HTTPAddr = "127.0.0.1:0"
	}
	d, err := daemon.New(dc)
	if err != nil {
		return nil, fmt.Errorf("sim host %s: %w", cfg.Name, err)
	}
	a, err := NewAgent(AgentConfig{Client: cfg.Client, Fleet: cfg.Fleet, Host: cfg.Name, Daemon: d,
		CacheDir: filepath.Join(dir, "blobs"), TTL: cfg.TTL, Logger: log})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &SimHost{Name: cfg.Name, Daemon: d, Agent: a, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		dd := make(chan struct{})
		go func() { defer close(dd); d.Run(ctx) }()
		a.Run(ctx)
		<-dd
	}()
	return h, nil
}

// Stop stops the host as SIGTERM does: the agent leaves the fleet, the
// daemon unloads with wait; it returns once both ended.
func (h *SimHost) Stop() {
	h.cancel()
	<-h.done
}
