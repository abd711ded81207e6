package cli

import (
	"fmt"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/cmd/raceless/internal/defaults"
	"github.com/raceless/raceless/cmd/raceless/internal/modindex"
)

var depmodFlags = []flagSpec{{short: "n", long: "dry-run", help: "print modules.dep and modules.alias instead of writing them"}}

// runDepmod indexes a module directory. It runs without the daemon, as
// kmod's depmod runs without the kernel.
func runDepmod(e *env) error {
	if len(e.args.pos) != 1 {
		return usageErrorf("want exactly one directory")
	}
	dir := e.args.pos[0]
	var builtins []raceless.Info
	for _, s := range defaults.Sources(nil) { // only Info is used: no host needed
		builtins = append(builtins, s.Info())
	}
	x, warns, err := modindex.BuildWithBuiltins(dir, readInfo, builtins)
	for _, w := range warns {
		fmt.Fprintf(e.stderr, "depmod: WARNING: %s\n", w)
	}
	if err != nil {
		return e.fail(err, "%v", err)
	}
	switch {
	case e.args.has("json"):
		return e.printJSON(struct {
			Dir     string           `json:"dir"`
			Entries []modindex.Entry `json:"modules"`
			Aliases []modindex.Alias `json:"aliases"`
		}{x.Dir, x.Entries, x.Aliases})
	case e.args.has("dry-run"):
		dep, alias := x.Encode()
		fmt.Fprintf(e.stdout, "# %s\n%s# %s\n%s", modindex.DepFile, dep, modindex.AliasFile, alias)
		return nil
	}
	if err := x.Write(); err != nil {
		return e.fail(err, "%v", err)
	}
	return nil
}
