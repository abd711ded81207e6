package cli

import (
	"fmt"
	"strings"

	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
)

func runLsmod(e *env) error {
	if len(e.args.pos) > 0 {
		return usageErrorf("unexpected argument %q", e.args.pos[0])
	}
	var mods []daemon.ModuleStatus
	if err := e.callInto(&control.Request{Op: "list"}, &mods); err != nil {
		return err
	}
	if e.args.has("json") {
		return e.printJSON(mods)
	}
	fmt.Fprint(e.stdout, FormatLsmod(mods))
	return nil
}

// FormatLsmod formats modules as kmod's lsmod does: a header, then
// printf("%-19s %8ld  %d", name, size, refcnt) and " h1,h2" when the module
// has holders.
func FormatLsmod(mods []daemon.ModuleStatus) string {
	var b strings.Builder
	b.WriteString("Module                  Size  Used by\n")
	for _, m := range mods {
		fmt.Fprintf(&b, "%-19s %8d  %d", m.Name, m.Size, m.Refs)
		if len(m.Holders) > 0 {
			b.WriteString(" " + joinComma(m.Holders))
		}
		b.WriteByte('\n')
	}
	return b.String()
}
