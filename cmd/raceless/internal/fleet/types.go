package fleet

import (
	"fmt"
	"strconv"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/desired"
)

// keys is the key layout of one fleet (see the package comment).
type keys struct{ root string }

func newKeys(fleet string) (keys, error) {
	if !raceless.ValidName(fleet) {
		return keys{}, fmt.Errorf("fleet name %q: %w", fleet, ErrInvalid)
	}
	return keys{root: Prefix + fleet + "/"}, nil
}

func (k keys) desired() string            { return k.root + "desired" }
func (k keys) state(gen int64) string     { return k.root + "states/" + strconv.FormatInt(gen, 10) }
func (k keys) statesPrefix() string       { return k.root + "states/" }
func (k keys) stable() string             { return k.root + "stable" }
func (k keys) node(host string) string    { return k.root + "node/" + host + "/" }
func (k keys) nodesPrefix() string        { return k.root + "node/" }
func (k keys) assign(host string) string  { return k.node(host) + "assign" }
func (k keys) drain(host string) string   { return k.node(host) + "drain" }
func (k keys) host(host string) string    { return k.root + "hosts/" + host }
func (k keys) hostsPrefix() string        { return k.root + "hosts/" }
func (k keys) rollout() string            { return k.root + "rollout" }
func (k keys) controller() string         { return k.root + "controller" }
func (k keys) blobsPrefix() string        { return k.root + "blobs/sha256/" }
func (k keys) blob(hex string) string     { return k.blobsPrefix() + hex + "/" }
func (k keys) manifest(hex string) string { return k.blob(hex) + "manifest" }
func (k keys) chunk(hex string, i int) string {
	return fmt.Sprintf("%s%06d", k.blob(hex), i)
}

// Document is one generation of a fleet's desired state.
type Document struct {
	// Generation numbers the documents of a fleet from 1, one more at
	// every fleet set.
	Generation int64 `json:"generation"`
	// Previous is the stable generation when this one was written (0:
	// none).
	Previous int64 `json:"previous"`
	// State is what every host runs. A module given by file has File
	// set to the file's base name (for the eye only) and Digest to
	// "sha256:HEX": its bytes are the blob HEX.
	State desired.State `json:"state"`
	// Rollout is how the generation is rolled out.
	Rollout RolloutSpec `json:"rollout"`
	// Author and Time say who wrote it and when.
	Author string    `json:"author,omitempty"`
	Time   time.Time `json:"time"`
}

// RolloutSpec is how a generation goes out. Zero values select the
// defaults.
type RolloutSpec struct {
	// Canary is the host that takes the generation first ("": the first
	// live host by name).
	Canary string `json:"canary,omitempty"`
	// CanaryPercent, when Canary is "", makes the first CanaryPercent
	// percent of the live hosts by name (rounded up, at least one) the
	// canaries, all checked before any other host takes the generation.
	CanaryPercent int `json:"canary_percent,omitempty"`
	// Batch is how many hosts take it at once after the canary (0: a
	// quarter of the rest, at least one).
	Batch int `json:"batch,omitempty"`
	// Health is an HTTP path asked of every host that took the
	// generation, on the address the host reports; "" asks nothing.
	Health string `json:"health,omitempty"`
	// Requests is how many health requests each host is asked (default
	// 10).
	Requests int `json:"requests,omitempty"`
	// MaxErrorRate is the share of health requests that may fail (not
	// 2xx, or no answer) before the check fails (default 0: none may).
	MaxErrorRate float64 `json:"max_error_rate,omitempty"`
	// Timeout bounds each step: a host converging on the generation
	// (default 60s).
	Timeout Duration `json:"timeout,omitempty"`
}

// Duration is a time.Duration written as Go writes it ("1m30s").
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

func (s RolloutSpec) withDefaults() RolloutSpec {
	if s.Requests <= 0 {
		s.Requests = 10
	}
	if s.Timeout <= 0 {
		s.Timeout = Duration(time.Minute)
	}
	return s
}

// HostStatus is what a host reports under hosts/HOST, attached to its
// lease.
type HostStatus struct {
	Host string `json:"host"`
	// HTTP is the address the host serves module routes at ("": none).
	HTTP string `json:"http,omitempty"`
	// Target is the generation the host is moving to (0: none: it runs
	// what it runs, untouched by the fleet).
	Target int64 `json:"target"`
	// Generation is the last generation the host converged on (0: none,
	// or the empty state: drained, or a first generation rolled back).
	Generation int64 `json:"generation"`
	// Converged is true when the host runs Target exactly.
	Converged bool `json:"converged"`
	// Modules are the modules the host runs.
	Modules []ModuleRun `json:"modules"`
	// Digests are the module files of Target the host fetched and
	// verified.
	Digests []string `json:"digests,omitempty"`
	// Error is why the host has not converged ("" when it has).
	Error string `json:"error,omitempty"`
	// Items are the reconciliation's items that failed or wait.
	Items []desired.Item `json:"items,omitempty"`
	// Draining is true while the host leaves the fleet (SIGTERM, or
	// fleet drain).
	Draining bool `json:"draining,omitempty"`
	// Reconciles counts the reconciliations this agent ran (flapping
	// shows as a count that grows while nothing changes).
	Reconciles int       `json:"reconciles"`
	Updated    time.Time `json:"updated"`
}

// ModuleRun is one module a host runs.
type ModuleRun struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	State   string `json:"state"`
}

// Rollout phases.
const (
	PhaseCanary = "canary" // the canary takes the generation
	PhaseBatch  = "batch"  // the batches take it
	PhaseDone   = "done"   // every live host took it; it is stable
	PhaseFailed = "failed" // a check failed: hosts returned to Previous
)

// RolloutState is the state of a fleet's last rollout.
type RolloutState struct {
	Generation int64    `json:"generation"`
	Previous   int64    `json:"previous"`
	Phase      string   `json:"phase"`
	Canary     string   `json:"canary,omitempty"`  // the canaries, space-separated
	Batch      int      `json:"batch,omitempty"`   // the batch under way (from 1)
	Batches    int      `json:"batches,omitempty"` // how many there are
	Updated    []string `json:"updated,omitempty"` // hosts that took the generation
	Lost       []string `json:"lost,omitempty"`    // hosts that left during the rollout
	// Reason is why the rollout failed, or a note on how it ended.
	Reason  string    `json:"reason,omitempty"`
	Started time.Time `json:"started"`
	Changed time.Time `json:"changed"`
}
