// Package procfs is a procfs-like view of a raceless host for the vfs
// package (modules/procfs wraps it in a module). Layout:
//
//	/modules              the host's modules, byte-exact /proc/modules format
//	/mounts               the namespace's mounts, /proc/mounts format
//	/filesystems          registered filesystem types ("nodev\t<name>")
//	/sys/kernel/tainted   the host's taint mask, as /proc/sys/kernel/tainted
//	                      (decimal, the kernel's bits: raceless.TaintFlag)
//	/<module>/refcnt      reference count
//	/<module>/holders/    one empty file per module that depends on it
//	/<module>/parameters/ one file per parameter, holding its value
//	/<module>/initstate   coming, live or going
//	/<module>/taint       taint flags, as /sys/module/<module>/taint ("RD")
//	/<module>/taint_reasons why it was tainted, one reason per line
//
// Every file's content is generated when it is opened (a snapshot), so a
// reader sees one consistent state however it reads.
package procfs

import (
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"sort"
	"strings"
	"time"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/vfs"
)

// Type returns the filesystem type showing host h.
func Type(h *raceless.Host) vfs.FileSystemType {
	return vfs.FileSystemTypeFunc(func(_ context.Context, req vfs.MountRequest) (vfs.Superblock, error) {
		if req.Options != "" && req.Options != "rw" && req.Options != "defaults" {
			return nil, fmt.Errorf("proc: unknown options %q: %w", req.Options, vfs.EINVAL)
		}
		s := &sb{h: h, ns: req.NS, t: time.Now()}
		return s, nil
	})
}

type sb struct {
	h  *raceless.Host
	ns *vfs.Namespace
	t  time.Time
}

func (s *sb) Root() vfs.Node { return s.root() }
func (s *sb) Statfs() (vfs.Statfs, error) {
	return vfs.Statfs{Bsize: 4096, NameLen: vfs.NameMax}, nil
}
func (s *sb) Release() {}

