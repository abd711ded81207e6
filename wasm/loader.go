package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/atomicfile"
	"github.com/raceless/raceless/wasm/modinfo"
	"github.com/raceless/raceless/wasm/modsig"
)

// Config configures a Loader. The zero value is usable: no on-disk cache,
// the default limits below.
type Config struct {
	// CacheDir is the directory of wazero's on-disk compilation cache,
	// shared by every Loader (and process) that names it. A second load
	// of the same file, even after it was unloaded or in a new process,
	// skips compilation. Empty means an in-memory cache only.
	CacheDir string
	// MemoryLimitPages is the most linear memory one instance may have,
	// in 64 KiB pages. Zero means DefaultMemoryLimitPages.
	MemoryLimitPages uint32
	// CallTimeout is the deadline of one call into a module (a symbol or
	// a hook, including what it calls). Zero means DefaultCallTimeout.
	// Negative disables deadlines (and the watchdog goroutine): a looping
	// module then runs until it is force-unloaded.
	CallTimeout time.Duration
	// InitTimeout is the deadline of the lifecycle points (instantiation,
	// init, start, stop, exit); init may load other modules, so it is
	// longer. Zero means DefaultInitTimeout.
	InitTimeout time.Duration
	// MaxFileSize is the largest module file Open accepts. Zero means
	// DefaultMaxFileSize.
	MaxFileSize int64
	// Stderr, if set, receives the guests' stdout and stderr as well
	// (each instance also keeps the last few KiB for error messages).
	Stderr io.Writer

	// SigCheck turns signature checking on, as the kernel's
	// CONFIG_MODULE_SIG does: a module that is unsigned, or signed by a
	// key not in Keyring, loads (unless SigEnforce) and taints itself with
	// raceless.TaintUnsignedModule. Without it such a module loads
	// untainted. A module whose signature does not verify is refused
	// (ErrKeyRejected) either way: it was changed after it was signed.
	SigCheck bool
	// Keyring holds the keys whose signatures are trusted; nil trusts none.
	Keyring *modsig.Keyring
	// SigEnforce refuses (ErrKeyRejected) every module not signed by a key
	// of Keyring, from the start; Loader.EnforceSignatures turns it on
	// later. It implies SigCheck.
	SigEnforce bool
	// Granter grants the capabilities modules declare in their modinfo
	// block; nil grants none, so a module that declares one fails to load
	// (ErrCapability). A module gets nothing from its host through WASI but
	// what it was granted, clocks and random numbers: no preopened
	// directory, no environment, no arguments.
	Granter Granter
}

// Defaults for Config.
const (
	DefaultMemoryLimitPages = 4096 // 256 MiB: a Go guest idles at a few MiB
	DefaultCallTimeout      = 10 * time.Second
	DefaultInitTimeout      = time.Minute
	DefaultMaxFileSize      = 64 << 20 // Go-built modules are 2-10 MiB
)

