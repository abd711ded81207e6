//go:build wasip1

// Command faultfs is a test module: the filesystem "faultfs" whose file
// "trap" panics when read (a trap) and "spin" loops forever when read (a
// call deadline).
package main

import "github.com/raceless/raceless/wasm/sdk"

func main() {}

func init() {
	sdk.OnInit(func() error {
		return sdk.RegisterFS("faultfs", func(_, _ string, _, _ uint32) (sdk.FS, error) { return faultfs{}, nil })
	})
}

type faultfs struct{}

var names = map[string]uint64{"trap": 2, "spin": 3}

var spins int

func (faultfs) Root() uint64                { return 1 }
func (faultfs) Statfs() (sdk.Statfs, error) { return sdk.Statfs{Bsize: 4096, NameLen: 255}, nil }
func (faultfs) Getattr(ino uint64) (sdk.Attr, error) {
	switch ino {
	case 1:
		return sdk.Attr{Ino: 1, Mode: sdk.ModeDir | 0o555, Nlink: 2}, nil
	case 2, 3:
		return sdk.Attr{Ino: ino, Mode: sdk.ModeRegular | 0o444, Nlink: 1, Size: 1}, nil
	}
	return sdk.Attr{}, sdk.ErrNotFound
}
func (f faultfs) Lookup(dir uint64, name string) (sdk.Attr, error) {
	if name == "." || name == ".." {
		return f.Getattr(1)
	}
	if ino, ok := names[name]; ok && dir == 1 {
		return f.Getattr(ino)
	}
	return sdk.Attr{}, sdk.ErrNotFound
}
func (faultfs) ReadDir(uint64) ([]sdk.DirEntry, error) {
	return []sdk.DirEntry{{Name: "trap", Ino: 2, Mode: sdk.ModeRegular}, {Name: "spin", Ino: 3, Mode: sdk.ModeRegular}}, nil
}
func (faultfs) Readlink(uint64) (string, error)        { return "", sdk.ErrInvalid }
func (faultfs) Open(ino uint64, _ int) (uint64, error) { return ino, nil }
func (faultfs) Read(fh uint64, p []byte, _ int64) (int, error) {
	if fh == 2 {
		panic("faultfs: read of trap")
	}
	for {
		spins++
	}
}
func (faultfs) Release(uint64) error { return nil }
func (faultfs) Unmount()             {}