// FormatModules renders modules as /proc/modules does, one line each:
//
//	name size refcnt deps state 0xaddr[ (taints)]
//
// deps lists the holders (modules using it) as "a,b," or "-"; state is
// Live, Loading or Unloading. Gone instances are left out.
func FormatModules(mods []*raceless.Instance) string {
	var b strings.Builder
	for _, m := range mods {
		if l := ModuleLine(m); l != "" {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// ModuleLine is one /proc/modules line (without the newline), or "" for a
// gone instance. The address is fake and stable for the instance.
func ModuleLine(m *raceless.Instance) string {
	var state string
	switch m.State() {
	case raceless.StateComing:
		state = "Loading"
	case raceless.StateLive:
		state = "Live"
	case raceless.StateGoing:
		state = "Unloading"
	default:
		return ""
	}
	deps := "-"
	if hs := m.Holders(); len(hs) > 0 {
		deps = strings.Join(hs, ",") + ","
	}
	line := fmt.Sprintf("%s %d %d %s %s 0x%016x", m.Name(), m.Size(), m.Refs(), deps, state, Address(m))
	if f := m.TaintFlags(); f != "" {
		line += " (" + f + ")"
	}
	return line
}

// Address is the fake, stable load address shown for an instance: kernel
// module space (0xffffffffa0000000 up), page aligned, derived from the
// instance's name, key and load time so that a reload shows a new one.
func Address(m *raceless.Instance) uint64 {
	f := fnv.New64a()
	fmt.Fprintf(f, "%s\x00%s\x00%d", m.Name(), m.Key(), m.LoadedAt().UnixNano())
	return 0xffffffffa0000000 | (f.Sum64() & 0x0ffff000)
}

func ino(p string) uint64 {
	f := fnv.New64a()
	io.WriteString(f, p)
	return f.Sum64() | 1
}

// dir is a generated directory.
type dir struct {
	s      *sb
	path   string
	parent func() vfs.Node
	list   func() []string // names, files and dirs
	child  func(name string) (vfs.Node, bool)
}

func (d *dir) Stat() (vfs.Attr, error) {
	return vfs.Attr{Ino: ino(d.path), Mode: fs.ModeDir | 0o555, Nlink: 2, Size: 0,
		Atime: d.s.t, Mtime: d.s.t, Ctime: d.s.t}, nil
}

func (d *dir) Lookup(name string) (vfs.Node, error) {
	switch name {
	case ".":
		return d, nil
	case "..":
		return d.parent(), nil
	}
	if n, ok := d.child(name); ok {
		return n, nil
	}
	return nil, vfs.ENOENT
}

func (d *dir) ReadDir() ([]vfs.DirEntry, error) {
	var out []vfs.DirEntry
	for _, name := range d.list() {
		n, ok := d.child(name)
		if !ok {
			continue
		}
		a, _ := n.Stat()
		out = append(out, vfs.DirEntry{Name: name, Ino: a.Ino, Mode: a.Mode.Type()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// file is a generated read-only file.
type file struct {
	s    *sb
	path string
	gen  func() string
}

func (f *file) Stat() (vfs.Attr, error) {
	return vfs.Attr{Ino: ino(f.path), Mode: 0o444, Nlink: 1, Atime: f.s.t, Mtime: f.s.t, Ctime: f.s.t}, nil
}

func (f *file) Open(flag int) (vfs.Handle, error) {
	if flag&3 != 0 {
		return nil, vfs.EACCES
	}
	return &snapshot{data: []byte(f.gen())}, nil
}

type snapshot struct{ data []byte }

func (s *snapshot) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(s.data)) {
		return 0, io.EOF
	}
	n := copy(p, s.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (s *snapshot) WriteAt([]byte, int64) (int, error) { return 0, vfs.EBADF }
func (s *snapshot) Release() error                     { return nil }
func (s *snapshot) Size() int64                        { return int64(len(s.data)) }

func (s *sb) root() *dir {
	var r *dir
	r = &dir{s: s, path: "/", parent: func() vfs.Node { return r },
		list: func() []string {
			names := []string{"modules", "mounts", "filesystems", "sys"}
			for _, m := range s.h.Modules() {
				names = append(names, m.Name())
			}
			return names
		},
		child: func(name string) (vfs.Node, bool) {
			switch name {
			case "modules":
				return &file{s, "/modules", func() string { return FormatModules(s.h.Modules()) }}, true
			case "mounts":
				return &file{s, "/mounts", func() string {
					if s.ns == nil {
						return ""
					}
					return s.ns.FormatMounts()
				}}, true
			case "filesystems":
				return &file{s, "/filesystems", func() string {
					var b strings.Builder
					for _, r := range s.h.Lookup(raceless.KindFilesystem) {
						fmt.Fprintf(&b, "nodev\t%s\n", r.Name)
					}
					return b.String()
				}}, true
			case "sys":
				return s.sysDir(r), true
			}
			m, ok := s.h.Module(name)
			if !ok || m.State() == raceless.StateGone {
				return nil, false
			}
			return s.moduleDir(r, m), true
		}}
	return r
}

// sysDir is /sys, holding kernel/tainted.
func (s *sb) sysDir(root *dir) *dir {
	var sys, kernel *dir
	kernel = &dir{s: s, path: "/sys/kernel", parent: func() vfs.Node { return sys },
		list: func() []string { return []string{"tainted"} },
		child: func(name string) (vfs.Node, bool) {
			if name != "tainted" {
				return nil, false
			}
			return &file{s, "/sys/kernel/tainted", func() string { return fmt.Sprintf("%d\n", s.h.TaintMask()) }}, true
		}}
	sys = &dir{s: s, path: "/sys", parent: func() vfs.Node { return root },
		list:  func() []string { return []string{"kernel"} },
		child: func(name string) (vfs.Node, bool) { return kernel, name == "kernel" }}
	return sys
}

func (s *sb) moduleDir(root *dir, m *raceless.Instance) *dir {
	p := "/" + m.Name()
	var d *dir
	holders := func() *dir {
		hd := &dir{s: s, path: p + "/holders", parent: func() vfs.Node { return d },
			list: m.Holders,
			child: func(name string) (vfs.Node, bool) {
				for _, h := range m.Holders() {
					if h == name {
						return &file{s, p + "/holders/" + name, func() string { return "" }}, true
					}
				}
				return nil, false
			}}
		return hd
	}
	params := func() *dir {
		return &dir{s: s, path: p + "/parameters", parent: func() vfs.Node { return d },
			list: func() []string {
				var names []string
				for k := range m.Params() {
					names = append(names, k)
				}
				return names
			},
			child: func(name string) (vfs.Node, bool) {
				v, ok := m.Params()[name]
				if !ok {
					return nil, false
				}
				return &file{s, p + "/parameters/" + name, func() string { return v + "\n" }}, true
			}}
	}
	d = &dir{s: s, path: p, parent: func() vfs.Node { return root },
		list: func() []string {
			return []string{"refcnt", "holders", "parameters", "initstate", "taint", "taint_reasons"}
		},
		child: func(name string) (vfs.Node, bool) {
			switch name {
			case "refcnt":
				return &file{s, p + "/refcnt", func() string { return fmt.Sprintf("%d\n", m.Refs()) }}, true
			case "initstate":
				return &file{s, p + "/initstate", func() string { return m.State().String() + "\n" }}, true
			case "taint":
				return &file{s, p + "/taint", func() string { return m.TaintFlags() + "\n" }}, true
			case "taint_reasons":
				return &file{s, p + "/taint_reasons", func() string {
					ts := m.Taints()
					if len(ts) == 0 {
						return ""
					}
					return strings.Join(ts, "\n") + "\n"
				}}, true
			case "holders":
				return holders(), true
			case "parameters":
				return params(), true
			}
			return nil, false
		}}
	return d
}
