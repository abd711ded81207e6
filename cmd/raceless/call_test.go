package main_test

import (
	"testing"

	"github.com/raceless/raceless/internal/wasmtest"
)

// TestCallValues calls wasm symbols of every value type: arguments are
// parsed by the symbol's parameter types (negative numbers, with or
// without "--", floats for f32/f64), results are exactly what the guest
// returned (an i32 result never carries the high bits of the argument
// whose slot it took) and printed signed (i32, i64) or as floats;
// --raw prints the raceless.Func API's unsigned values. Out-of-range
// arguments are refused before the call.
func TestCallValues(t *testing.T) {
	d := startDaemon(t)
	d.runAs("insmod", wasmtest.Build(t, wasmtest.Values)).ok(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"one32", "4294967296"}, "1\n"},
		{[]string{"one32", "-1"}, "1\n"},
		{[]string{"neg32", "5"}, "-5\n"},
		{[]string{"neg32", "-5"}, "5\n"},
		{[]string{"neg32", "--", "-7"}, "7\n"},
		{[]string{"neg32", "4294967295"}, "1\n"}, // the i32 -1 written unsigned
		{[]string{"neg32", "-2147483648"}, "-2147483648\n"},
		{[]string{"neg64", "-9223372036854775807"}, "9223372036854775807\n"},
		{[]string{"neg64", "0x10"}, "-16\n"},
		{[]string{"mulf32", "1.5", "-2"}, "-3\n"},
		{[]string{"mulf32", "0.1", "1"}, "0.1\n"},
		{[]string{"divf64", "1", "3"}, "0.3333333333333333\n"},
		{[]string{"divf64", "-1", "0"}, "-Inf\n"},
		{[]string{"--raw", "neg32", "5"}, "4294967291\n"},
		{[]string{"neg32", "--json", "5"}, "[\n  -5\n]\n"},
		{[]string{"divf64", "--json", "0", "0"}, "[\n  \"NaN\"\n]\n"},
	} {
		if got := d.run(append([]string{"call"}, tc.args...)...).ok(t).stdout; got != tc.want {
			t.Errorf("call %q: %q, want %q", tc.args, got, tc.want)
		}
	}
	const usage = " (usage: call [--raw] SYMBOL [ARG ...])"
	d.run("call", "neg32", "4294967296").fails(t, 2, "call: ERROR: argument 0: 4294967296 is out of range for an i32"+usage)
	d.run("call", "neg32", "-2147483649").fails(t, 2, "call: ERROR: argument 0: -2147483649 is out of range for an i32"+usage)
	d.run("call", "neg32", "1.5").fails(t, 2, `call: ERROR: argument 0: "1.5" is not an i32`+usage)
	d.run("call", "mulf32", "1", "x").fails(t, 2, `call: ERROR: argument 1: "x" is not an f32`+usage)
	d.run("call", "neg32").fails(t, 7, "call: ERROR: call values: symbol neg32: 0 arguments, want 1: invalid argument")
	// A native Func: no types, 64-bit integers, results unsigned.
	if got := d.run("call", "hello_greet", "-1", "2").ok(t).stdout; got != "1 1\n" {
		t.Fatalf("call hello_greet -1 2: %q", got)
	}
}
