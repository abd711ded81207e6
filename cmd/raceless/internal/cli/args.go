package cli

import (
	"fmt"
	"strings"
)

// argKind says whether a flag takes a value.
type argKind int

const (
	noValue       argKind = iota // -f, --force
	requiredValue                // -t TYPE, --type=TYPE
	optionalValue                // --wait, --wait=5s (never the next argument)
)

// flagSpec is one flag: its short and long spellings.
type flagSpec struct {
	short string // one letter, "" if none
	long  string // "" if none
	kind  argKind
	arg   string // the value's name in the help ("TYPE")
	help  string // one line for --help
}

// parsed is the result of parseArgs.
type parsed struct {
	set  map[string]bool   // by long name (short name when there is none)
	vals map[string]string // values of value flags
	pos  []string
}

func (p *parsed) has(name string) bool     { return p.set[name] }
func (p *parsed) val(name string) string   { return p.vals[name] }
func (s flagSpec) key() string             { return map[bool]string{true: s.long, false: s.short}[s.long != ""] }
func usageErrorf(f string, a ...any) error { return &usageError{fmt.Sprintf(f, a...)} }
func (e *usageError) Error() string        { return e.msg }

type usageError struct{ msg string }

// parseArgs parses kmod-style arguments: flags and positional arguments in
// any order, short flags combinable (-fv), "--" ends the flags, and a lone
// "-" and a negative number (-5, -0x1f, -2.5, -.5) are positional. Every
// command takes the globalFlags (--socket, --json, -h/--help).
func parseArgs(args []string, specs ...flagSpec) (*parsed, error) {
	specs = append(specs, globalFlags...)
	p := &parsed{set: map[string]bool{}, vals: map[string]string{}}
	find := func(short, long string) (flagSpec, bool) {
		for _, s := range specs {
			if (short != "" && s.short == short) || (long != "" && s.long == long) {
				return s, true
			}
		}
		return flagSpec{}, false
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			p.pos = append(p.pos, args[i+1:]...)
			return p, nil
		case strings.HasPrefix(a, "--"):
			name, v, hasV := strings.Cut(a[2:], "=")
			s, ok := find("", name)
			if !ok {
				return nil, usageErrorf("unrecognized option '--%s'", name)
			}
			switch {
			case s.kind == noValue && hasV:
				return nil, usageErrorf("option '--%s' doesn't allow an argument", name)
			case s.kind == requiredValue && !hasV:
				if i+1 >= len(args) {
					return nil, usageErrorf("option '--%s' requires an argument", name)
				}
				i++
				v = args[i]
			}
			p.set[s.key()] = true
			if s.kind != noValue {
				p.vals[s.key()] = v
			}
		case isNegativeNumber(a): // raceless call f -5: no flag is a digit
			p.pos = append(p.pos, a)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			for j := 1; j < len(a); j++ {
				s, ok := find(a[j:j+1], "")
				if !ok {
					return nil, usageErrorf("invalid option -- '%s'", a[j:j+1])
				}
				p.set[s.key()] = true
				if s.kind == noValue {
					continue
				}
				v := a[j+1:]
				if v == "" && s.kind == requiredValue {
					if i+1 >= len(args) {
						return nil, usageErrorf("option requires an argument -- '%s'", s.short)
					}
					i++
					v = args[i]
				}
				p.vals[s.key()] = strings.TrimPrefix(v, "=")
				break
			}
		default:
			p.pos = append(p.pos, a)
		}
	}
	return p, nil
}

// isNegativeNumber reports whether a looks like a negative number: a minus
// followed by a digit, or by a point and a digit. (-inf and -nan read as
// flags: give them after "--".)
func isNegativeNumber(a string) bool {
	if len(a) < 2 || a[0] != '-' {
		return false
	}
	isDigit := func(c byte) bool { return '0' <= c && c <= '9' }
	return isDigit(a[1]) || a[1] == '.' && len(a) > 2 && isDigit(a[2])
}
