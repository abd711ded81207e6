package httpwasm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm"
	"github.com/raceless/raceless/wasm/modinfo"
	"github.com/raceless/raceless/wasm/modsig"
)

// IsGuest reports whether bin is a wasm binary that imports from the
// module "http_handler": an http-wasm handler guest, for this package
// rather than the raceless module loader (package wasm).
func IsGuest(bin []byte) bool {
	secs, err := modinfo.Sections(bin)
	if err != nil {
		return false
	}
	for _, s := range secs {
		if s.ID == 2 {
			return importsModule(s.Payload, "http_handler")
		}
	}
	return false
}

// importsModule walks an import section's entries for one from module.
func importsModule(p []byte, module string) bool {
	n, off, err := modinfo.Uleb32(p)
	if err != nil {
		return false
	}
	name := func() (string, bool) {
		l, k, err := modinfo.Uleb32(p[off:])
		if err != nil || uint64(l) > uint64(len(p)-off-k) {
			return "", false
		}
		s := string(p[off+k : off+k+int(l)])
		off += k + int(l)
		return s, true
	}
	skipUleb := func() bool {
		_, k, err := modinfo.Uleb32(p[off:])
		off += k
		return err == nil
	}
	skipLimits := func() bool {
		if off >= len(p) {
			return false
		}
		flags := p[off]
		off++
		if !skipUleb() {
			return false
		}
		if flags&1 != 0 {
			return skipUleb()
		}
		return true
	}
	for range n {
		mod, ok := name()
		if !ok {
			return false
		}
		if mod == module {
			return true
		}
		if _, ok := name(); !ok || off >= len(p) {
			return false
		}
		kind := p[off]
		off++
		switch kind {
		case 0: // func: type index
			ok = skipUleb()
		case 1: // table: reftype, limits
			off++
			ok = off <= len(p) && skipLimits()
		case 2: // memory: limits
			ok = skipLimits()
		case 3: // global: valtype, mutability
			off += 2
			ok = off <= len(p)
		default:
			return false
		}
		if !ok {
			return false
		}
	}
	return false
}

// Open reads the http-wasm guest at path as a route module: its modinfo
// block names it and gives its routes (and pool size); its signature is
// checked against keys as the module loader checks one (a bad signature
// is refused always, a missing or unknown one when enforce is set,
// wrapping wasm.ErrKeyRejected). A guest without a modinfo block or
// without routes is refused (raceless.ErrInvalid).
func (r *Runtime) Open(ctx context.Context, path string, keys *modsig.Keyring, enforce bool) (raceless.Source, error) {
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if int64(len(bin)) > wasm.DefaultMaxFileSize {
		return nil, fmt.Errorf("%s: more than %d bytes: %w", path, wasm.DefaultMaxFileSize, wasm.ErrTooLarge)
	}
	sig := keys.Check(bin)
	switch {
	case sig.Status == modsig.Trusted:
	case sig.Status == modsig.Bad, enforce:
		return nil, fmt.Errorf("verify %s: %w: %w", path, wasm.ErrKeyRejected, sig.Err)
	}
	blk, err := modinfo.ReadBlock(bin)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, wasm.ErrBadModinfo, err)
	}
	if len(blk.Routes) == 0 && !blk.Middleware {
		return nil, fmt.Errorf("%s: http-wasm guest %s declares neither routes nor middleware (modinfo \"routes\", \"middleware\"): %w", path, blk.Name, raceless.ErrInvalid)
	}
	sum := sha256.Sum256(bin)
	src, err := r.Source(ctx, blk.Info, bin, Options{Patterns: blk.Routes, PoolSize: blk.Pool, Middleware: blk.Middleware})
	if err != nil {
		return nil, err
	}
	// The key has the module loader's form: the daemon's modinfo reads the
	// file and sum back from it.
	src.(*source).key = "file:" + path + "@" + hex.EncodeToString(sum[:])
	return src, nil
}