func (c Config) withDefaults() Config {
	if c.MemoryLimitPages == 0 {
		c.MemoryLimitPages = DefaultMemoryLimitPages
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.InitTimeout == 0 {
		c.InitTimeout = DefaultInitTimeout
	}
	if c.CallTimeout < 0 {
		c.InitTimeout = -1
	}
	if c.MaxFileSize <= 0 {
		c.MaxFileSize = DefaultMaxFileSize
	}
	return c
}

// Loader loads WebAssembly modules from files. It owns one wazero Runtime
// (with the WASI and "raceless" host modules instantiated once) and its
// compilation cache; every loaded module is its own instance in it.
//
// A Loader is safe for concurrent use. Close it after the hosts that
// loaded its modules have shut down: Close frees every instance, and calls
// into them then fail with ErrGone.
type Loader struct {
	cfg   Config
	rt    wazero.Runtime
	cache wazero.CompilationCache

	// tick counts watchdog periods; call deadlines are expressed in ticks
	// so that starting a call reads an atomic instead of the clock.
	tick   atomic.Int64
	period time.Duration
	// enforce is signature enforcement: set by Config.SigEnforce or
	// EnforceSignatures, never cleared.
	enforce atomic.Bool
	// callTicks and initTicks are Config.CallTimeout and InitTimeout in
	// ticks, rounded up, plus one for the tick in progress; noDeadline
	// when deadlines are off.
	callTicks, initTicks int64
	done                 chan struct{} // closed by Close: stops the watchdog and watchers
	// wg counts the watchdog, the watchers of Init and the compilations
	// in progress: Close waits for them before closing the runtime.
	wg sync.WaitGroup

	// mu guards the fields below. Lock order: a module's call lock, then
	// mu. mu is never held while guest code runs or a module compiles, so
	// that the watchdog ticks and other modules load and unload meanwhile.
	mu       sync.Mutex
	closed   bool
	compiled map[string]*compiled // by sha256 of the binary
	live     map[*instance]struct{}
	seq      uint64

	compileHook func(sum string) // tests: called as a compilation starts, without mu
}

// compiled is a CompiledModule shared by the instances of one binary; it is
// closed (its code freed) when the last of them is torn down. Loads of a
// binary that is compiling wait for that compilation (single flight).
type compiled struct {
	sum   string
	ready chan struct{} // closed once cm or err is set; they never change after
	cm    wazero.CompiledModule
	err   error
	refs  int // instances and loads holding it; guarded by Loader.mu
}

// NewLoader creates a Loader. ctx is used only for setting up the runtime.
func NewLoader(ctx context.Context, cfg Config) (*Loader, error) {
	cfg = cfg.withDefaults()
	var cache wazero.CompilationCache
	if cfg.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm: compilation cache %s: %w", cfg.CacheDir, err)
		}
		cache = c
	} else {
		cache = wazero.NewCompilationCache()
	}
	// No WithCloseOnContextDone: it makes wazero start a goroutine per
	// call (~0.3-1 µs, more than the call). Guests are interrupted by
	// the flag instrument adds instead (see "Why deadlines by watchdog?"
	// in doc.go).
	rc := wazero.NewRuntimeConfig().
		WithCompilationCache(cache).
		WithMemoryLimitPages(cfg.MemoryLimitPages)
	rt := wazero.NewRuntimeWithConfig(ctx, rc)
	l := &Loader{
		cfg: cfg, rt: rt, cache: cache, done: make(chan struct{}),
		compiled: map[string]*compiled{}, live: map[*instance]struct{}{},
	}
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		_ = rt.Close(ctx)
		_ = cache.Close(ctx)
		return nil, fmt.Errorf("wasm: WASI: %w", err)
	}
	if err := instantiateHost(ctx, rt); err != nil {
		_ = rt.Close(ctx)
		_ = cache.Close(ctx)
		return nil, fmt.Errorf("wasm: host module: %w", err)
	}
	if cfg.SigEnforce {
		l.enforce.Store(true)
	}
	l.callTicks, l.initTicks = noDeadline, noDeadline
	if cfg.CallTimeout > 0 {
		// The watchdog's resolution is an eighth of the shorter
		// deadline: calls overrun their deadline by at most ~12%.
		l.period = max(min(cfg.CallTimeout, cfg.InitTimeout)/8, time.Millisecond)
		l.callTicks = int64((cfg.CallTimeout+l.period-1)/l.period) + 1
		l.initTicks = int64((cfg.InitTimeout+l.period-1)/l.period) + 1
		l.wg.Add(1)
		go l.watchdog()
	}
	return l, nil
}

// EnforceSignatures turns signature enforcement on for good: from now on
// every module not signed by a key of the keyring is refused with
// ErrKeyRejected, including Sources opened before (Instantiate checks
// again). As the kernel's module.sig_enforce, there is no way to turn it
// off again: that takes a new Loader (a restart of the daemon).
func (l *Loader) EnforceSignatures() { l.enforce.Store(true) }

// SignaturesEnforced reports whether signature enforcement is on.
func (l *Loader) SignaturesEnforced() bool { return l.enforce.Load() }

// Keyring returns the keys the Loader trusts (Config.Keyring).
func (l *Loader) Keyring() *modsig.Keyring { return l.cfg.Keyring }

