package cli

import (
	"errors"
	"fmt"
	"testing"

	"go.uber.org/goleak"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
	"github.com/raceless/raceless/wasm"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseArgs(t *testing.T) {
	p, err := parseArgs([]string{"-fv", "a", "--wait=2s", "b", "--socket", "/s", "--", "-c"}, rmmodFlags...)
	if err != nil || !p.has("force") || !p.has("verbose") || p.val("wait") != "2s" || p.val("socket") != "/s" ||
		len(p.pos) != 3 || p.pos[2] != "-c" {
		t.Fatalf("%+v %v", p, err)
	}
	if p, err = parseArgs([]string{"-w", "x"}, rmmodFlags...); err != nil || !p.has("wait") || p.val("wait") != "" || p.pos[0] != "x" {
		t.Fatalf("optional value must not take the next argument: %+v %v", p, err)
	}
	for _, bad := range [][]string{{"--nope"}, {"-z"}, {"--force=1"}, {"--socket"}} {
		if _, err := parseArgs(bad, rmmodFlags...); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestFormatLsmod(t *testing.T) {
	got := FormatLsmod([]daemon.ModuleStatus{
		{Name: "a_very_long_module_name_x", Size: 123456789, Refs: 12, Holders: []string{"x", "y"}},
		{Name: "b", Size: 0, Refs: 0},
	})
	want := "Module                  Size  Used by\n" +
		"a_very_long_module_name_x 123456789  12 x,y\n" +
		"b                          0  0\n"
	if got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{nil, 0},
		{errors.New("x"), 1},
		{usageErrorf("x"), 2},
		{&raceless.ModuleError{Err: raceless.ErrNotFound}, 3},
		{&control.Error{Code: control.CodeExists}, 4},
		{&raceless.BusyError{}, 5},
		{&control.Error{Code: control.CodePermission}, 6},
		{&control.Error{Code: control.CodeInvalid}, 7},
		{control.ErrNoDaemon, 8},
		{control.Unsupportedf("x"), 9},
		{&raceless.ModuleError{Op: "call", Module: "m", Err: raceless.ErrGone}, 3},
		{&control.Error{Code: control.CodeGone}, 3},
		{&control.Error{Code: control.CodeFormat}, 7},
		{&control.Error{Code: control.CodeParam}, 7},
		{&control.Error{Code: control.CodeInit}, 1},
		{&wasm.FileError{Op: "compile", Path: "/x", Err: wasm.ErrCompile}, 7},
		{&raceless.ModuleError{Op: "init", Module: "m", Err: fmt.Errorf("%w: %w", raceless.ErrInit, raceless.ErrInvalid)}, 1},
	} {
		if got := ExitCode(tc.err); got != tc.code {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.code)
		}
	}
}

// insmod's text comes from the error's class: "Invalid parameters" only for
// a parameter ResolveParams refused, never for an Init's EINVAL.
func TestKmodReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&control.Error{Code: control.CodeParam}, "Invalid parameters"},
		{&control.Error{Code: control.CodeInvalid}, "Invalid argument"},
		{&control.Error{Code: control.CodeFormat}, "Invalid module format"},
		{&control.Error{Code: control.CodeInit}, "Module init failed"},
		{&control.Error{Code: control.CodeExists}, "File exists"},
		{&control.Error{Code: control.CodeFailed}, ""},
	} {
		if got := kmodReason(tc.err); got != tc.want {
			t.Errorf("kmodReason(%q) = %q, want %q", tc.err.(*control.Error).Code, got, tc.want)
		}
	}
}

func TestOneLine(t *testing.T) {
	if got, want := oneLine("a: too many results\n\thave (i32, i32)\n\twant (i32)\nnext\n"), "a: too many results have (i32, i32) want (i32); next"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
