package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
)

var modinfoFlags = []flagSpec{
	{short: "F", long: "field", kind: requiredValue, arg: "FIELD", help: "print only this field's values"},
	{long: "keyring", kind: requiredValue, arg: "DIR", help: "check a FILE's signature against the public keys in DIR (a NAME's is checked by the daemon, against its keyring)"},
}

// isFile says whether a modinfo/insmod argument names a file rather than a
// module: it contains a slash, ends in .wasm, or exists.
func isFile(arg string) bool {
	if strings.Contains(arg, "/") || strings.HasSuffix(arg, ".wasm") {
		return true
	}
	_, err := os.Stat(arg)
	return err == nil
}

func runModinfo(e *env) error {
	if len(e.args.pos) == 0 {
		return usageErrorf("missing module name or filename")
	}
	keys, err := keyringFlag(e)
	if err != nil {
		return err
	}
	var firstErr error
	for _, arg := range e.args.pos {
		var mi daemon.ModInfo
		var err error
		if isFile(arg) {
			abs, _ := filepath.Abs(arg)
			mi, err = inspect(abs, keys)
		} else {
			err = e.callInto(&control.Request{Op: "modinfo", Name: arg}, &mi)
		}
		if err != nil {
			switch {
			case errors.Is(err, control.ErrNoDaemon):
				err = e.generic(err)
			case ExitCode(err) == ExitNotFound:
				err = e.fail(err, "Module %s not found.", arg)
			default:
				err = e.fail(err, "%s: %v", arg, err)
			}
			if firstErr != nil {
				fmt.Fprintln(e.stderr, firstErr.Error())
			}
			firstErr = err
			continue
		}
		if e.args.has("json") {
			if err := e.printJSON(mi); err != nil {
				return err
			}
			continue
		}
		fmt.Fprint(e.stdout, FormatModinfo(mi, e.args.val("field")))
	}
	return firstErr
}

// FormatModinfo formats a module's metadata as kmod's modinfo does: one
// "%-16s%s\n" line per field ("field:" padded to 16 columns); with field
// set, only that field's values, one per line. A module file's signature
// takes kmod's signer and sig_key, and sig_status: trusted, unknown key,
// unsigned or bad signature (with sig_error saying why).
func FormatModinfo(mi daemon.ModInfo, field string) string {
	type kv struct{ k, v string }
	info := mi.Info
	rows := []kv{{"filename", mi.Filename}, {"name", info.Name}}
	for _, f := range []kv{{"version", info.Version}, {"license", info.License}, {"description", info.Description}, {"author", info.Author}} {
		if f.v != "" {
			rows = append(rows, f)
		}
	}
	rows = append(rows, kv{"depends", joinComma(info.Depends)})
	if len(info.Imports) > 0 {
		rows = append(rows, kv{"imports", joinComma(info.Imports)})
	}
	for _, a := range info.Aliases {
		rows = append(rows, kv{"alias", a})
	}
	for _, p := range info.Params {
		rows = append(rows, kv{"parm", fmt.Sprintf("%s:%s (%s)", p.Name, p.Description, p.Type)})
	}
	for _, c := range mi.Capabilities {
		rows = append(rows, kv{"capability", c})
	}
	if s := mi.Signature; s != nil {
		if s.Signer != "" {
			rows = append(rows, kv{"signer", s.Signer})
		}
		if s.KeyID != "" {
			rows = append(rows, kv{"sig_key", s.KeyID})
		}
		rows = append(rows, kv{"sig_status", s.Status})
		if s.Error != "" {
			rows = append(rows, kv{"sig_error", s.Error})
		}
	}
	var b strings.Builder
	for _, r := range rows {
		switch {
		case field == "":
			fmt.Fprintf(&b, "%-16s%s\n", r.k+":", r.v)
		case field == r.k:
			b.WriteString(r.v + "\n")
		}
	}
	return b.String()
}
