package daemon

import (
	"io/fs"

	"github.com/raceless/raceless/cmd/raceless/internal/control"
)

// Listing is a "readdir" answer: a directory's entries sorted by name, or,
// for a path that is not a directory, that one file under the name given
// (as ls lists a file operand).
type Listing struct {
	Dir     bool        `json:"dir"`
	Entries []ListEntry `json:"entries"`
}

// ListEntry is one entry of a Listing.
type ListEntry struct {
	Name control.Bytes `json:"name"` // bytes: see control.Bytes
	// Mode is the mode as ls -l prints it ("drwxr-xr-x", "-r--r--r--").
	Mode string `json:"mode"`
	Size int64  `json:"size"` // -1 when the entry could not be stat'ed
}

func listEntry(name string, fi fs.FileInfo) ListEntry {
	return ListEntry{Name: control.Bytes(name), Mode: lsMode(fi.Mode()), Size: fi.Size()}
}

// lsMode is m as ls -l's first ten characters.
func lsMode(m fs.FileMode) string {
	t := byte('-')
	switch {
	case m.IsDir():
		t = 'd'
	case m&fs.ModeSymlink != 0:
		t = 'l'
	case m&fs.ModeNamedPipe != 0:
		t = 'p'
	case m&fs.ModeSocket != 0:
		t = 's'
	case m&fs.ModeCharDevice != 0:
		t = 'c'
	case m&fs.ModeDevice != 0:
		t = 'b'
	}
	return string(t) + m.Perm().String()[1:]
}

// opReadDir lists req.Target in the namespace (raceless ls).
func (d *Daemon) opReadDir(req *control.Request) (any, error) {
	if req.Target == "" {
		return nil, &control.Error{Code: control.CodeUsage, Message: "readdir: no path given"}
	}
	ns := d.ns.ns
	fi, err := ns.Stat(req.Target)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return Listing{Entries: []ListEntry{listEntry(req.Target, fi)}}, nil
	}
	ents, err := ns.ReadDir(req.Target)
	if err != nil {
		return nil, err
	}
	out := Listing{Dir: true, Entries: make([]ListEntry, 0, len(ents))}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil { // gone meanwhile, or not stat-able: its type is still known (ls -l prints ?s)
			out.Entries = append(out.Entries, ListEntry{Name: control.Bytes(e.Name()), Mode: lsMode(e.Type())[:1] + "?????????", Size: -1})
			continue
		}
		out.Entries = append(out.Entries, listEntry(e.Name(), info))
	}
	return out, nil
}