// trust checks a module's signature, sig, as enforcement stands now: nil
// lets the module load.
func (l *Loader) trust(name string, sig modsig.Result) error {
	switch {
	case sig.Status == modsig.Trusted:
		return nil
	case sig.Status == modsig.Bad:
		return fileErr("verify", name, fmt.Errorf("%w: %w", ErrKeyRejected, sig.Err))
	case l.enforce.Load():
		return fileErr("verify", name, fmt.Errorf("%w: %w (signatures are enforced)", ErrKeyRejected, sig.Err))
	}
	return nil
}

// Close frees every instance and compiled module of the Loader and closes
// its runtime and cache. Calls into instances still loaded fail with
// ErrGone. Close is idempotent.
func (l *Loader) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	insts := make([]*instance, 0, len(l.live))
	for in := range l.live {
		insts = append(insts, in)
	}
	l.mu.Unlock()
	close(l.done)
	for _, in := range insts {
		in.teardown(true)
	}
	l.wg.Wait()
	err := l.rt.Close(ctx)
	if cerr := l.cache.Close(ctx); err == nil {
		err = cerr
	}
	return err
}

// watchdog advances the tick and aborts instances whose call is past its
// deadline.
func (l *Loader) watchdog() {
	defer l.wg.Done()
	t := time.NewTicker(l.period)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
		}
		now := l.tick.Add(1)
		l.mu.Lock()
		for in := range l.live {
			in.checkDeadline(now)
		}
		l.mu.Unlock()
	}
}

// Source is a module file opened by a Loader: its bytes (read once, so a
// later change of the file does not affect it), its modinfo and its
// signature.
type Source struct {
	l    *Loader
	path string
	bin  []byte
	sum  string
	info raceless.Info
	caps []string      // the capabilities its modinfo block declares
	sig  modsig.Result // its signature, checked against the Loader's keyring when opened
	// memLimit is this module's memory limit in pages; 0 means the
	// Loader's (Config.MemoryLimitPages), which also caps it.
	memLimit uint32
}

// WithMemoryLimit returns a copy of s whose instances may grow their linear
// memory to at most pages 64 KiB pages (0: the Loader's limit, which also
// caps pages). A guest that asks for more gets a failed memory.grow: a Go
// guest then dies "out of memory", and the call fails with ErrLimit.
func (s *Source) WithMemoryLimit(pages uint32) *Source {
	c := *s
	c.memLimit = pages
	return &c
}

var _ raceless.Source = (*Source)(nil)

// Open reads and checks a module file: size, signature (before anything
// else of the file is read, as the kernel checks a module's signature
// first), wasm header, section structure, modinfo block and the ABI's
// required exports. It does not compile it (Instantiate does, through the
// cache). Errors are *FileError values naming path and wrapping a sentinel
// of this package.
func (l *Loader) Open(path string) (*Source, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fileErr("open", path, err)
	}
	bin, err := readFile(abs, l.cfg.MaxFileSize)
	if err != nil {
		return nil, err
	}
	return l.OpenBytes(abs, bin)
}

// OpenBytes is Open for a module already in memory; name stands for the
// path in Key and in errors. The Source keeps bin; do not modify it.
func (l *Loader) OpenBytes(name string, bin []byte) (*Source, error) {
	if int64(len(bin)) > l.cfg.MaxFileSize {
		return nil, fileErr("open", name, fmt.Errorf("%d bytes, limit %d: %w", len(bin), l.cfg.MaxFileSize, ErrTooLarge))
	}
	sig := l.cfg.Keyring.Check(bin)
	if err := l.trust(name, sig); err != nil {
		return nil, err
	}
	blk, err := checkBinary(name, bin)
	if err != nil {
		return nil, err
	}
	names, err := exportNames(bin)
	if err != nil {
		return nil, fileErr("open", name, err)
	}
	for _, e := range []struct {
		name string
		kind byte
	}{{"raceless_init", 0}, {"raceless_exit", 0}, {"memory", 2}} {
		if k, ok := names[e.name]; !ok || k != e.kind {
			return nil, fileErr("open", name, fmt.Errorf("export %q: %w", e.name, ErrMissingExport))
		}
	}
	sum := sha256.Sum256(bin)
	return &Source{l: l, path: name, bin: bin, sum: hex.EncodeToString(sum[:]), info: blk.Info, caps: blk.Capabilities, sig: sig}, nil
}

