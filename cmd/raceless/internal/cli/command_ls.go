package cli

import (
	"fmt"
	"strconv"

	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
)

var lsFlags = []flagSpec{
	{short: "l", help: "long listing: mode, size, name"},
	{short: "p", help: "append / to directories (ls -p)"},
}

// runLs lists directories of the daemon's namespace as ls -1 does: one
// name per line, sorted by name (byte order). A file operand is listed
// under the name given; with more than one operand, the files come first,
// then each directory after a "PATH:" line, separated by empty lines, as
// GNU ls prints them. A failed operand prints its error and the others are
// still listed; the exit status is that of the last failure.
func runLs(e *env) error {
	paths := e.args.pos
	if len(paths) == 0 {
		paths = []string{"/"} // the daemon's working directory
	}
	var files []daemon.ListEntry
	type dir struct {
		path    string
		entries []daemon.ListEntry
	}
	var dirs []dir
	var last error
	for _, p := range paths {
		var l daemon.Listing
		if err := e.callInto(&control.Request{Op: "readdir", Target: p}, &l); err != nil {
			if last != nil {
				fmt.Fprintln(e.stderr, last.Error())
			}
			last = e.lsError(err)
			continue
		}
		if l.Dir {
			dirs = append(dirs, dir{p, l.Entries})
		} else {
			files = append(files, l.Entries...)
		}
	}
	for _, f := range files {
		e.lsLine(f)
	}
	for i, d := range dirs {
		if len(paths) > 1 {
			if i > 0 || len(files) > 0 {
				fmt.Fprintln(e.stdout)
			}
			fmt.Fprintf(e.stdout, "%s:\n", d.path)
		}
		for _, f := range d.entries {
			e.lsLine(f)
		}
	}
	return last
}

func (e *env) lsLine(f daemon.ListEntry) {
	name := f.Name
	if e.args.has("p") && len(f.Mode) > 0 && f.Mode[0] == 'd' {
		name += "/"
	}
	if e.args.has("l") {
		size := strconv.FormatInt(f.Size, 10)
		if f.Size < 0 {
			size = "?"
		}
		fmt.Fprintf(e.stdout, "%s %8s %s\n", f.Mode, size, name)
		return
	}
	fmt.Fprintln(e.stdout, name)
}

// lsError is the daemon's error as its one line, as cat prints it
// ("ls: ERROR: stat /nope: no such file or directory").
func (e *env) lsError(err error) error {
	var we *control.Error
	if asWire(err, &we) {
		return e.fail(err, "%s", we.Message)
	}
	return e.generic(err)
}
