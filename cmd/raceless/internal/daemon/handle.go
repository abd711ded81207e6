package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/modindex"
)

// ModuleStatus is one module in a "list" answer.
type ModuleStatus struct {
	Name      string            `json:"name"`
	Size      int64             `json:"size"`
	Refs      int64             `json:"refs"`
	Holders   []string          `json:"holders"`
	Deps      []string          `json:"deps"`
	State     string            `json:"state"`
	Autoclean bool              `json:"autoclean"`
	Version   string            `json:"version,omitempty"`
	Source    string            `json:"source"`
	Params    map[string]string `json:"params,omitempty"`
	Taints    []string          `json:"taints,omitempty"`
	// TaintFlags are the kernel's letters of the taints, as in the
	// /proc/modules line ("" when untainted).
	TaintFlags string    `json:"taint_flags,omitempty"`
	LoadedAt   time.Time `json:"loaded_at"`
}

func status(m *raceless.Instance) ModuleStatus {
	return ModuleStatus{
		Name: m.Name(), Size: m.Size(), Refs: m.Refs(), Holders: nonNil(m.Holders()), Deps: nonNil(m.Deps()),
		State: m.State().String(), Autoclean: m.Autoclean(), Version: m.Info().Version, Source: m.Key(),
		Params: m.Params(), Taints: m.Taints(), TaintFlags: m.TaintFlags(), LoadedAt: m.LoadedAt(),
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// ModInfo is a "modinfo" answer.
type ModInfo struct {
	Filename string        `json:"filename"`
	Info     raceless.Info `json:"info"`
	// Capabilities are what a loadable module's modinfo block asks its
	// host for.
	Capabilities []string `json:"capabilities,omitempty"`
	// Signature is a loadable module's signature, checked against the
	// keyring of whoever read it (the daemon's, or modinfo --keyring's);
	// nil for a built-in module, which is part of the host.
	Signature *SigInfo `json:"signature,omitempty"`
	// Sum is the file's SHA-256, as in a loaded module's key (not sent).
	Sum string `json:"-"`
}

// SigInfo is a module file's signature as modinfo shows it.
type SigInfo struct {
	// Status is "trusted", "unknown key", "unsigned" or "bad signature"
	// (modsig.Status), or "unknown" for a loaded module whose file
	// changed since it was loaded.
	Status string `json:"status"`
	KeyID  string `json:"key_id,omitempty"` // the signing key's id (sig_key)
	Signer string `json:"signer,omitempty"` // the keyring's name of the key, when trusted
	Error  string `json:"error,omitempty"`  // why it is not trusted
}

// SigEnforce is a "sig_enforce" answer.
type SigEnforce struct {
	SigEnforce bool `json:"sig_enforce"`
}

// Ping is a "ping" answer.
type Ping struct {
	Protocol   int    `json:"protocol"`
	PID        int    `json:"pid"`
	UID        int    `json:"uid"`
	ModulesDir string `json:"modules_dir,omitempty"`
	// Tainted is the host's taint mask, as /proc/sys/kernel/tainted (0:
	// untainted); TaintFlags its letters; Taints the reasons.
	Tainted    uint64   `json:"tainted"`
	TaintFlags string   `json:"taint_flags,omitempty"`
	Taints     []string `json:"taints,omitempty"`
	// SigEnforce says whether module signatures are enforced.
	SigEnforce bool `json:"sig_enforce"`
	// HTTPAddr is where module routes are served ("": nowhere).
	HTTPAddr string `json:"http_addr,omitempty"`
}

// ProbeResult is a "probe" (modprobe) or "remove" (modprobe -r) answer.
type ProbeResult struct {
	Module  string   `json:"module"`
	Actions []string `json:"actions"` // what was (or, dry run, would be) done: "insmod PATH", "rmmod NAME", "builtin NAME"
}

// RequestResult is one name of a "request" answer.
type RequestResult struct {
	Name   string `json:"name"`
	Module string `json:"module,omitempty"`
	Error  string `json:"error,omitempty"`
	Code   string `json:"code,omitempty"`
}

func (d *Daemon) handle(ctx context.Context, req *control.Request, progress func(any)) (any, error) {
	switch req.Op {
	case "load", "replace", "unload", "probe", "remove", "request", "autoclean", "mount", "umount", "apply":
		// Operations that may wait give up when shutdown begins.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(d.stopping, cancel)()
	}
	v, err := d.dispatch(ctx, req, progress)
	d.metrics.request(req.Op, err)
	return v, err
}

func (d *Daemon) dispatch(ctx context.Context, req *control.Request, progress func(any)) (any, error) {
	switch req.Op {
	case "ping":
		return Ping{Protocol: control.Version, PID: os.Getpid(), UID: os.Geteuid(), ModulesDir: d.cfg.ModulesDir,
			Tainted: d.host.TaintMask(), TaintFlags: d.host.TaintFlags(), Taints: d.host.Taints(),
			SigEnforce: d.cfg.Trust != nil && d.cfg.Trust.SignaturesEnforced(), HTTPAddr: d.HTTPAddr()}, nil
	case "sig_enforce":
		return d.opSigEnforce(req)
	case "list":
		var out []ModuleStatus
		for _, m := range d.host.Modules() {
			out = append(out, status(m))
		}
		return nonNilS(out), nil
	case "load":
		return d.opLoad(ctx, req)
	case "replace":
		return d.opReplace(ctx, req)
	case "unload":
		return d.opUnload(ctx, req, progress)
	case "autoclean":
		removed, err := d.autoclean(ctx)
		return nonNil(removed), err
	case "modinfo":
		return d.opModinfo(req)
	case "probe":
		return d.opProbe(ctx, req)
	case "remove":
		return d.opRemove(ctx, req)
	case "request":
		return d.opRequest(ctx, req)
	case "call":
		return d.opCall(ctx, req)
	case "signature":
		return d.opSignature(req)
	case "hook":
		if req.Name == "" {
			return nil, &control.Error{Code: control.CodeUsage, Message: "hook: no event given"}
		}
		var arg any
		if len(req.Names) > 0 {
			arg = strings.Join(req.Names, " ")
		}
		return nil, d.host.CallHooks(ctx, req.Name, arg)
	case "mount", "umount", "mounts", "read":
		return d.ns.handle(ctx, req)
	case "readdir":
		return d.opReadDir(req)
	case "apply", "diff":
		return d.opApply(ctx, req)
	}
	return nil, &control.Error{Code: control.CodeUsage, Message: fmt.Sprintf("unknown op %q", req.Op)}
}

func nonNilS(s []ModuleStatus) []ModuleStatus {
	if s == nil {
		return []ModuleStatus{}
	}
	return s
}

func (d *Daemon) opLoad(ctx context.Context, req *control.Request) (any, error) {
	src, err := d.openFile(req)
	if err != nil {
		return nil, err
	}
	m, err := d.load(ctx, src, req.Params)
	if err != nil {
		return nil, err
	}
	return status(m), nil
}

// opReplace hot-swaps the live module of the file's name for the file
// (Host.Replace): calls keep succeeding throughout.
func (d *Daemon) opReplace(ctx context.Context, req *control.Request) (any, error) {
	src, err := d.openFile(req)
	if err != nil {
		return nil, err
	}
	name := src.Info().Name
	m, err := d.host.Replace(ctx, name, src, req.Params, raceless.ReplaceOptions{Force: req.Force})
	if err != nil {
		d.metrics.failed(name, "replace")
		return nil, err
	}
	return status(m), nil
}

// openFile opens the loadable module named by req.Path.
func (d *Daemon) openFile(req *control.Request) (raceless.Source, error) {
	if req.Path == "" {
		return nil, &control.Error{Code: control.CodeUsage, Message: req.Op + ": no file given"}
	}
	if _, err := os.Stat(req.Path); err != nil {
		return nil, &control.Error{Code: control.CodeNotFound, Message: fmt.Sprintf("%s: No such file or directory", req.Path)}
	}
	if d.cfg.Open == nil {
		return nil, control.Unsupportedf("%s: loadable (wasm) modules are not built in this version", req.Path)
	}
	return d.cfg.Open(req.Path)
}

func (d *Daemon) opUnload(ctx context.Context, req *control.Request, progress func(any)) (any, error) {
	if req.Name == "" {
		return nil, &control.Error{Code: control.CodeUsage, Message: "unload: no module name given"}
	}
	opts := raceless.UnloadOptions{Wait: req.Wait, Force: req.Force}
	if req.Progress {
		opts.Progress = func(p raceless.Progress) { progress(p) }
	}
	if req.Timeout != "" {
		t, err := time.ParseDuration(req.Timeout)
		if err != nil || t <= 0 {
			return nil, &control.Error{Code: control.CodeUsage, Message: fmt.Sprintf("unload: bad timeout %q", req.Timeout)}
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	m, ok := d.host.Module(req.Name)
	err := d.unload(ctx, req.Name, opts)
	if err != nil && errors.Is(err, context.DeadlineExceeded) && ok {
		return nil, &control.Error{Code: control.CodeBusy, Module: req.Name, Refs: m.Refs(), Holders: m.Holders(),
			Reason: "timed out", Message: fmt.Sprintf("unload %s: timed out after %s with %d references held", req.Name, req.Timeout, m.Refs())}
	}
	return nil, err
}

// opSigEnforce reports signature enforcement, or with name "on" turns it
// on. Nothing turns it off while the daemon runs, as nothing turns the
// kernel's module.sig_enforce off: "off" is refused.
func (d *Daemon) opSigEnforce(req *control.Request) (any, error) {
	if d.cfg.Trust == nil {
		return nil, control.Unsupportedf("sig_enforce: loadable (wasm) modules are not built in this version")
	}
	switch req.Name {
	case "":
	case "on":
		if !d.cfg.Trust.SignaturesEnforced() {
			d.cfg.Trust.EnforceSignatures()
			d.log.Warn("module signature enforcement switched on: until the daemon stops, only modules signed by a key of the keyring load")
		}
	case "off":
		return nil, fmt.Errorf("signature enforcement cannot be switched off while the daemon runs (restart it without --sig-enforce): %w", raceless.ErrPermission)
	default:
		return nil, &control.Error{Code: control.CodeUsage, Message: fmt.Sprintf("sig_enforce: %q is neither on nor off", req.Name)}
	}
	return SigEnforce{SigEnforce: d.cfg.Trust.SignaturesEnforced()}, nil
}

func (d *Daemon) opModinfo(req *control.Request) (any, error) {
	if req.Path != "" {
		return d.inspect(req.Path)
	}
	if m, ok := d.host.Module(req.Name); ok {
		fn := m.Key()
		if strings.HasPrefix(fn, "native:") {
			return ModInfo{Filename: "(builtin)", Info: m.Info()}, nil
		}
		return d.inspectLoaded(m), nil
	}
	t, err := d.resolver.Lookup(req.Name)
	if err != nil {
		return nil, err
	}
	if t.Builtin {
		src, _ := d.resolver.Builtin(t.Name)
		return ModInfo{Filename: "(builtin)", Info: src.Info()}, nil
	}
	return d.inspect(t.Path)
}

// inspect reads a module file's modinfo and signature.
func (d *Daemon) inspect(path string) (ModInfo, error) {
	if d.cfg.Inspect == nil {
		return ModInfo{}, control.Unsupportedf("%s: loadable (wasm) modules are not built in this version", path)
	}
	return d.cfg.Inspect(path)
}

// inspectLoaded is the modinfo of a loaded module file: its Info as it was
// loaded, and the capabilities and signature of its file when the file is
// still what was loaded (its SHA-256 is the one in the module's key,
// "file:PATH@SUM").
func (d *Daemon) inspectLoaded(m *raceless.Instance) ModInfo {
	key := strings.TrimPrefix(m.Key(), "file:")
	path, sum := key, ""
	if i := strings.LastIndexByte(key, '@'); i >= 0 {
		path, sum = key[:i], key[i+1:]
	}
	mi := ModInfo{Filename: path, Info: m.Info()}
	if f, err := d.inspect(path); err == nil && f.Sum == sum {
		mi.Capabilities, mi.Signature = f.Capabilities, f.Signature
	} else if d.cfg.Inspect != nil {
		mi.Signature = &SigInfo{Status: "unknown", Error: "the file is no longer the one loaded"}
	}
	return mi
}

// opProbe is modprobe: resolve the name or alias, load what the index says
// it needs (last in the list first), then the module with the parameters.
func (d *Daemon) opProbe(ctx context.Context, req *control.Request) (any, error) {
	t, err := d.resolver.Lookup(req.Name)
	if err != nil {
		return nil, err
	}
	res := ProbeResult{Module: t.Name, Actions: []string{}}
	if m, ok := d.host.Module(t.Name); ok && m.State() == raceless.StateLive {
		if req.FirstTime {
			return nil, &control.Error{Code: control.CodeExists, Module: t.Name, Message: fmt.Sprintf("could not insert '%s': Module already in kernel", t.Name)}
		}
		return res, nil
	}
	steps, err := d.probeDeps(t)
	if err != nil {
		return nil, err
	}
	for _, s := range steps {
		if s.Builtin {
			res.Actions = append(res.Actions, "builtin "+s.Name)
		} else {
			res.Actions = append(res.Actions, "insmod "+s.Path)
		}
	}
	if t.Builtin {
		res.Actions = append(res.Actions, "builtin "+t.Name)
	} else {
		res.Actions = append(res.Actions, "insmod "+t.Path)
	}
	if req.DryRun {
		return res, nil
	}
	for _, s := range steps {
		src, err := d.resolver.Source(s)
		if err != nil {
			return nil, err
		}
		if _, err := d.load(ctx, src, nil); err != nil && !errors.Is(err, raceless.ErrExists) {
			return nil, err
		}
	}
	src, err := d.resolver.Source(t)
	if err != nil {
		return nil, err
	}
	_, err = d.load(ctx, src, req.Params)
	if errors.Is(err, raceless.ErrExists) && !req.FirstTime {
		err = nil // loaded meanwhile: modprobe succeeds
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// probeDeps returns what must be loaded before t, first to load first:
// for a file, what modules.dep lists (last first); for a built-in module,
// its Info.Depends, recursively. Live modules are skipped.
func (d *Daemon) probeDeps(t modindex.Target) ([]modindex.Target, error) {
	live := func(name string) bool {
		m, ok := d.host.Module(name)
		return ok && m.State() == raceless.StateLive
	}
	var steps []modindex.Target
	if !t.Builtin {
		for i := len(t.Deps) - 1; i >= 0; i-- {
			if name := modindex.NameOf(t.Deps[i]); !live(name) {
				steps = append(steps, modindex.Target{Name: name, Path: t.Deps[i]})
			}
		}
		return steps, nil
	}
	seen := map[string]bool{t.Name: true}
	var visit func(name string, depth int) error
	visit = func(name string, depth int) error {
		src, ok := d.resolver.Builtin(name)
		if !ok || depth > 32 {
			return nil
		}
		for _, dep := range src.Info().Depends {
			if seen[dep] || live(dep) {
				continue
			}
			seen[dep] = true
			dt, err := d.resolver.Lookup(dep)
			if err != nil {
				return fmt.Errorf("%s needs %s: %w", name, dep, err)
			}
			if err := visit(dt.Name, depth+1); err != nil {
				return err
			}
			steps = append(steps, dt)
		}
		return nil
	}
	return steps, visit(t.Name, 0)
}

// opRemove is modprobe -r: unload the module, then the modules it depended
// on that nothing uses any more.
func (d *Daemon) opRemove(ctx context.Context, req *control.Request) (any, error) {
	name := req.Name
	if _, ok := d.host.Module(name); !ok {
		t, err := d.resolver.Lookup(name)
		if err != nil {
			return nil, err
		}
		name = t.Name
	}
	m, ok := d.host.Module(name)
	if !ok {
		return nil, &control.Error{Code: control.CodeNotFound, Module: name, Message: fmt.Sprintf("Module %s is not in kernel.", name)}
	}
	res := ProbeResult{Module: name, Actions: []string{}}
	deps := m.Deps()
	if req.DryRun {
		res.Actions = append(res.Actions, "rmmod "+name)
		return res, nil
	}
	if err := d.unload(ctx, name, raceless.UnloadOptions{}); err != nil {
		return nil, err
	}
	res.Actions = append(res.Actions, "rmmod "+name)
	for len(deps) > 0 {
		dep := deps[0]
		deps = deps[1:]
		dm, ok := d.host.Module(dep)
		if !ok || dm.Refs() > 0 || len(dm.Holders()) > 0 {
			continue
		}
		more := dm.Deps()
		if err := d.unload(ctx, dep, raceless.UnloadOptions{}); err != nil {
			continue // in use after all: kept, as kmod keeps it
		}
		res.Actions = append(res.Actions, "rmmod "+dep)
		deps = append(deps, more...)
	}
	return res, nil
}

// opRequest demand-loads each name with Host.Request (request_module),
// Threads times each, all concurrently: kmod's test_kmod trigger.
func (d *Daemon) opRequest(ctx context.Context, req *control.Request) (any, error) {
	names := req.Names
	if req.Name != "" {
		names = append([]string{req.Name}, names...)
	}
	if len(names) == 0 {
		return nil, &control.Error{Code: control.CodeUsage, Message: "request: no module name given"}
	}
	threads := max(req.Threads, 1)
	out := make([]RequestResult, len(names)*threads)
	var wg sync.WaitGroup
	for i := range out {
		name := names[i%len(names)]
		wg.Go(func() {
			out[i].Name = name
			m, err := d.host.Request(ctx, name)
			if err != nil {
				we := control.ErrorOf(err)
				out[i].Error, out[i].Code = we.Message, we.Code
				return
			}
			out[i].Module = m.Name()
		})
	}
	wg.Wait()
	var failed []string
	for _, r := range out {
		if r.Error != "" {
			failed = append(failed, r.Error)
		}
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		e := control.ErrorOf(errors.New(failed[0]))
		for _, r := range out {
			if r.Error != "" {
				e.Code = r.Code
				break
			}
		}
		e.Message = fmt.Sprintf("%d of %d requests failed: %s", len(failed), len(out), failed[0])
		return nil, e
	}
	return out, nil
}

// opCall calls an exported raceless.Func symbol with the counting
// interface: the owner's reference is held for the call.
// Signature is the answer of the signature op: the value types of a
// symbol's parameters and results ("i32", "i64", "f32", "f64").
type Signature struct {
	Params  []string `json:"params"`
	Results []string `json:"results"`
}

// opSignature answers the types of the Func symbol req.Name, as its owner
// declares them (raceless.Signer: a wasm module always does), or null when
// they are not declared (a native module's Func may take and return any
// uint64). raceless call parses its arguments and prints its results with
// them.
func (d *Daemon) opSignature(req *control.Request) (any, error) {
	b, err := d.host.Acquire(raceless.KindSymbol, req.Name)
	if err != nil {
		return nil, err
	}
	defer b.Release()
	if _, ok := b.Value().(raceless.Func); !ok {
		return nil, fmt.Errorf("symbol %s of %s is a %T, not a function: %w", req.Name, b.Owner().Name(), b.Value(), raceless.ErrInvalid)
	}
	sig, ok := b.Signature()
	if !ok {
		return nil, nil
	}
	return Signature{Params: typeNames(sig.Params), Results: typeNames(sig.Results)}, nil
}

// typeNames names value types as the WebAssembly text format does.
func typeNames(ts []raceless.ValueType) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.String()
	}
	return out
}

func (d *Daemon) opCall(ctx context.Context, req *control.Request) (any, error) {
	b, err := d.host.Acquire(raceless.KindSymbol, req.Name)
	if err != nil {
		return nil, err
	}
	defer b.Release()
	f, ok := b.Value().(raceless.Func)
	if !ok {
		return nil, fmt.Errorf("symbol %s of %s is a %T, not a function: %w", req.Name, b.Owner().Name(), b.Value(), raceless.ErrInvalid)
	}
	res, err := f(ctx, req.Args)
	d.metrics.called(b.Owner().Name(), err)
	if res == nil {
		res = []uint64{}
	}
	return res, err
}
