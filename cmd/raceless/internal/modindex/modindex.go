// Package modindex is raceless's depmod: it builds, writes and reads the
// module index of a module directory in kmod's text formats (modules.dep and
// modules.alias), and resolves module names, alias globs, "fs-TYPE" and
// "symbol:NAME" through it for demand loading (a raceless.Resolver).
//
// modules.dep has one line per module, its path relative to the directory,
// a colon, and the paths of every module it needs (transitively), the one
// to load last first:
//
//	b.wasm: a.wasm
//	a.wasm:
//
// modules.alias starts with "# Aliases extracted from modules themselves."
// and has one "alias <glob> <module>" line per alias. A module's name is its
// file name without ".wasm". Aliases point to module names, never to other
// aliases.
//
// A module needs the modules it names in depends and, as kmod's depmod
// finds from a module's undefined symbols, the modules exporting the
// symbols it declares in imports: the module whose "symbol:NAME" alias
// matches each.
package modindex

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/atomicfile"
)

// File names inside a module directory.
const (
	DepFile   = "modules.dep"
	AliasFile = "modules.alias"
	// AliasHeader is the first line of modules.alias, as kmod writes it.
	AliasHeader = "# Aliases extracted from modules themselves."
	// Ext is the extension of loadable module files.
	Ext = ".wasm"
)

// Alias maps a glob (path.Match syntax) to a module name.
type Alias struct {
	Glob   string `json:"glob"`
	Module string `json:"module"`
}

// Entry is one module of the index.
type Entry struct {
	Name string   `json:"name"`
	Path string   `json:"path"` // relative to the directory, slash-separated
	Deps []string `json:"deps"` // relative paths, to load last first
}

// Index is a module directory's index. It is immutable once built.
type Index struct {
	Dir     string
	Entries []Entry // in modules.dep order (sorted by path)
	Aliases []Alias // in modules.alias order
	byName  map[string]int

	aliasOnce sync.Once
	aliases   *aliasIndex // Aliases indexed, on first Match
}

// Lookup returns the entry of a module name.
func (x *Index) Lookup(name string) (Entry, bool) {
	if x == nil {
		return Entry{}, false
	}
	i, ok := x.byName[name]
	if !ok {
		return Entry{}, false
	}
	return x.Entries[i], true
}

// Match returns the module name the first alias glob matching s points to.
func (x *Index) Match(s string) (string, bool) {
	if x == nil {
		return "", false
	}
	x.aliasOnce.Do(func() { x.aliases = newAliasIndex(x.Aliases) })
	return x.aliases.match(s)
}

// aliasIndex finds the first of a list of alias globs that matches a name
// without trying them all: most aliases (every "symbol:NAME") have no
// wildcard and are found in a map; only the globs are tried in turn, and
// only those before the first exact match (kmod indexes its aliases in a
// trie for the same reason).
type aliasIndex struct {
	list  []Alias
	exact map[string]int // an alias without wildcards -> its first index in list
	globs []int          // the indexes of the others, in order
}

