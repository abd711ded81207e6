//go:build wasip1

// Command statusfs is a WebAssembly module that provides "statusfs", a
// read-only pseudo-filesystem (sdk.FS, not sdk.WritableFS: every change
// answers EROFS). Its files are generated when they are opened, from the
// module's state:
//
//	/mount            the mount's source and options
//	/superblocks      how many statusfs superblocks this instance has
//	/info/squares     n and n*n for n = 1..squares (the module parameter)
//	/info/self        a symlink to ../mount
package main

import (
	"strconv"
	"strings"

	"github.com/raceless/raceless/wasm/sdk"
)

func main() {}

var (
	squares = 100
	live    int // superblocks of this instance
)

func init() {
	sdk.OnInit(func() error {
		if v, ok := sdk.Param("squares"); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 1<<20 {
				return sdk.ErrInvalid
			}
			squares = n
		}
		return sdk.RegisterFS("statusfs", mount)
	})
}

// The inodes: fixed, so stable.
const (
	inoRoot = 1 + iota
	inoMount
	inoSuperblocks
	inoInfo
	inoSquares
	inoSelf
)

type entry struct {
	name   string
	parent uint64
	mode   uint32
}

var tree = map[uint64]entry{
	inoRoot:        {"", inoRoot, sdk.ModeDir | 0o555},
	inoMount:       {"mount", inoRoot, sdk.ModeRegular | 0o444},
	inoSuperblocks: {"superblocks", inoRoot, sdk.ModeRegular | 0o444},
	inoInfo:        {"info", inoRoot, sdk.ModeDir | 0o555},
	inoSquares:     {"squares", inoInfo, sdk.ModeRegular | 0o444},
	inoSelf:        {"self", inoInfo, sdk.ModeSymlink | 0o777},
}

type statusfs struct {
	source, options string
	uid, gid        uint32
	time            int64
	open            map[uint64][]byte // handle -> the content generated at open
	next            uint64
}

func mount(source, options string, uid, gid uint32) (sdk.FS, error) {
	live++
	return &statusfs{source: source, options: options, uid: uid, gid: gid, open: map[uint64][]byte{}}, nil
}

func (s *statusfs) generate(ino uint64) []byte {
	switch ino {
	case inoMount:
		return []byte("source " + s.source + "\noptions " + s.options + "\n")
	case inoSuperblocks:
		return []byte(strconv.Itoa(live) + "\n")
	case inoSquares:
		var b strings.Builder
		for n := 1; n <= squares; n++ {
			b.WriteString(strconv.Itoa(n) + " " + strconv.Itoa(n*n) + "\n")
		}
		return []byte(b.String())
	case inoSelf:
		return []byte("../mount")
	}
	return nil
}

func (s *statusfs) Root() uint64 { return inoRoot }

func (s *statusfs) Statfs() (sdk.Statfs, error) {
	return sdk.Statfs{Bsize: 4096, Files: uint64(len(tree)), NameLen: 255}, nil
}

func (s *statusfs) Getattr(ino uint64) (sdk.Attr, error) {
	e, ok := tree[ino]
	if !ok {
		return sdk.Attr{}, sdk.ErrNotFound
	}
	a := sdk.Attr{Ino: ino, Mode: e.mode, Nlink: 1, UID: s.uid, GID: s.gid, Atime: s.time, Mtime: s.time, Ctime: s.time}
	if e.mode&sdk.ModeType == sdk.ModeDir {
		a.Nlink = 2
		for _, c := range tree {
			if c.parent == ino && c.mode&sdk.ModeType == sdk.ModeDir && c.name != "" {
				a.Nlink++
			}
		}
	} else {
		a.Size = uint64(len(s.generate(ino)))
	}
	return a, nil
}

func (s *statusfs) Lookup(dir uint64, name string) (sdk.Attr, error) {
	d, ok := tree[dir]
	if !ok {
		return sdk.Attr{}, sdk.ErrNotFound
	}
	if d.mode&sdk.ModeType != sdk.ModeDir {
		return sdk.Attr{}, sdk.ErrNotDir
	}
	switch name {
	case ".":
		return s.Getattr(dir)
	case "..":
		return s.Getattr(d.parent)
	}
	for ino, e := range tree {
		if e.parent == dir && e.name == name && ino != inoRoot {
			return s.Getattr(ino)
		}
	}
	return sdk.Attr{}, sdk.ErrNotFound
}

func (s *statusfs) ReadDir(dir uint64) ([]sdk.DirEntry, error) {
	d, ok := tree[dir]
	if !ok {
		return nil, sdk.ErrNotFound
	}
	if d.mode&sdk.ModeType != sdk.ModeDir {
		return nil, sdk.ErrNotDir
	}
	var out []sdk.DirEntry
	for ino := uint64(inoRoot + 1); ino <= inoSelf; ino++ { // in inode order: stable
		if e := tree[ino]; e.parent == dir {
			out = append(out, sdk.DirEntry{Name: e.name, Ino: ino, Mode: e.mode & sdk.ModeType})
		}
	}
	return out, nil
}

func (s *statusfs) Readlink(ino uint64) (string, error) {
	if e, ok := tree[ino]; !ok || e.mode&sdk.ModeType != sdk.ModeSymlink {
		return "", sdk.ErrInvalid
	}
	return string(s.generate(ino)), nil
}

func (s *statusfs) Open(ino uint64, flags int) (uint64, error) {
	if _, ok := tree[ino]; !ok {
		return 0, sdk.ErrNotFound
	}
	s.next++
	s.open[s.next] = s.generate(ino)
	return s.next, nil
}

func (s *statusfs) Read(fh uint64, p []byte, off int64) (int, error) {
	b, ok := s.open[fh]
	if !ok {
		return 0, sdk.ErrBadHandle
	}
	if off >= int64(len(b)) {
		return 0, nil
	}
	return copy(p, b[off:]), nil
}

func (s *statusfs) Release(fh uint64) error {
	delete(s.open, fh)
	return nil
}

func (s *statusfs) Unmount() { live-- }
