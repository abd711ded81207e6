package cli

import (
	"encoding/json"
	"math"
	"testing"
)

// TestCallArgsNegative checks that negative numbers are arguments, not
// flags, with or without "--".
func TestCallArgsNegative(t *testing.T) {
	for _, args := range [][]string{
		{"f", "-5", "-0x1f", "-2.5", "-.5", "--raw"},
		{"--raw", "f", "--", "-5", "-0x1f", "-2.5", "-.5"},
	} {
		p, err := parseArgs(args, callFlags...)
		if err != nil || !p.has("raw") || len(p.pos) != 5 || p.pos[1] != "-5" || p.pos[2] != "-0x1f" || p.pos[3] != "-2.5" || p.pos[4] != "-.5" {
			t.Fatalf("%q: %+v %v", args, p, err)
		}
	}
	for _, bad := range [][]string{{"f", "-x"}, {"f", "-."}} {
		if _, err := parseArgs(bad, callFlags...); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseValue(t *testing.T) {
	for _, tc := range []struct {
		s, typ string
		want   uint64
	}{
		{"5", "", 5},
		{"-5", "", math.MaxUint64 - 4},
		{"18446744073709551615", "", math.MaxUint64},
		{"-9223372036854775808", "i64", 1 << 63},
		{"0x10", "i64", 16},
		{"+7", "i64", 7},
		{"-1", "i32", 0xFFFF_FFFF},
		{"-2147483648", "i32", 0x8000_0000},
		{"4294967295", "i32", 0xFFFF_FFFF},
		{"-1.5", "f32", uint64(math.Float32bits(-1.5))},
		{"3", "f32", uint64(math.Float32bits(3))},
		{"inf", "f64", math.Float64bits(math.Inf(1))},
		{"-2.25e-3", "f64", math.Float64bits(-2.25e-3)},
	} {
		if got, err := parseValue(tc.s, tc.typ); err != nil || got != tc.want {
			t.Errorf("parseValue(%q, %q) = %#x, %v; want %#x", tc.s, tc.typ, got, err, tc.want)
		}
	}
	for _, tc := range [][2]string{
		{"4294967296", "i32"}, {"-2147483649", "i32"}, {"1.5", "i32"}, {"1.5", ""},
		{"18446744073709551616", "i64"}, {"-9223372036854775809", ""}, {"x", "f64"}, {"1e39", "f32"}, {"", ""},
	} {
		if got, err := parseValue(tc[0], tc[1]); err == nil {
			t.Errorf("parseValue(%q, %q) = %#x, want an error", tc[0], tc[1], got)
		}
	}
}

func TestFormatValue(t *testing.T) {
	for _, tc := range []struct {
		v         uint64
		typ, want string
	}{
		{0xFFFF_FFFB, "i32", "-5"},
		{0x7FFF_FFFF, "i32", "2147483647"},
		{math.MaxUint64, "i64", "-1"},
		{math.MaxUint64, "", "18446744073709551615"},
		{uint64(math.Float32bits(0.1)), "f32", "0.1"},
		{math.Float64bits(-2.5), "f64", "-2.5"},
		{math.Float64bits(math.NaN()), "f64", "NaN"},
		{uint64(math.Float32bits(float32(math.Inf(-1)))), "f32", "-Inf"},
	} {
		if got := formatValue(tc.v, tc.typ); got != tc.want {
			t.Errorf("formatValue(%#x, %q) = %q, want %q", tc.v, tc.typ, got, tc.want)
		}
	}
	b, err := json.Marshal([]any{jsonValue(0xFFFF_FFFB, "i32"), jsonValue(math.Float64bits(0.5), "f64"), jsonValue(math.Float64bits(math.Inf(1)), "f64"), jsonValue(math.MaxUint64, "")})
	if err != nil || string(b) != `[-5,0.5,"+Inf",18446744073709551615]` {
		t.Fatalf("json: %s %v", b, err)
	}
}
