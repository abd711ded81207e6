package desired

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/raceless/raceless"
)

// Why TOML, read with github.com/BurntSushi/toml:
//
//   - The format is modules-load.d, modprobe.d and fstab in spirit: a few
//     flat records, written and commented by people. TOML has comments,
//     no significant indentation (YAML's) and no trailing-comma or
//     quoting traps (JSON's), and its arrays of tables ([[module]]) are
//     exactly "one record per entry".
//   - BurntSushi/toml is the most used Go TOML parser, kept since 2013,
//     with no dependencies, and it implements TOML 1.0 (tested against
//     toml-test). Its syntax errors are toml.ParseError with a Position
//     (line, column); its type errors name the line and the last key; and
//     MetaData.Undecoded lists the keys no field took, so that an unknown
//     key (a typo: "nmae") is refused instead of silently ignored.
//   - It does not expose the positions of the keys it decoded (v1.6.0
//     keeps them unexported), which semantic checks (a bad digest, both
//     name and file) need: locate, below, finds them by reading the file's
//     table headers and "key =" lines, in document order.

// ErrInvalid is wrapped by every refusal of a desired state file: a syntax
// error, a value of the wrong type, an unknown key, a missing or
// contradictory field, a duplicate. It also matches raceless.ErrInvalid
// (errors.Is), so that the command line exits 7 ("invalid") for it.
var ErrInvalid error = invalidError{}

type invalidError struct{}

func (invalidError) Error() string { return "invalid desired state" }
func (invalidError) Unwrap() error { return raceless.ErrInvalid }

// Error is a refusal of a desired state file, at a line and a field.
type Error struct {
	File  string // the file, as named to Parse or found by Load
	Line  int    // 1-based; 0 when the field has no line of its own
	Field string // "module[1].digest", "mount[0].target", "http.middleware"; "" for a syntax error
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	b.WriteString(": invalid desired state")
	return b.String()
}

// Unwrap makes every Error match ErrInvalid (and so raceless.ErrInvalid).
func (e *Error) Unwrap() error { return ErrInvalid }

// Load reads the desired state at path: one TOML file, or a directory of
// them. A directory's state is the merge of every regular file whose name
// ends in ".toml" and does not start with "." (editors' temporary files),
// read in lexical order of their names: their modules and mounts, in that
// order. A module (the same name, or the same file), a mount (the same
// target) or [http] middleware named by two files is refused, naming both.
// An empty directory is a valid, empty state.
func Load(path string) (*State, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("desired state %s: %w", path, err)
	}
	if !fi.IsDir() {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("desired state %s: %w", path, err)
		}
		return Parse(path, data)
	}
	ents, err := os.ReadDir(path) // sorted by name
	if err != nil {
		return nil, fmt.Errorf("desired state %s: %w", path, err)
	}
	var parts []*State
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".toml") || !e.Type().IsRegular() {
			continue
		}
		file := filepath.Join(path, name)
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("desired state %s: %w", file, err)
		}
		s, err := Parse(file, data)
		if err != nil {
			return nil, err
		}
		parts = append(parts, s)
	}
	return merge(parts)
}