func newAliasIndex(list []Alias) *aliasIndex {
	ix := &aliasIndex{list: list, exact: make(map[string]int)}
	for i, a := range list {
		if strings.ContainsAny(a.Glob, `*?[\`) {
			ix.globs = append(ix.globs, i)
		} else if _, dup := ix.exact[a.Glob]; !dup {
			ix.exact[a.Glob] = i
		}
	}
	return ix
}

func (ix *aliasIndex) match(s string) (string, bool) {
	best, ok := ix.exact[s]
	if !ok {
		best = len(ix.list)
	}
	for _, i := range ix.globs {
		if i > best {
			break
		}
		if m, err := path.Match(ix.list[i].Glob, s); err == nil && m {
			best = i
			break
		}
	}
	if best == len(ix.list) {
		return "", false
	}
	return ix.list[best].Module, true
}

// Abs returns the absolute file path of an index-relative path.
func (x *Index) Abs(rel string) string { return filepath.Join(x.Dir, filepath.FromSlash(rel)) }

// NameOf returns the module name of a module file path: its base name
// without ".wasm".
func NameOf(p string) string { return strings.TrimSuffix(filepath.Base(p), Ext) }

// Warning is a problem depmod reports without failing.
type Warning string

// Build reads the metadata of every .wasm file under dir (with readInfo)
// and returns the index. builtin names modules that exist without a file
// (the host's native modules, kmod's modules.builtin): depending on one is
// not an error, and a file with a built-in module's name is not indexed
// (the built-in module wins; a warning names the file). A file readInfo
// refuses (not a module, a malformed modinfo section) is skipped with a
// warning naming it, and the others are indexed. Unknown dependencies and
// alias clashes are warnings too, as kmod's depmod prints them; a
// dependency cycle is an error wrapping raceless.ErrCycle, and a directory
// that cannot be walked is an error.
//
// A module depends on the modules it lists in Info.Depends and on those
// that provide the symbols it lists in Info.Imports, exactly as if it
// listed them in Depends: the indexed module whose alias (in modules.alias
// order) matches "symbol:NAME". An import no indexed module provides is a
// warning ("m.wasm needs unknown symbol NAME", kmod's text). Build knows
// built-in modules by name only, so an import only a built-in module
// provides is such a warning too: BuildWithBuiltins knows their aliases.
func Build(dir string, readInfo func(path string) (raceless.Info, error), builtin func(name string) bool) (*Index, []Warning, error) {
	return buildIndex(dir, readInfo, builtin, nil)
}

// BuildWithBuiltins is Build with the built-in modules given by their
// modinfo: their names, as Build's builtin, and their aliases, so that an
// import a built-in module provides ("symbol:NAME" matching one of its
// aliases, after the directory's) is neither a warning nor a line of
// modules.dep (a built-in module is loaded by name, as a dependency on one
// is).
func BuildWithBuiltins(dir string, readInfo func(path string) (raceless.Info, error), builtins []raceless.Info) (*Index, []Warning, error) {
	names := make(map[string]bool, len(builtins))
	var aliases []Alias
	for _, b := range builtins {
		names[b.Name] = true
		for _, a := range b.Aliases {
			aliases = append(aliases, Alias{Glob: a, Module: b.Name})
		}
	}
	return buildIndex(dir, readInfo, func(n string) bool { return names[n] }, aliases)
}

func buildIndex(dir string, readInfo func(path string) (raceless.Info, error), builtin func(name string) bool, builtinAliases []Alias) (*Index, []Warning, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, nil, err
	}
	var files []string
	err = filepath.WalkDir(abs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, Ext) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(files)
	var warns []Warning
	x := &Index{Dir: abs, byName: make(map[string]int)}
	infos := make(map[string]raceless.Info)
	for _, f := range files {
		rel, _ := filepath.Rel(abs, f)
		rel = filepath.ToSlash(rel)
		name := NameOf(f)
		if builtin != nil && builtin(name) {
			// kmod: a built-in module wins over a file of its name
			// (modules.builtin); the file is never loaded by name.
			warns = append(warns, Warning(fmt.Sprintf("%s: module %s is built in; file not indexed (the built-in module wins)", rel, name)))
			continue
		}
		info, err := readInfo(f)
		if err != nil {
			// kmod's depmod warns about a module it cannot read and
			// indexes the others.
			warns = append(warns, Warning(fmt.Sprintf("%s: not indexed: %v", rel, oneLine(err))))
			continue
		}
		if info.Name != name {
			warns = append(warns, Warning(fmt.Sprintf("%s: module name %q differs from its file name; indexed as %q", rel, info.Name, name)))
		}
		if j, dup := x.byName[name]; dup {
			warns = append(warns, Warning(fmt.Sprintf("%s: module %s already indexed from %s; ignored", rel, name, x.Entries[j].Path)))
			continue
		}
		x.byName[name] = len(x.Entries)
		x.Entries = append(x.Entries, Entry{Name: name, Path: rel})
		infos[name] = info
	}
	// The aliases first: an import is resolved through them. Their
	// warnings come after the dependencies' (as before imports existed).
	var aliasWarns []Warning
	for _, e := range x.Entries {
		for _, a := range infos[e.Name].Aliases {
			if _, err := path.Match(a, ""); err != nil {
				aliasWarns = append(aliasWarns, Warning(fmt.Sprintf("%s: malformed alias %q ignored", e.Path, a)))
				continue
			}
			x.Aliases = append(x.Aliases, Alias{Glob: a, Module: e.Name})
		}
	}
	// needs returns the indexed modules a module needs directly: its
	// depends, then the providers of its imports, each once. Unknown ones
	// are warnings; built-in ones are left out (loaded by name). Computed
	// once per module: the transitive walks below ask again and again.
	aliasIdx, builtinIdx := newAliasIndex(x.Aliases), newAliasIndex(builtinAliases)
	needed := map[string][]string{}
	var directNeeds func(name string) []string
	needs := func(name string) []string {
		if out, ok := needed[name]; ok {
			return out
		}
		out := directNeeds(name)
		needed[name] = out
		return out
	}
	directNeeds = func(name string) []string {
		file := x.Entries[x.byName[name]].Path
		var out []string
		add := func(d string) {
			if !slices.Contains(out, d) {
				out = append(out, d)
			}
		}
		for _, d := range infos[name].Depends {
			if _, ok := x.byName[d]; !ok {
				if builtin == nil || !builtin(d) {
					warns = append(warns, Warning(fmt.Sprintf("%s needs unknown module %s", file, d)))
				}
				continue
			}
			add(d)
		}
		for _, sym := range infos[name].Imports {
			if p, ok := aliasIdx.match("symbol:" + sym); ok {
				if p != name { // its own symbol: nothing to load first
					add(p)
				}
				continue
			}
			if _, ok := builtinIdx.match("symbol:" + sym); !ok {
				warns = append(warns, Warning(fmt.Sprintf("%s needs unknown symbol %s", file, sym)))
			}
		}
		return out
	}
	// Transitive dependencies, depth first; the deepest ends up last, so
	// that loading the list back to front loads each module after what it
	// needs (kmod's order).
	for i := range x.Entries {
		e := &x.Entries[i]
		var order []string
		seen := map[string]bool{}
		var visit func(name string, chain []string) error
		visit = func(name string, chain []string) error {
			for _, c := range chain {
				if c == name {
					return fmt.Errorf("%s: dependency cycle %s -> %s: %w", e.Path, strings.Join(chain, " -> "), name, raceless.ErrCycle)
				}
			}
			for _, d := range needs(name) {
				if err := visit(d, append(chain, name)); err != nil {
					return err
				}
				if !seen[d] {
					seen[d] = true
					order = append(order, d)
				}
			}
			return nil
		}
		if err := visit(e.Name, nil); err != nil {
			return nil, warns, err
		}
		// order is post-order (deepest first); kmod lists the module to
		// load last first.
		for j := len(order) - 1; j >= 0; j-- {
			e.Deps = append(e.Deps, x.Entries[x.byName[order[j]]].Path)
		}
	}
	return x, dedupe(append(warns, aliasWarns...)), nil
}

// oneLine returns err's text with line breaks folded, so that a warning is
// one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func dedupe(w []Warning) []Warning {
	seen := map[Warning]bool{}
	var out []Warning
	for _, s := range w {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// Encode returns the contents of modules.dep and modules.alias.
func (x *Index) Encode() (dep, alias []byte) {
	var d, a bytes.Buffer
	for _, e := range x.Entries {
		d.WriteString(e.Path + ":")
		for _, p := range e.Deps {
			d.WriteString(" " + p)
		}
		d.WriteByte('\n')
	}
	a.WriteString(AliasHeader + "\n")
	for _, al := range x.Aliases {
		fmt.Fprintf(&a, "alias %s %s\n", al.Glob, al.Module)
	}
	return d.Bytes(), a.Bytes()
}

// Write writes modules.dep and modules.alias into x.Dir (mode 0644), each
// replaced atomically (atomicfile.WriteFile: a temporary file in x.Dir,
// synced, then renamed).
func (x *Index) Write() error {
	dep, alias := x.Encode()
	if err := atomicfile.WriteFile(filepath.Join(x.Dir, DepFile), dep, 0o644); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(x.Dir, AliasFile), alias, 0o644)
}

// ErrNoIndex is returned by Read when the directory has no modules.dep:
// depmod has not been run. It matches raceless.ErrNotFound.
var ErrNoIndex = fmt.Errorf("module index not found (run depmod): %w", raceless.ErrNotFound)

// ErrMalformed is returned by Read for a broken index; it names the file
// and line and matches raceless.ErrInvalid.
var ErrMalformed = fmt.Errorf("malformed module index: %w", raceless.ErrInvalid)

// Read parses the index of dir. A missing modules.dep is ErrNoIndex; a
// missing modules.alias is an empty alias list; a malformed line in either
// is ErrMalformed naming the file and line.
func Read(dir string) (*Index, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	x := &Index{Dir: abs, byName: make(map[string]int)}
	depPath := filepath.Join(abs, DepFile)
	f, err := os.Open(depPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", depPath, ErrNoIndex)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, deps, ok := strings.Cut(line, ":")
		if !ok || mod == "" || strings.ContainsAny(mod, " \t") || !strings.HasSuffix(mod, Ext) {
			return nil, fmt.Errorf("%s:%d: %w: want \"path%s: dep%s ...\"", depPath, n, ErrMalformed, Ext, Ext)
		}
		name := NameOf(mod)
		if !raceless.ValidName(name) {
			return nil, fmt.Errorf("%s:%d: %w: invalid module name %q", depPath, n, ErrMalformed, name)
		}
		e := Entry{Name: name, Path: mod, Deps: strings.Fields(deps)}
		for _, d := range e.Deps {
			if !strings.HasSuffix(d, Ext) {
				return nil, fmt.Errorf("%s:%d: %w: dependency %q is not a %s path", depPath, n, ErrMalformed, d, Ext)
			}
		}
		if _, dup := x.byName[name]; dup {
			return nil, fmt.Errorf("%s:%d: %w: module %s listed twice", depPath, n, ErrMalformed, name)
		}
		x.byName[name] = len(x.Entries)
		x.Entries = append(x.Entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", depPath, err)
	}
	aliasPath := filepath.Join(abs, AliasFile)
	a, err := os.Open(aliasPath)
	if errors.Is(err, fs.ErrNotExist) {
		return x, nil
	}
	if err != nil {
		return nil, err
	}
	defer a.Close()
	sc = bufio.NewScanner(a)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 3 || fields[0] != "alias" {
			return nil, fmt.Errorf("%s:%d: %w: want \"alias <glob> <module>\"", aliasPath, n, ErrMalformed)
		}
		if _, err := path.Match(fields[1], ""); err != nil {
			return nil, fmt.Errorf("%s:%d: %w: bad glob %q", aliasPath, n, ErrMalformed, fields[1])
		}
		x.Aliases = append(x.Aliases, Alias{Glob: fields[1], Module: fields[2]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", aliasPath, err)
	}
	return x, nil
}
