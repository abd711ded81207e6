package cli

import (
	"testing"

	"github.com/raceless/raceless/cmd/raceless/internal/control"
)

// A refused unload names everything that holds the module: routes with
// requests in flight and mounts, both when both do.
func TestRmmodBusyNamesRoutesAndMounts(t *testing.T) {
	e := &env{name: "rmmod"}
	for _, tc := range []struct {
		routes, mounts []string
		want           string
	}{
		{[]string{"GET /x (1)"}, nil, "rmmod: ERROR: Module m is in use: requests in flight on routes: GET /x (1)"},
		{nil, []string{"/m"}, "rmmod: ERROR: Module m is in use: mounted at /m"},
		{[]string{"GET /x (1)", "GET /y (2)"}, []string{"/m", "/n"},
			"rmmod: ERROR: Module m is in use: requests in flight on routes: GET /x (1), GET /y (2); mounted at /m, /n"},
	} {
		err := e.rmmodError("m", &control.Error{Code: "busy", Message: "m: busy", Module: "m", Refs: 1, Routes: tc.routes, Mounts: tc.mounts})
		if err.Error() != tc.want {
			t.Errorf("routes %v mounts %v:\n got %s\nwant %s", tc.routes, tc.mounts, err, tc.want)
		}
		if code := ExitCode(err); code != ExitBusy {
			t.Errorf("exit %d, want %d", code, ExitBusy)
		}
	}
}