// Parse reads one desired state file's bytes. name is the file's path: it
// names the file in errors, and a relative "file =" is resolved against
// its directory (and made absolute). Every refusal is an *Error matching
// ErrInvalid, naming the line and the field at fault; the first fault in
// the file is reported.
func Parse(name string, data []byte) (*State, error) {
	var s State
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&s)
	if err != nil {
		return nil, decodeError(name, err)
	}
	pos := locate(data)
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0]
		line, field := pos.find(k)
		return nil, &Error{File: name, Line: line, Field: field, Msg: "unknown key"}
	}
	if md.IsDefined("http", "middleware") && s.HTTP.Middleware == nil {
		s.HTTP.Middleware = []string{} // "middleware = []": no middleware, not "not set"
	}
	dir := filepath.Dir(name)
	for i := range s.Modules {
		m := &s.Modules[i]
		at := fmt.Sprintf("module[%d]", i)
		m.At = name + ":" + strconv.Itoa(pos.line(at))
		fail := pos.failAt(name, at)
		switch {
		case m.Name != "" && m.File != "":
			return nil, fail("file", "both name and file are set: name a module, or give its file")
		case m.Name == "" && m.File == "":
			return nil, &Error{File: name, Line: pos.line(at), Field: at, Msg: "neither name nor file is set"}
		case m.Name != "" && strings.ContainsFunc(m.Name, func(r rune) bool { return r <= ' ' || r == '/' || r == 0x7f }):
			return nil, fail("name", "%q is not a module name or alias (no blanks, control characters or '/')", m.Name)
		}
		if m.File != "" {
			if !filepath.IsAbs(m.File) {
				abs, err := filepath.Abs(filepath.Join(dir, m.File))
				if err != nil {
					return nil, fail("file", "%v", err)
				}
				m.File = abs
			}
			m.File = filepath.Clean(m.File)
		}
		if m.Digest != "" && !validDigest(m.Digest) {
			return nil, fail("digest", "%q is not \"sha256:\" and 64 lowercase hex digits", m.Digest)
		}
		if _, set := pos.lines[at+".version"]; set && m.Version == "" {
			return nil, fail("version", "empty (leave it out to accept any version)")
		}
		for k := range m.Params {
			if k == "" || strings.ContainsAny(k, "= \t\n") {
				return nil, fail("params", "%q is not a parameter name", k)
			}
		}
	}
	for i := range s.Mounts {
		mt := &s.Mounts[i]
		at := fmt.Sprintf("mount[%d]", i)
		mt.At = name + ":" + strconv.Itoa(pos.line(at))
		fail := pos.failAt(name, at)
		switch {
		case mt.Target == "":
			return nil, &Error{File: name, Line: pos.line(at), Field: at + ".target", Msg: "missing"}
		case !strings.HasPrefix(mt.Target, "/") || filepath.Clean(mt.Target) != mt.Target:
			return nil, fail("target", "%q is not a clean absolute path", mt.Target)
		case mt.Target == "/":
			return nil, fail("target", "the root is the daemon's boot mount, not the state's")
		case mt.Type == "":
			return nil, &Error{File: name, Line: pos.line(at), Field: at + ".type", Msg: "missing"}
		case strings.ContainsAny(mt.Options, " \t\n"):
			return nil, fail("options", "%q: options are separated by commas, without blanks", mt.Options)
		}
		if mt.Source == "" {
			mt.Source = "none"
		}
	}
	for i, m := range s.HTTP.Middleware {
		if !raceless.ValidName(m) {
			return nil, &Error{File: name, Line: pos.line("http.middleware"), Field: fmt.Sprintf("http.middleware[%d]", i), Msg: fmt.Sprintf("%q is not a module name", m)}
		}
		if slicesIndex(s.HTTP.Middleware[:i], m) >= 0 {
			return nil, &Error{File: name, Line: pos.line("http.middleware"), Field: fmt.Sprintf("http.middleware[%d]", i), Msg: fmt.Sprintf("%q is named twice", m)}
		}
	}
	if md.IsDefined("http", "middleware") {
		s.HTTP.At = name + ":" + strconv.Itoa(pos.line("http.middleware"))
	}
	if _, err := merge([]*State{&s}); err != nil {
		return nil, err
	}
	return &s, nil
}

// merge concatenates parts in order, refusing a module, mount or
// middleware list named twice (by one part or two), naming both places.
func merge(parts []*State) (*State, error) {
	out := &State{}
	seen := map[string]string{} // "module NAME" or "file PATH" or "mount TARGET" → At
	dup := func(key, at, field, what string) error {
		if prev, ok := seen[key]; ok {
			file, line := splitAt(at)
			return &Error{File: file, Line: line, Field: field, Msg: fmt.Sprintf("%s is also named at %s", what, prev)}
		}
		seen[key] = at
		return nil
	}
	for _, p := range parts {
		for i, m := range p.Modules {
			key, field, what := "module "+m.Name, fmt.Sprintf("module[%d].name", i), "module "+strconv.Quote(m.Name)
			if m.File != "" {
				key, field, what = "file "+m.File, fmt.Sprintf("module[%d].file", i), "file "+m.File
			}
			if err := dup(key, m.At, field, what); err != nil {
				return nil, err
			}
			out.Modules = append(out.Modules, m)
		}
		for i, mt := range p.Mounts {
			if err := dup("mount "+mt.Target, mt.At, fmt.Sprintf("mount[%d].target", i), "mount target "+mt.Target); err != nil {
				return nil, err
			}
			out.Mounts = append(out.Mounts, mt)
		}
		if p.HTTP.Middleware != nil {
			if err := dup("http", p.HTTP.At, "http.middleware", "http.middleware"); err != nil {
				return nil, err
			}
			out.HTTP = p.HTTP
		}
	}
	return out, nil
}