// ReadInfo returns the modinfo block of a module file without compiling or
// instantiating it (what depmod reads).
func ReadInfo(path string) (raceless.Info, error) {
	bin, err := readFile(path, DefaultMaxFileSize)
	if err != nil {
		return raceless.Info{}, err
	}
	blk, err := checkBinary(path, bin)
	return blk.Info, err
}

// FileInfo is what `modinfo FILE` shows of a module file.
type FileInfo struct {
	Block modinfo.Block // its modinfo block, capabilities included
	// Signature is its signature checked against a keyring (Inspect's).
	Signature modsig.Result
	// Sum is the SHA-256 of the file, in hexadecimal, as in Source.Key.
	Sum string
}

// Inspect reads a module file's modinfo block and checks its signature
// against keys (nil trusts none), without compiling or instantiating it.
// A bad signature is reported in FileInfo.Signature, not as an error: a
// file modinfo cannot load may still be looked at.
func Inspect(path string, keys *modsig.Keyring) (FileInfo, error) {
	bin, err := readFile(path, DefaultMaxFileSize)
	if err != nil {
		return FileInfo{}, err
	}
	blk, err := checkBinary(path, bin)
	if err != nil {
		return FileInfo{}, err
	}
	sum := sha256.Sum256(bin)
	return FileInfo{Block: blk, Signature: keys.Check(bin), Sum: hex.EncodeToString(sum[:])}, nil
}

func readFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fileErr("open", path, err)
	}
	defer f.Close()
	// Read into a buffer of the file's size, as os.ReadFile does (plus
	// room to see the end of a file still growing): io.ReadAll would grow
	// and copy it a dozen times for a Go-built module.
	size := 512
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		size += int(min(fi.Size(), limit))
	}
	bin := make([]byte, 0, size)
	r := io.LimitReader(f, limit+1)
	for {
		if len(bin) == cap(bin) {
			bin = append(bin, 0)[:len(bin)]
		}
		n, err := r.Read(bin[len(bin):cap(bin)])
		bin = bin[:len(bin)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fileErr("read", path, err)
		}
	}
	if int64(len(bin)) > limit {
		return nil, fileErr("open", path, fmt.Errorf("more than %d bytes: %w", limit, ErrTooLarge))
	}
	return bin, nil
}

// checkBinary checks the header and section structure and decodes modinfo.
func checkBinary(name string, bin []byte) (modinfo.Block, error) {
	if len(bin) == 0 {
		return modinfo.Block{}, fileErr("open", name, ErrEmpty)
	}
	blk, err := modinfo.ReadBlock(bin)
	switch {
	case err == nil:
		return blk, nil
	case errors.Is(err, modinfo.ErrMalformed), errors.Is(err, modinfo.ErrTooLarge), errors.Is(err, modinfo.ErrDuplicate):
		return modinfo.Block{}, fileErr("modinfo", name, fmt.Errorf("%w: %w", ErrBadModinfo, err))
	default:
		return modinfo.Block{}, fileErr("open", name, err)
	}
}

// Info returns the module's modinfo block.
func (s *Source) Info() raceless.Info { return s.info }

// Capabilities returns the capabilities the module's modinfo block
// declares: what it will be granted, or refused.
func (s *Source) Capabilities() []string { return append([]string(nil), s.caps...) }

// Signature returns the module's signature as Open checked it against the
// Loader's keyring (Trusted, UnknownKey or Unsigned: a Source is never
// opened from a module whose signature is bad).
func (s *Source) Signature() modsig.Result { return s.sig }

// Key returns "file:" + absolute path + "@" + sha256 of the contents.
func (s *Source) Key() string { return "file:" + s.path + "@" + s.sum }

// Path returns the file's absolute path.
func (s *Source) Path() string { return s.path }

// Instantiate compiles the module (through the cache; instances of the
// same binary share the compiled code) and instantiates it, running the
// WASI reactor's _initialize if present. The guest's raceless_init runs
// later, in the returned module's Init.
func (s *Source) Instantiate(ctx context.Context) (raceless.Module, error) {
	return s.l.instantiate(ctx, s)
}

