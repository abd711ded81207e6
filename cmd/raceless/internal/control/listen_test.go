package control

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Something that is not a socket at the socket path is refused, named as
// what it is, and left alone; it is never "address already in use".
func TestListenNotSocket(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "dir")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		file: file + " exists and is not a socket (a regular file)",
		sub:  sub + " exists and is not a socket (a directory)",
	} {
		_, err := Listen(path, nil, nil)
		if err == nil || err.Error() != want || !errors.Is(err, ErrNotSocket) || !errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("Listen(%s): %v, want %q", path, err, want)
		}
	}
	if data, err := os.ReadFile(file); err != nil || string(data) != "keep" {
		t.Fatalf("the regular file was touched: %q %v", data, err)
	}
}

// A stale socket file (nobody listening: a daemon that died) is replaced.
func TestListenStaleSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if st, err := os.Lstat(sock); err != nil || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("no stale socket file to test with: %v", err)
	}
	s, err := Listen(sock, nil, nil)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer s.Close()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("the new socket does not accept: %v", err)
	}
	c.Close()
}