// splitAt splits "FILE:LINE".
func splitAt(at string) (string, int) {
	i := strings.LastIndexByte(at, ':')
	if i < 0 {
		return at, 0
	}
	n, err := strconv.Atoi(at[i+1:])
	if err != nil {
		return at, 0
	}
	return at[:i], n
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func validDigest(d string) bool { return digestRE.MatchString(d) }

// typeErrRE is the form of the type errors of BurntSushi/toml's decoder
// (MetaData.e): "toml: line N (last key "K"): MESSAGE".
var typeErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// decodeError turns a decoding error into an *Error at its line.
func decodeError(name string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &Error{File: name, Line: pe.Position.Line, Field: pe.LastKey, Msg: pe.Message}
	}
	if m := typeErrRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: name, Line: line, Field: m[2], Msg: m[3]}
	}
	return &Error{File: name, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
}

func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// positions are the lines of a file's tables and keys, by path with
// array indexes: "module[1]" (its [[module]] header), "module[1].digest",
// "module[1].params.greeting", "http.middleware".
type positions struct {
	lines map[string]int
	order []string // paths in document order
}

// line returns the line of path, else of its closest enclosing table that
// has one (a key of an inline table is on its table's line), else 0.
// failAt returns how to report a bad field of the item at (as
// "module[0]") of the file name: an Error at the field's line.
func (p *positions) failAt(name, at string) func(field, format string, a ...any) error {
	return func(field, format string, a ...any) error {
		return &Error{File: name, Line: p.line(at + "." + field), Field: at + "." + field, Msg: fmt.Sprintf(format, a...)}
	}
}

func (p *positions) line(path string) int {
	for path != "" {
		if n, ok := p.lines[path]; ok {
			return n
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return 0
		}
		path = path[:i]
	}
	return 0
}

// find returns the line and indexed path of the first occurrence of a
// MetaData key (without indexes: ["module", "nmae"]).
func (p *positions) find(k toml.Key) (int, string) {
	want := strings.Join(k, ".")
	for _, path := range p.order {
		if stripIndex(path) == want {
			return p.lines[path], path
		}
	}
	return 0, want
}

var indexRE = regexp.MustCompile(`\[\d+\]`)

func stripIndex(path string) string { return indexRE.ReplaceAllString(path, "") }

var (
	arrayHeaderRE = regexp.MustCompile(`^\s*\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]\s*(#.*)?$`)
	tableHeaderRE = regexp.MustCompile(`^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?$`)
	keyLineRE     = regexp.MustCompile(`^\s*([A-Za-z0-9_-]+|"[^"]*"|'[^']*')\s*=`)
)

// locate reads the table headers and "key =" lines of a TOML document
// that decoded without error, in order. It understands what this format
// uses (arrays of tables, subtables of their last element, bare and
// quoted keys) and skips the lines of multi-line strings; a key inside an
// inline table gets its table's line (see positions.line).
func locate(data []byte) *positions {
	p := &positions{lines: map[string]int{}}
	count := map[string]int{} // array of tables → elements so far
	table := ""               // current table's indexed path
	inString := ""            // the delimiter of the multi-line string open, if any
	add := func(path string, line int) {
		if _, ok := p.lines[path]; !ok {
			p.lines[path] = line
			p.order = append(p.order, path)
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), len(data)+1)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if inString != "" {
			if strings.Count(line, inString)%2 == 1 {
				inString = ""
			}
			continue
		}
		switch {
		case arrayHeaderRE.MatchString(line):
			name := arrayHeaderRE.FindStringSubmatch(line)[1]
			table = fmt.Sprintf("%s[%d]", name, count[name])
			count[name]++
			add(table, n)
		case tableHeaderRE.MatchString(line):
			name := tableHeaderRE.FindStringSubmatch(line)[1]
			// [module.params] after [[module]] is the last element's.
			first, rest, _ := strings.Cut(name, ".")
			if c := count[first]; c > 0 && rest != "" {
				name = fmt.Sprintf("%s[%d].%s", first, c-1, rest)
			}
			table = name
			add(table, n)
		case keyLineRE.MatchString(line):
			key := strings.Trim(keyLineRE.FindStringSubmatch(line)[1], `"'`)
			path := key
			if table != "" {
				path = table + "." + key
			}
			add(path, n)
			for _, d := range []string{`"""`, `'''`} {
				if strings.Count(line, d)%2 == 1 {
					inString = d
				}
			}
		}
	}
	sort.SliceStable(p.order, func(i, j int) bool { return p.lines[p.order[i]] < p.lines[p.order[j]] })
	return p
}