// acquireCompiled returns the compiled module of src, compiling it if no
// instance of it is loaded (or waiting for the load that is compiling it),
// and takes a reference on it: release it with releaseCompiled.
func (l *Loader) acquireCompiled(ctx context.Context, src *Source) (*compiled, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, fileErr("compile", src.path, ErrClosed)
	}
	c := l.compiled[src.sum]
	if c != nil {
		c.refs++
		l.mu.Unlock()
		select {
		case <-c.ready:
		case <-ctx.Done():
			l.releaseCompiled(c)
			return nil, fileErr("compile", src.path, context.Cause(ctx))
		}
	} else {
		c = &compiled{sum: src.sum, ready: make(chan struct{}), refs: 1}
		l.compiled[src.sum] = c
		l.wg.Add(1) // Close closes the runtime after this compilation
		l.mu.Unlock()
		c.cm, c.err = l.compile(ctx, src)
		l.mu.Lock()
		if c.err != nil && l.compiled[c.sum] == c {
			delete(l.compiled, c.sum) // the next load tries afresh
		}
		close(c.ready)
		l.mu.Unlock()
		l.wg.Done()
	}
	if c.err != nil {
		l.releaseCompiled(c)
		return nil, c.err
	}
	return c, nil
}

// compile instruments, compiles and link-checks src.
func (l *Loader) compile(ctx context.Context, src *Source) (wazero.CompiledModule, error) {
	if l.compileHook != nil {
		l.compileHook(src.sum)
	}
	bin, cached, err := l.instrumented(src)
	if err != nil {
		return nil, fileErr("compile", src.path, fmt.Errorf("%w: %v", ErrCompile, err))
	}
	cm, err := l.rt.CompileModule(ctx, bin)
	if err != nil && cached {
		// A damaged cache file: instrument afresh (and replace it).
		l.dropInstrumented(src)
		if bin, _, err = l.instrumented(src); err == nil {
			cm, err = l.rt.CompileModule(ctx, bin)
		}
	}
	if err != nil {
		return nil, fileErr("compile", src.path, fmt.Errorf("%w: %v", ErrCompile, err))
	}
	if err := checkLinks(cm); err != nil {
		_ = cm.Close(ctx)
		return nil, fileErr("compile", src.path, err)
	}
	return cm, nil
}

// instrumented returns src's binary with interrupt checks (instrument). With
// a CacheDir, the result is kept there, next to wazero's compiled code, so
// that a later load (in this process or another) reads it instead of
// rewriting the code section again (~7 ms for a Go-built module, a seventh
// of a warm load). cached reports that it came from the file.
func (l *Loader) instrumented(src *Source) (bin []byte, cached bool, err error) {
	path := l.instrumentedPath(src)
	if path != "" {
		if bin, err := os.ReadFile(path); err == nil {
			return bin, true, nil
		}
	}
	if bin, err = instrument(src.bin); err != nil {
		return nil, false, err
	}
	if path != "" {
		_ = writeFileAtomic(path, bin) // best effort: a failure costs the next load the pass
	}
	return bin, false, nil
}

func (l *Loader) instrumentedPath(src *Source) string {
	if l.cfg.CacheDir == "" {
		return ""
	}
	return filepath.Join(l.cfg.CacheDir, fmt.Sprintf("raceless-instrumented-v%d", instrumentVersion), src.sum+".wasm")
}

func (l *Loader) dropInstrumented(src *Source) {
	if path := l.instrumentedPath(src); path != "" {
		_ = os.Remove(path)
	}
}

// writeFileAtomic writes a cache file (mode 0600, creating its directory
// with mode 0700) with atomicfile.WriteFile, so that a concurrent reader
// (another process sharing the cache) sees all of it or nothing.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o600)
}

// releaseCompiled drops a reference taken by acquireCompiled; the last one
// closes the compiled module.
func (l *Loader) releaseCompiled(c *compiled) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.refs--; c.refs > 0 {
		return
	}
	if l.compiled[c.sum] == c {
		delete(l.compiled, c.sum)
	}
	if c.cm != nil {
		_ = c.cm.Close(context.Background())
	}
}
