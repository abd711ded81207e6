package raceless

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

// paramsInfo declares one parameter of each type, without defaults.
var paramsInfo = Info{Name: "pm", Params: []ParamSpec{
	{Name: "repeat", Type: ParamInt},
	{Name: "count", Type: ParamUint},
	{Name: "debug", Type: ParamBool},
	{Name: "greeting", Type: ParamString},
	{Name: "untyped"},
	{Name: "dash_name", Type: ParamInt},
}}

// TestResolveParamsTyped: each given value is parsed by its type, as the
// kernel's kstrtoint/kstrtouint/kstrtobool/param_set_charp do, and kept in
// canonical form; what the kernel refuses is an error naming the parameter
// and wrapping ErrInvalid.
func TestResolveParamsTyped(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		want        string // canonical value; "" with wantErr set
		wantErr     string // a substring of the error; "" for none
	}{
		// int: base 0, 32 bits
		{"repeat", "16", "16", ""},
		{"repeat", "0x10", "16", ""},
		{"repeat", "0X1f", "31", ""},
		{"repeat", "010", "8", ""},
		{"repeat", "0", "0", ""},
		{"repeat", "-0", "0", ""},
		{"repeat", "+7", "7", ""},
		{"repeat", "-0x10", "-16", ""},
		{"repeat", "-010", "-8", ""},
		{"repeat", "5\n", "5", ""}, // one trailing newline, as kstrtox
		{"repeat", "2147483647", "2147483647", ""},
		{"repeat", "-2147483648", "-2147483648", ""},
		{"repeat", "0x7fffffff", "2147483647", ""},
		{"repeat", "2147483648", "", "out of range"},
		{"repeat", "-2147483649", "", "out of range"},
		{"repeat", "0x80000000", "", "out of range"},
		{"repeat", "99999999999999999999", "", "out of range"},
		{"repeat", "-99999999999999999999", "", "out of range"},
		{"repeat", "", "", "not an integer"},
		{"repeat", "x", "", "not an integer"},
		{"repeat", "0x", "", "not an integer"},
		{"repeat", "08", "", "not an integer"}, // octal
		{"repeat", "0b101", "", "not an integer"},
		{"repeat", "0o17", "", "not an integer"},
		{"repeat", "1_000", "", "not an integer"},
		{"repeat", " 1", "", "not an integer"},
		{"repeat", "1 ", "", "not an integer"},
		{"repeat", "1\n\n", "", "not an integer"},
		{"repeat", "--1", "", "not an integer"},
		{"repeat", "-+1", "", "not an integer"},
		{"repeat", "++1", "", "not an integer"},
		{"repeat", "1.5", "", "not an integer"},
		// uint: base 0, 32 bits, no sign but '+'
		{"count", "0x10", "16", ""},
		{"count", "010", "8", ""},
		{"count", "+3", "3", ""},
		{"count", "4294967295", "4294967295", ""},
		{"count", "0xffffffff", "4294967295", ""},
		{"count", "4294967296", "", "out of range"},
		{"count", "-1", "", "not an unsigned integer"},
		{"count", "-0", "", "not an unsigned integer"},
		{"count", "", "", "not an unsigned integer"},
		// bool: kstrtobool, shown as Y or N
		{"debug", "y", "Y", ""},
		{"debug", "Y", "Y", ""},
		{"debug", "1", "Y", ""},
		{"debug", "yes", "Y", ""},
		{"debug", "true", "Y", ""},
		{"debug", "T", "Y", ""},
		{"debug", "on", "Y", ""},
		{"debug", "ON", "Y", ""},
		{"debug", "n", "N", ""},
		{"debug", "N", "N", ""},
		{"debug", "0", "N", ""},
		{"debug", "no", "N", ""},
		{"debug", "false", "N", ""},
		{"debug", "off", "N", ""},
		{"debug", "oFf", "N", ""},
		{"debug", ParamNoValue, "Y", ""},
		{"debug", "", "", "not a boolean"},
		{"debug", "2", "", "not a boolean"},
		{"debug", "o", "", "not a boolean"},
		{"debug", "ox", "", "not a boolean"},
		{"debug", "maybe", "", "not a boolean"},
		// string: verbatim
		{"greeting", "0x10", "0x10", ""},
		{"greeting", "", "", ""},
		{"greeting", " a = b \n", " a = b \n", ""},
		{"greeting", "Grüße", "Grüße", ""},
		{"greeting", strings.Repeat("s", 1024), strings.Repeat("s", 1024), ""},
		{"greeting", strings.Repeat("s", 1025), "", "longer than 1024 bytes"},
		{"greeting", "a\x00b", "", "NUL"},
		{"untyped", "as is", "as is", ""},
		// a bare name is a bool's only
		{"greeting", ParamNoValue, "", "a value is required"},
		{"untyped", ParamNoValue, "", "a value is required"},
		{"repeat", ParamNoValue, "", "a value is required"},
		{"count", ParamNoValue, "", "a value is required"},
		// names: '-' and '_' are the same character (the kernel's parameq)
		{"dash-name", "0x1", "1", ""},
	} {
		got, err := ResolveParams(paramsInfo, map[string]string{tc.name: tc.value})
		if tc.wantErr != "" {
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) ||
				!strings.Contains(err.Error(), "parameter "+tc.name) || !strings.Contains(err.Error(), "pm") {
				t.Errorf("%s=%q: error %v, want ErrInvalid naming pm and the parameter, containing %q", tc.name, tc.value, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s=%q: %v", tc.name, tc.value, err)
			continue
		}
		key := strings.ReplaceAll(tc.name, "-", "_")
		if v, ok := got[key]; !ok || v != tc.want || len(got) != 1 {
			t.Errorf("%s=%q: got %q, want {%s: %q}", tc.name, tc.value, got, key, tc.want)
		}
	}
}

