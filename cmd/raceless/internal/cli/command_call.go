package cli

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
)

// runCall calls a Func symbol. Arguments and results are typed by the
// symbol's signature where the daemon knows it (a wasm module's: i32,
// i64, f32, f64; see parseValue and formatValue); a native Func's are
// 64-bit integers, its results printed unsigned. --raw prints the results
// as the raceless.Func API returns them (unsigned 64-bit: an i32
// zero-extended, a float's bits).
func runCall(e *env) error {
	if len(e.args.pos) == 0 {
		return usageErrorf("missing symbol name")
	}
	name := e.args.pos[0]
	var sig *daemon.Signature // nil: the types are not known
	var we *control.Error
	if err := e.callInto(&control.Request{Op: "signature", Name: name}, &sig); err != nil &&
		!(asWire(err, &we) && we.Code == control.CodeUsage) { // a daemon without the op
		return err
	}
	var args []uint64
	for i, a := range e.args.pos[1:] {
		typ := ""
		if sig != nil && i < len(sig.Params) {
			typ = sig.Params[i]
		}
		v, err := parseValue(a, typ)
		if err != nil {
			return usageErrorf("argument %d: %v", i, err)
		}
		args = append(args, v)
	}
	var res []uint64
	if err := e.callInto(&control.Request{Op: "call", Name: name, Args: args}, &res); err != nil {
		return err
	}
	raw := e.args.has("raw")
	typeOf := func(i int) string {
		if raw || sig == nil || i >= len(sig.Results) {
			return ""
		}
		return sig.Results[i]
	}
	if e.args.has("json") {
		out := make([]any, len(res))
		for i, r := range res {
			out[i] = jsonValue(r, typeOf(i))
		}
		return e.printJSON(out)
	}
	s := make([]string, len(res))
	for i, r := range res {
		s[i] = formatValue(r, typeOf(i))
	}
	fmt.Fprintln(e.stdout, strings.Join(s, " "))
	return nil
}

var callFlags = []flagSpec{{long: "raw", kind: noValue, help: "print the results as unsigned 64-bit integers, as raceless.Func returns them"}}

// parseValue parses a call's argument of WebAssembly type typ ("" when not
// known: a 64-bit integer). Integers are decimal, or 0x hex, 0o octal, 0b
// binary, with an optional sign: an i32 in [-2^31, 2^32-1], an i64 or an
// untyped value in [-2^63, 2^64-1]; negatives are passed in two's
// complement (an i32 in 32 bits, zero-extended). f32 and f64 take what
// strconv.ParseFloat does (1.5, -2e-3, 0x1p-2, inf, nan), and integers.
func parseValue(s, typ string) (uint64, error) {
	switch typ {
	case "f32":
		f, err := strconv.ParseFloat(s, 32)
		if err != nil {
			return 0, fmt.Errorf("%q is not an f32", s)
		}
		return uint64(math.Float32bits(float32(f))), nil
	case "f64":
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not an f64", s)
		}
		return math.Float64bits(f), nil
	}
	what := "an integer"
	if typ != "" {
		what = "an " + typ
	}
	var v uint64
	if strings.HasPrefix(s, "-") {
		n, err := strconv.ParseInt(s, 0, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not %s", s, what)
		}
		v = uint64(n)
		if typ == "i32" {
			if n < math.MinInt32 {
				return 0, fmt.Errorf("%s is out of range for an i32", s)
			}
			v = uint64(uint32(n))
		}
	} else {
		n, err := strconv.ParseUint(strings.TrimPrefix(s, "+"), 0, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not %s", s, what)
		}
		if typ == "i32" && n > math.MaxUint32 {
			return 0, fmt.Errorf("%s is out of range for an i32", s)
		}
		v = n
	}
	switch typ {
	case "", "i32", "i64":
		return v, nil
	}
	return 0, fmt.Errorf("%q: values of type %s cannot be given", s, typ)
}

// formatValue prints a result of WebAssembly type typ: i32 and i64 as
// signed decimal (WebAssembly's integers have no sign; the CLI reads them
// as two's complement, as wasmtime --invoke does), f32 and f64 in the
// shortest form that reads back to the same value (NaN, +Inf, -Inf).
// Untyped values (a native Func's) are printed unsigned.
func formatValue(v uint64, typ string) string {
	switch typ {
	case "i32":
		return strconv.FormatInt(int64(int32(v)), 10)
	case "i64":
		return strconv.FormatInt(int64(v), 10)
	case "f32":
		return strconv.FormatFloat(float64(math.Float32frombits(uint32(v))), 'g', -1, 32)
	case "f64":
		return strconv.FormatFloat(math.Float64frombits(v), 'g', -1, 64)
	}
	return strconv.FormatUint(v, 10)
}

// jsonValue is formatValue for --json: a number, or for a float that JSON
// cannot hold the string formatValue prints ("NaN", "+Inf", "-Inf").
func jsonValue(v uint64, typ string) any {
	s := formatValue(v, typ)
	f := math.Float64frombits(v)
	if typ == "f32" {
		f = float64(math.Float32frombits(uint32(v)))
	}
	if (typ == "f32" || typ == "f64") && (math.IsNaN(f) || math.IsInf(f, 0)) {
		return s
	}
	return json.Number(s)
}

func runPing(e *env) error {
	var p daemon.Ping
	if err := e.callInto(&control.Request{Op: "ping"}, &p); err != nil {
		return err
	}
	if e.args.has("json") {
		return e.printJSON(p)
	}
	// The taint as the kernel's /proc/sys/kernel/tainted shows it (0:
	// untainted), with its letters when there are any.
	taint := fmt.Sprint(p.Tainted)
	if p.TaintFlags != "" {
		taint += " (" + p.TaintFlags + ")"
	}
	fmt.Fprintf(e.stdout, "raceless daemon pid %d uid %d protocol %d tainted %s\n", p.PID, p.UID, p.Protocol, taint)
	return nil
}

// runHook calls every hook subscribed to EVENT (the non-counting
// interface), with the remaining arguments joined as its argument.
func runHook(e *env) error {
	if len(e.args.pos) == 0 {
		return usageErrorf("missing event name")
	}
	_, err := e.call(&control.Request{Op: "hook", Name: e.args.pos[0], Names: e.args.pos[1:]}, nil)
	return err
}
