package control

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/wasm"
	"github.com/raceless/raceless/wasm/modsig"
	"github.com/raceless/raceless/wasm/policy"
)

// Every sentinel of every class is classified as that class, wrapped as the
// host and the daemon wrap errors, and survives the trip over the wire: the
// daemon's code, the client's class and errors.Is on the wire error.
func TestClassesEveryRow(t *testing.T) {
	if Classes[0].Exit != 0 || ClassOf(nil) != &Classes[0] {
		t.Fatal("Classes[0] is not success")
	}
	if classFailed.Code != CodeFailed || ClassOf(errors.New("x")) != classFailed || ClassOf(&Error{Code: "nonsense"}) != classFailed {
		t.Fatal("an unclassified error is not \"failed\"")
	}
	codes := map[string]bool{}
	for i := range Classes {
		c := &Classes[i]
		if c.Code != "" {
			if codes[c.Code] {
				t.Errorf("code %q twice", c.Code)
			}
			codes[c.Code] = true
			if got := ClassOf(&Error{Code: c.Code}); got != c {
				t.Errorf("wire code %q: class %q", c.Code, got.Code)
			}
		}
		if i > 0 && i < len(Classes)-1 && len(c.Sentinels) == 0 && c.Code != CodeUsage {
			t.Errorf("class %q matches nothing", c.Code)
		}
		for _, s := range c.Sentinels {
			op := "load"
			if c.Op != "" {
				op = c.Op
			}
			err := fmt.Errorf("outer: %w", &raceless.ModuleError{Op: "load", Module: "m",
				Err: &raceless.ModuleError{Op: op, Module: "m", Err: fmt.Errorf("inner: %w", s.Err)}})
			if got := ClassOf(err); got != c {
				t.Errorf("%s: class %q (exit %d), want %q (exit %d)", s.Name, got.Code, got.Exit, c.Code, c.Exit)
				continue
			}
			if c.Code == "" { // client side only
				continue
			}
			we := ErrorOf(err)
			if we.Code != c.Code || we.Message != err.Error() || we.Module != "m" {
				t.Errorf("%s: wire error %+v", s.Name, we)
			}
			if ClassOf(we) != c || !errors.Is(we, s.Err) {
				t.Errorf("%s: the wire error lost its class (%q) or errors.Is", s.Name, ClassOf(we).Code)
			}
		}
	}
}