// TestResolveParamsErrors: errors that are not about one value's type.
func TestResolveParamsErrors(t *testing.T) {
	for _, tc := range []struct {
		what    string
		info    Info
		given   map[string]string
		wantErr string
	}{
		{"unknown parameter", paramsInfo, map[string]string{"nope": "1"}, `unknown parameter "nope"`},
		{"unknown bare parameter", paramsInfo, map[string]string{"nope": ParamNoValue}, `unknown parameter "nope"`},
		{"one name spelled two ways", paramsInfo, map[string]string{"dash-name": "1", "dash_name": "2"}, "parameter dash_name given twice"},
		{"bad int default", Info{Name: "pm", Params: []ParamSpec{{Name: "repeat", Type: ParamInt, Default: "many"}}}, nil, `parameter repeat: default "many"`},
		{"int default out of range", Info{Name: "pm", Params: []ParamSpec{{Name: "repeat", Type: ParamInt, Default: "0x100000000"}}}, nil, "out of range"},
		{"bad bool default", Info{Name: "pm", Params: []ParamSpec{{Name: "debug", Type: ParamBool, Default: "maybe"}}}, nil, `parameter debug: default "maybe"`},
		{"bad default, parameter given", Info{Name: "pm", Params: []ParamSpec{{Name: "count", Type: ParamUint, Default: "-1"}}}, map[string]string{"count": "1"}, `parameter count: default "-1"`},
		{"declared twice", Info{Name: "pm", Params: []ParamSpec{{Name: "a-b", Type: ParamInt}, {Name: "a_b", Type: ParamInt}}}, nil, "parameter a_b declared twice"},
		{"unknown type", Info{Name: "pm", Params: []ParamSpec{{Name: "f", Type: "float"}}}, map[string]string{"f": "1.5"}, `unknown parameter type "float"`},
		{"first bad name in order", paramsInfo, map[string]string{"repeat": "x", "count": "x"}, "parameter count="},
	} {
		got, err := ResolveParams(tc.info, tc.given)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "param pm: ") {
			t.Errorf("%s: got %v, %v; want an error wrapping ErrInvalid, starting \"param pm: \", containing %q", tc.what, got, err, tc.wantErr)
		}
	}
}

// TestResolveParamsDefaults: defaults are parsed and kept canonical as
// given values are; a given value replaces its default; a parameter with
// neither is absent.
func TestResolveParamsDefaults(t *testing.T) {
	info := Info{Name: "pm", Params: []ParamSpec{
		{Name: "repeat", Type: ParamInt, Default: "0x10"},
		{Name: "count", Type: ParamUint, Default: "010"},
		{Name: "debug", Type: ParamBool, Default: "on"},
		{Name: "quiet", Type: ParamBool, Default: "0"},
		{Name: "greeting", Type: ParamString, Default: "Hello"},
		{Name: "unset", Type: ParamInt},
	}}
	for _, tc := range []struct {
		what  string
		given map[string]string
		want  map[string]string
	}{
		{"defaults only", nil,
			map[string]string{"repeat": "16", "count": "8", "debug": "Y", "quiet": "N", "greeting": "Hello"}},
		{"given replace defaults", map[string]string{"repeat": "-1", "quiet": ParamNoValue, "greeting": "0x10", "unset": "0x20"},
			map[string]string{"repeat": "-1", "count": "8", "debug": "Y", "quiet": "Y", "greeting": "0x10", "unset": "32"}},
		{"empty string given", map[string]string{"greeting": ""},
			map[string]string{"repeat": "16", "count": "8", "debug": "Y", "quiet": "N", "greeting": ""}},
	} {
		got, err := ResolveParams(info, tc.given)
		if err != nil || !maps.Equal(got, tc.want) {
			t.Errorf("%s: got %v, %v; want %v", tc.what, got, err, tc.want)
		}
	}
}

