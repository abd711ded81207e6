package vfstest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/raceless/raceless/internal/testdeadline"
)

// The helper: the test binary started again (by run), with helperEnv set,
// under the credentials of a user, to make system calls on the FUSE mount
// as that user. It reads a list of ops on stdin, makes each with umask 0
// (so that modes are the ones asked for), and writes one result per op on
// stdout.

const helperEnv = "RACELESS_VFSTEST_HELPER"

// Main runs the suite's helper, and exits, when the test binary was
// started as one (by the FUSE checks, to act as another user); otherwise
// it returns at once. Call it first in TestMain.
func Main() {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	var ops []op
	if err := json.NewDecoder(os.Stdin).Decode(&ops); err != nil {
		fmt.Fprintln(os.Stderr, "vfstest helper:", err)
		os.Exit(2)
	}
	unix.Umask(0)
	out := make([]result, len(ops))
	for i, o := range ops {
		out[i] = o.do()
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "vfstest helper:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// op is one system call the helper makes.
type op struct {
	Op    string  `json:"op"`
	Path  string  `json:"path"`
	Path2 string  `json:"path2,omitempty"`
	Mode  uint32  `json:"mode,omitempty"`
	Flags int     `json:"flags,omitempty"`
	UID   int     `json:"uid,omitempty"`
	GID   int     `json:"gid,omitempty"`
	Size  int64   `json:"size,omitempty"`
	Dev   uint64  `json:"dev,omitempty"`
	Data  string  `json:"data,omitempty"`
	Times []int64 `json:"times,omitempty"` // utimes: atime and mtime, in seconds; none: now (utimensat with NULL)
}

// result is what an op got: its errno's name ("" for success), and what
// stat and read return.
type result struct {
	Errno string    `json:"errno"`
	Stat  *statInfo `json:"stat,omitempty"`
	Data  string    `json:"data,omitempty"`
}

type statInfo struct {
	Ino, Nlink, Rdev    uint64
	Mode, UID, GID      uint32
	Size, Blocks        int64
	Atime, Mtime, Ctime int64 // nanoseconds
}

func statOf(st *unix.Stat_t) *statInfo {
	return &statInfo{Ino: st.Ino, Nlink: uint64(st.Nlink), Rdev: uint64(st.Rdev), Mode: st.Mode, UID: st.Uid, GID: st.Gid,
		Size: st.Size, Blocks: st.Blocks, Atime: st.Atim.Nano(), Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}
}

func errResult(err error) result {
	if err == nil {
		return result{}
	}
	if en, ok := err.(syscall.Errno); ok {
		return result{Errno: unix.ErrnoName(en)}
	}
	return result{Errno: err.Error()}
}

func (o op) do() result {
	switch o.Op {
	case "open":
		fd, err := unix.Open(o.Path, o.Flags|unix.O_CLOEXEC, o.Mode)
		if err == nil {
			unix.Close(fd)
		}
		return errResult(err)
	case "write":
		fd, err := unix.Open(o.Path, o.Flags|unix.O_WRONLY|unix.O_CLOEXEC, o.Mode)
		if err != nil {
			return errResult(err)
		}
		defer unix.Close(fd)
		_, err = unix.Write(fd, []byte(o.Data))
		return errResult(err)
	case "read":
		b, err := os.ReadFile(o.Path)
		if err != nil {
			var en syscall.Errno
			if errors.As(err, &en) {
				err = en
			}
			return errResult(err)
		}
		return result{Data: string(b)}
	case "mkdir":
		return errResult(unix.Mkdir(o.Path, o.Mode))
	case "rmdir":
		return errResult(unix.Rmdir(o.Path))
	case "unlink":
		return errResult(unix.Unlink(o.Path))
	case "rename":
		return errResult(unix.Rename(o.Path, o.Path2))
	case "link":
		return errResult(unix.Link(o.Path, o.Path2))
	case "symlink":
		return errResult(unix.Symlink(o.Path, o.Path2))
	case "mknod":
		return errResult(unix.Mknod(o.Path, o.Mode, int(o.Dev)))
	case "bind":
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return errResult(err)
		}
		defer unix.Close(fd)
		return errResult(unix.Bind(fd, &unix.SockaddrUnix{Name: o.Path}))
	case "chmod":
		return errResult(unix.Chmod(o.Path, o.Mode))
	case "chown":
		return errResult(unix.Chown(o.Path, o.UID, o.GID))
	case "lchown":
		return errResult(unix.Lchown(o.Path, o.UID, o.GID))
	case "truncate":
		return errResult(unix.Truncate(o.Path, o.Size))
	case "utimes":
		var ts []unix.Timespec
		if len(o.Times) == 2 {
			ts = []unix.Timespec{unix.NsecToTimespec(o.Times[0] * 1e9), unix.NsecToTimespec(o.Times[1] * 1e9)}
		}
		return errResult(unix.UtimesNanoAt(unix.AT_FDCWD, o.Path, ts, 0))
	case "stat", "lstat":
		var st unix.Stat_t
		var err error
		if o.Op == "stat" {
			err = unix.Stat(o.Path, &st)
		} else {
			err = unix.Lstat(o.Path, &st)
		}
		if err != nil {
			return errResult(err)
		}
		return result{Stat: statOf(&st)}
	}
	return result{Errno: "unknown op " + o.Op}
}

// user is who a helper runs as.
type user struct {
	name     string
	uid, gid uint32
	groups   []uint32
}

// The users of the checks: root, and two others that share no group;
// u1 is also in group g1 (a supplementary group), which u2 is not.
const g1 = 65530

var (
	rootUser = user{name: "root"}
	u1       = user{name: "u1", uid: 65534, gid: 65534, groups: []uint32{65534, g1}}
	u2       = user{name: "u2", uid: 65533, gid: 65533, groups: []uint32{65533}}
)

// helperBinary makes the test binary executable by every user: a hard
// link to it (a copy across filesystems) in a new directory open to all
// (go test's own build directory is root's alone). It is removed at the
// end of t.
func helperBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("the test binary: %v", err)
	}
	dir, err := os.MkdirTemp("", "vfstest-helper-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper")
	if err := os.Link(exe, bin); err != nil {
		src, err := os.Open(exe)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		dst, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		if err := dst.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// runAs makes ops as u in a helper process, and returns their results.
func runAs(t *testing.T, bin string, u user, ops ...op) []result {
	t.Helper()
	in, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	// If TestMain did not call Main, the binary would run the tests
	// instead: -test.run=^$ makes it run none (and answer nothing).
	cmd := exec.CommandContext(ctx, bin, "-test.run=^$")
	// A race-enabled child would sleep a second at exit (atexit_sleep_ms).
	cmd.Env = append(os.Environ(), helperEnv+"=1", "GORACE=atexit_sleep_ms=0")
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}}
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			t.Fatalf("the helper (as %s) did not finish by the test's deadline: %v\n%s", u.name, err, stderr.String())
		}
		t.Fatalf("the helper (as %s): %v\n%s", u.name, err, stderr.String())
	}
	var res []result
	if err := json.Unmarshal(out, &res); err != nil || len(res) != len(ops) {
		t.Fatalf("the helper (as %s) answered %q (%v): does the test package's TestMain call vfstest.Main first?", u.name, out, err)
	}
	return res
}
