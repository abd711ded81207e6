// Package atomicfile replaces files atomically: a reader, in this process
// or another, sees the old contents or the new ones, never a mix, and after
// a crash the file holds one of the two.
package atomicfile

import (
	"os"
	"path/filepath"
	"runtime"
)

// WriteFile writes data to path through a temporary file in the same
// directory: the temporary file is written, synced and given mode perm
// (exactly perm: the umask does not apply), then renamed over path, and
// the directory is synced so that the rename is durable (except on
// Windows, which cannot sync a directory). The directory must exist. An
// error before the rename removes the temporary file and leaves path
// untouched; an error syncing the directory comes after the rename.
func WriteFile(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil && tmp != "" {
			_ = os.Remove(tmp)
		}
	}()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	tmp = "" // renamed: nothing to remove
	return syncDir(dir)
}

// syncDir makes a rename in dir durable. Windows cannot sync a directory
// (nor needs to): there it does nothing.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