// TestParseParams: insmod's arguments, one parameter each; a bare name is
// ParamNoValue; the kernel's double quotes are taken off.
func TestParseParams(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    map[string]string
		wantErr bool
	}{
		{nil, map[string]string{}, false},
		{[]string{"repeat=0x10"}, map[string]string{"repeat": "0x10"}, false},
		{[]string{"debug"}, map[string]string{"debug": ParamNoValue}, false},
		{[]string{"greeting"}, map[string]string{"greeting": ParamNoValue}, false},
		{[]string{"greeting="}, map[string]string{"greeting": ""}, false},
		{[]string{"greeting=a=b"}, map[string]string{"greeting": "a=b"}, false},
		{[]string{"greeting=le monde"}, map[string]string{"greeting": "le monde"}, false},
		{[]string{`greeting="le monde"`}, map[string]string{"greeting": "le monde"}, false},
		{[]string{`"greeting=le monde"`}, map[string]string{"greeting": "le monde"}, false},
		{[]string{`"greeting="le monde""`}, map[string]string{"greeting": `le monde"`}, false},
		{[]string{`greeting="`}, map[string]string{"greeting": ""}, false},
		{[]string{`greeting=a"b`}, map[string]string{"greeting": `a"b`}, false},
		{[]string{`"debug"`}, map[string]string{"debug": ParamNoValue}, false},
		{[]string{"repeat=1", "repeat=2"}, map[string]string{"repeat": "2"}, false},
		{[]string{"a-b=1", "a_b=2"}, map[string]string{"a_b": "2"}, false},
		{[]string{"a_b=1", "a-b"}, map[string]string{"a-b": ParamNoValue}, false},
		{[]string{"=1"}, nil, true},
		{[]string{"==1"}, nil, true},
		{[]string{""}, nil, true},
		{[]string{`""`}, nil, true},
		{[]string{"greeting=\x00"}, nil, true},
		{[]string{"a\x00"}, nil, true},
	} {
		got, err := ParseParams(tc.args)
		if tc.wantErr {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%q: got %q, %v; want an error wrapping ErrInvalid", tc.args, got, err)
			}
			continue
		}
		if err != nil || !maps.Equal(got, tc.want) {
			t.Errorf("%q: got %q, %v; want %q", tc.args, got, err, tc.want)
		}
	}
}

// TestParamsLoadCanonical: what a module and its readers see through
// Kernel.Params and Instance.Params is the canonical value, and a bare
// name for a string parameter fails the load before Init runs.
func TestParamsLoadCanonical(t *testing.T) {
	h := quietHost(t)
	var seen map[string]string
	info := Info{Name: "pmload", Params: []ParamSpec{
		{Name: "repeat", Type: ParamInt, Default: "1"},
		{Name: "greeting", Type: ParamString, Default: "Hello"},
		{Name: "debug", Type: ParamBool},
	}}
	mod := &testModule{}
	mod.init = func(k *Kernel) error { seen = maps.Clone(k.Params()); return nil }
	src := Native(info, func() Module { return mod })

	given, err := ParseParams([]string{"greeting"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Load(deadline(t), src, given); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "greeting") {
		t.Fatalf("bare string parameter: %v, want ErrInvalid naming greeting", err)
	}
	if mod.inits.Load() != 0 {
		t.Fatal("Init ran with a bare string parameter")
	}

	given, err = ParseParams([]string{"repeat=0x10", "debug"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := h.Load(deadline(t), src, given)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"repeat": "16", "greeting": "Hello", "debug": "Y"}
	if !maps.Equal(seen, want) || !maps.Equal(m.Params(), want) {
		t.Fatalf("Kernel.Params() = %v, Instance.Params() = %v, want %v", seen, m.Params(), want)
	}
	if err := h.Unload(deadline(t), "pmload", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}
