package modindex

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/raceless/raceless"
)

// OpenFunc opens a loadable module file as a Source (wasm's loader).
type OpenFunc func(path string) (raceless.Source, error)

// Target is what a name or alias resolves to.
type Target struct {
	Name    string   `json:"name"`
	Alias   string   `json:"alias,omitempty"`   // the alias it was found through
	Builtin bool     `json:"builtin,omitempty"` // a native module of the host
	Path    string   `json:"path,omitempty"`    // absolute path of the file
	Deps    []string `json:"deps,omitempty"`    // absolute paths, to load last first
}

// Resolver resolves names and aliases over the host's built-in (native)
// modules and a module directory's index; it is the daemon's
// raceless.Resolver. The index is read again whenever its files change, as
// modprobe reads it on every run. It is safe for concurrent use.
type Resolver struct {
	dir      string // "" when there is no module directory
	open     OpenFunc
	builtins map[string]raceless.Source
	aliases  []Alias // built-in modules' aliases, in registration order
	aliasIdx *aliasIndex

	mu    sync.Mutex // guards log, idx, stamp and err
	log   *slog.Logger
	idx   *Index
	stamp string
	err   error
}

// SetLogger sets where the resolver warns (an index entry shadowed by a
// built-in module); by default, slog.Default().
func (r *Resolver) SetLogger(l *slog.Logger) {
	r.mu.Lock()
	r.log = l
	r.mu.Unlock()
}

// NewResolver returns a resolver over builtins and, when dir is not empty,
// the index of dir (whose files open opens).
func NewResolver(dir string, builtins []raceless.Source, open OpenFunc) *Resolver {
	r := &Resolver{dir: dir, open: open, builtins: make(map[string]raceless.Source)}
	r.AddBuiltins(builtins...)
	return r
}

// AddBuiltins adds built-in modules. It must be called before the resolver
// is used (a host's built-in modules may need the host, which needs the
// resolver).
func (r *Resolver) AddBuiltins(srcs ...raceless.Source) {
	for _, s := range srcs {
		info := s.Info()
		r.builtins[info.Name] = s
		for _, a := range info.Aliases {
			r.aliases = append(r.aliases, Alias{Glob: a, Module: info.Name})
		}
	}
	r.aliasIdx = newAliasIndex(r.aliases)
}

// Dir returns the module directory ("" if none).
func (r *Resolver) Dir() string { return r.dir }

// Builtin returns the built-in module of that name.
func (r *Resolver) Builtin(name string) (raceless.Source, bool) {
	s, ok := r.builtins[name]
	return s, ok
}

// Index returns the module directory's current index (nil, nil when there
// is no directory), reading it again if its files changed.
func (r *Resolver) Index() (*Index, error) {
	if r.dir == "" {
		return nil, nil
	}
	stamp := ""
	for _, f := range []string{DepFile, AliasFile} {
		if st, err := os.Stat(filepath.Join(r.dir, f)); err == nil {
			stamp += fmt.Sprintf("%s:%d:%d;", f, st.Size(), st.ModTime().UnixNano())
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if stamp != "" && stamp == r.stamp {
		return r.idx, r.err
	}
	r.idx, r.err = Read(r.dir)
	r.stamp = stamp
	if r.idx != nil {
		log := r.log
		if log == nil {
			log = slog.Default()
		}
		for _, sh := range r.shadowed(r.idx) {
			log.Warn("module index entry shadowed by a built-in module of the same name; the built-in module wins (run depmod)", "module", sh.Name, "file", r.idx.Abs(sh.Path))
		}
	}
	return r.idx, r.err
}

// shadowed returns the entries of x that have a built-in module's name.
func (r *Resolver) shadowed(x *Index) []Entry {
	var out []Entry
	for _, e := range x.Entries {
		if _, ok := r.builtins[e.Name]; ok {
			out = append(out, e)
		}
	}
	return out
}

// Shadowed returns the absolute paths of the current index's files that
// have a built-in module's name: the resolver never uses them (depmod does
// not index such a file; an index written before the built-in module
// existed may still list it).
func (r *Resolver) Shadowed() []string {
	idx, _ := r.Index()
	if idx == nil {
		return nil
	}
	var out []string
	for _, e := range r.shadowed(idx) {
		out = append(out, idx.Abs(e.Path))
	}
	return out
}

// Lookup resolves a module name, or an alias glob match ("fs-TYPE",
// "symbol:NAME", anything a module declares), to a module. Names win over
// aliases, and a built-in module wins over a file of the directory with its
// name, as kmod's modules.builtin does: such a file is never loaded by name
// or alias, and is left out of the dependencies of the directory's modules
// (a built-in dependency is resolved by name). An alias must name a module:
// aliases cannot point to aliases. Unknown names
// are errors matching raceless.ErrNotFound; a broken index is an error
// matching raceless.ErrInvalid (never a silent success).
func (r *Resolver) Lookup(nameOrAlias string) (Target, error) {
	if nameOrAlias == "" {
		return Target{}, fmt.Errorf("empty module name: %w", raceless.ErrNotFound)
	}
	idx, ierr := r.Index()
	if t, ok := r.byName(idx, nameOrAlias); ok {
		return t, nil
	}
	mod, found := "", false
	if idx != nil {
		mod, found = idx.Match(nameOrAlias)
	}
	if !found {
		mod, found = r.aliasIdx.match(nameOrAlias)
	}
	if found {
		t, ok := r.byName(idx, mod)
		if !ok {
			return Target{}, fmt.Errorf("alias %s points to %s, which is not a module (aliases cannot point to aliases): %w", nameOrAlias, mod, raceless.ErrNotFound)
		}
		t.Alias = nameOrAlias
		return t, nil
	}
	if ierr != nil {
		return Target{}, fmt.Errorf("module %s: %w", nameOrAlias, ierr)
	}
	where := "among the built-in modules"
	if r.dir != "" {
		where = "in directory " + r.dir
	}
	return Target{}, fmt.Errorf("module %s not found %s: %w", nameOrAlias, where, raceless.ErrNotFound)
}

func (r *Resolver) byName(idx *Index, name string) (Target, bool) {
	if _, ok := r.builtins[name]; ok {
		return Target{Name: name, Builtin: true}, true
	}
	if e, ok := idx.Lookup(name); ok {
		t := Target{Name: e.Name, Path: idx.Abs(e.Path)}
		for _, d := range e.Deps {
			if _, builtin := r.builtins[NameOf(d)]; builtin {
				continue // shadowed: the module's Depends loads the built-in one
			}
			t.Deps = append(t.Deps, idx.Abs(d))
		}
		return t, true
	}
	return Target{}, false
}

// Source returns the Source of a resolved target.
func (r *Resolver) Source(t Target) (raceless.Source, error) {
	if t.Builtin {
		return r.builtins[t.Name], nil
	}
	if r.open == nil {
		return nil, fmt.Errorf("%s: loadable modules are not supported by this build: %w", t.Path, raceless.ErrNotFound)
	}
	return r.open(t.Path)
}

// Resolve implements raceless.Resolver.
func (r *Resolver) Resolve(ctx context.Context, nameOrAlias string) (raceless.Source, error) {
	t, err := r.Lookup(nameOrAlias)
	if err != nil {
		return nil, err
	}
	return r.Source(t)
}