// The cases issue 15 names, and the errnos of the VFS, as they really come.
func TestClassesOfRealErrors(t *testing.T) {
	param := &raceless.ModuleError{Op: "param", Module: "m", Err: fmt.Errorf("unknown parameter %q: %w", "x", raceless.ErrInvalid)}
	initInval := &raceless.ModuleError{Op: "init", Module: "m", Err: fmt.Errorf("%w: %w", raceless.ErrInit, &wasm.GuestError{Code: -22, Msg: "bad"})}
	_, statErr := os.Stat(filepath.Join(t.TempDir(), "nope"))
	for _, tc := range []struct {
		name string
		err  error
		code string
		exit int
	}{
		{"ResolveParams", param, CodeParam, 7},
		{"Init returning EINVAL", initInval, CodeInit, 1},
		{"compile", &wasm.FileError{Op: "compile", Path: "/x.wasm", Err: fmt.Errorf("%w: bad opcode", wasm.ErrCompile)}, CodeFormat, 7},
		{"unknown import", &raceless.ModuleError{Op: "load", Module: "m", Err: &wasm.FileError{Op: "compile", Path: "/x.wasm", Err: fmt.Errorf("env.f: %w", wasm.ErrUnknownImport)}}, CodeFormat, 7},
		{"memory over the limit", &wasm.FileError{Op: "instantiate", Path: "/x.wasm", Err: fmt.Errorf("%w: out of memory", wasm.ErrInstantiate)}, CodeFormat, 7},
		{"trap in _initialize", &wasm.FileError{Op: "instantiate", Path: "/x.wasm", Err: fmt.Errorf("%w: %w", wasm.ErrInstantiate, wasm.ErrTrap)}, CodeFault, 1},
		{"gone", &raceless.ModuleError{Op: "call", Module: "m", Err: raceless.ErrGone}, CodeGone, 3},
		{"umount EINVAL", &os.PathError{Op: "umount", Path: "/b", Err: vfs.EINVAL}, CodeInvalid, 7},
		{"umount EBUSY", &os.PathError{Op: "umount", Path: "/b", Err: vfs.EBUSY}, CodeBusy, 5},
		{"mount ENODEV", &os.PathError{Op: "mount", Path: "/b", Err: vfs.ENODEV}, CodeGone, 3},
		{"ENOENT", &os.PathError{Op: "open", Path: "/b", Err: vfs.ENOENT}, CodeNotFound, 3},
		{"os.Stat", statErr, CodeNotFound, 3},
		{"EXDEV", &os.PathError{Op: "rename", Path: "/b", Err: vfs.EXDEV}, CodeFailed, 1},
		{"BusyError", &raceless.BusyError{Module: "m", Reason: "in use"}, CodeBusy, 5},
		{"EPERM", syscall.EPERM, CodePermission, 6},
		{"bad signature", &raceless.ModuleError{Op: "load", Module: "m", Err: &wasm.FileError{Op: "verify", Path: "/x.wasm", Err: fmt.Errorf("%w: %w", wasm.ErrKeyRejected, modsig.ErrBadSignature)}}, CodeKeyRejected, 10},
		{"unsigned, enforced", &wasm.FileError{Op: "verify", Path: "/x.wasm", Err: fmt.Errorf("%w: %w (signatures are enforced)", wasm.ErrKeyRejected, modsig.ErrUnsigned)}, CodeKeyRejected, 10},
		{"capability", &wasm.FileError{Op: "instantiate", Path: "/x.wasm", Err: fmt.Errorf("module m wants capability fs-read: %w", wasm.ErrCapability)}, CodePermission, 6},
		{"granted directory missing", &wasm.FileError{Op: "instantiate", Path: "/x.wasm", Err: &os.PathError{Op: "chroot", Path: "/srv", Err: vfs.ENOENT}}, CodeNotFound, 3},
		{"policy", fmt.Errorf("p.conf:1: %w: unknown directive", policy.ErrSyntax), CodeInvalid, 7},
		{"key file", fmt.Errorf("k.key: %w: no PEM block", modsig.ErrBadKey), CodeInvalid, 7},
		{"keyring others may write", fmt.Errorf("keyring: /k is writable by users other than its owner: %w", fs.ErrPermission), CodePermission, 6},
		{"no daemon", fmt.Errorf("%w at /s: %w", ErrNoDaemon, syscall.ECONNREFUSED), "", 8},
		{"no daemon, permission", fmt.Errorf("%w at /s: %w", ErrNoDaemon, syscall.EACCES), CodePermission, 6},
	} {
		if c := ClassOf(tc.err); c.Code != tc.code || c.Exit != tc.exit {
			t.Errorf("%s (%v): class %q exit %d, want %q exit %d", tc.name, tc.err, c.Code, c.Exit, tc.code, tc.exit)
		}
	}
}

// docs/cli.md's table of exit statuses is Classes, row for row.
func TestDocsExitStatusTable(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "docs", "cli.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Exit statuses\n")
	if !ok {
		t.Fatal(`docs/cli.md has no "## Exit statuses" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var rows [][]string
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "|") {
			if len(rows) > 0 {
				break // the table ended
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows = append(rows, cells)
	}
	want := [][]string{{"status", "code", "meaning", "message", "errors"}, {"---", "---", "---", "---", "---"}}
	for _, c := range Classes {
		code, text := "", ""
		if c.Code != "" {
			code = "`" + c.Code + "`"
		}
		if c.Text != "" {
			text = c.Text
		}
		var names []string
		for _, s := range c.Sentinels {
			names = append(names, "`"+s.Name+"`")
		}
		errs := strings.Join(names, ", ")
		if c.Op != "" {
			errs += " with op `" + c.Op + "`"
		}
		want = append(want, []string{fmt.Sprint(c.Exit), code, c.Meaning, text, errs})
	}
	if len(rows) != len(want) {
		t.Errorf("docs/cli.md's table has %d lines, Classes make %d", len(rows), len(want))
	}
	for i := range max(len(rows), len(want)) {
		var got, w []string
		if i < len(rows) {
			got = rows[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if strings.Join(got, " | ") != strings.Join(w, " | ") {
			t.Errorf("line %d of the table:\n got | %s |\nwant | %s |", i+1, strings.Join(got, " | "), strings.Join(w, " | "))
		}
	}
}
