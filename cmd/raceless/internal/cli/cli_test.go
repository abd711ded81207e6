package cli

import (
	"errors"
	"testing"

	"go.uber.org/goleak"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
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
	} {
		if got := ExitCode(tc.err); got != tc.code {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.code)
		}
	}
}
