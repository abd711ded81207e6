package vfs

import (
	"io/fs"
	"os"
)

// FS returns an io/fs view of the namespace as seen from p's root: names
// are fs.ValidPath paths (so UTF-8: a name the native methods accept but
// fs.ValidPath refuses is fs.ErrInvalid here; ReadDir still lists it as it
// is), resolved across mount points. The view
// implements fs.ReadDirFS, fs.StatFS, fs.ReadFileFS and fs.ReadLinkFS
// (ReadLink and Lstat: a symlink is not followed). Each open fs.File is a
// *File and pins its mount until closed.
func (p *Proc) FS() fs.FS { return iofs{p} }

type iofs struct{ p *Proc }

func (v iofs) name(op, name string) (string, error) {
	if !fs.ValidPath(name) {
		return "", &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	return "/" + name, nil
}

func rename(err error, name string) error {
	if pe, ok := err.(*fs.PathError); ok {
		return &fs.PathError{Op: pe.Op, Path: name, Err: pe.Err}
	}
	return err
}

func (v iofs) Open(name string) (fs.File, error) {
	n, err := v.name("open", name)
	if err != nil {
		return nil, err
	}
	f, err := v.p.Open(n, os.O_RDONLY, 0)
	if err != nil {
		return nil, rename(err, name)
	}
	f.name = name
	return f, nil
}

func (v iofs) Stat(name string) (fs.FileInfo, error) {
	n, err := v.name("stat", name)
	if err != nil {
		return nil, err
	}
	fi, err := v.p.Stat(n)
	if err != nil {
		return nil, rename(err, name)
	}
	return fi, nil
}

func (v iofs) ReadDir(name string) ([]fs.DirEntry, error) {
	n, err := v.name("readdir", name)
	if err != nil {
		return nil, err
	}
	ents, err := v.p.ReadDir(n)
	return ents, rename(err, name)
}

func (v iofs) ReadFile(name string) ([]byte, error) {
	n, err := v.name("readfile", name)
	if err != nil {
		return nil, err
	}
	b, err := v.p.ReadFile(n)
	return b, rename(err, name)
}

func (v iofs) Lstat(name string) (fs.FileInfo, error) {
	n, err := v.name("lstat", name)
	if err != nil {
		return nil, err
	}
	fi, err := v.p.Lstat(n)
	if err != nil {
		return nil, rename(err, name)
	}
	return fi, nil
}

func (v iofs) ReadLink(name string) (string, error) {
	n, err := v.name("readlink", name)
	if err != nil {
		return "", err
	}
	t, err := v.p.Readlink(n)
	return t, rename(err, name)
}
