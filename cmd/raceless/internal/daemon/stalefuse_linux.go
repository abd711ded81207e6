package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fuseType is the filesystem type of raceless's FUSE mounts in
// /proc/self/mountinfo: go-fuse mounts "fuse." + MountOptions.Name, and
// vfs/fusefs always names it "raceless" (directly or through fusermount's
// subtype).
const fuseType = "fuse.raceless"

// mountEntry is one line of /proc/self/mountinfo (proc(5)).
type mountEntry struct {
	Target, FSType, Source string
}

// readMountinfo parses /proc/self/mountinfo.
func readMountinfo() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT TARGET OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
		fields := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+2 >= len(fields) {
			continue
		}
		out = append(out, mountEntry{Target: unescapeMount(fields[4]), FSType: unescapeMount(fields[sep+1]), Source: unescapeMount(fields[sep+2])})
	}
	return out, sc.Err()
}

// unescapeMount undoes the kernel's octal escapes (\040 for a space) of
// mountinfo's fields.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// canonicalDir returns dir absolute with its parent's symbolic links
// resolved, as mountinfo names mount points; dir itself is not stat'ed (a
// dead FUSE mount there fails every stat with ENOTCONN).
func canonicalDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if abs == "/" {
		return abs, nil
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", err
	}
	return filepath.Join(parent, filepath.Base(abs)), nil
}

// statTimeout bounds the stat that tells a dead FUSE mount from a live one
// (a live server that hangs would hang it forever).
const statTimeout = 5 * time.Second

// clearStaleFuse makes dir ready for a FUSE mount after a daemon that died
// (kill -9) left its mount there: a raceless FUSE mount whose server is gone
// (stat fails ENOTCONN, "Transport endpoint is not connected") is detached
// lazily (umount2 MNT_DETACH as root, else fusermount -u -z) and logged. A
// raceless mount that still answers (another daemon serves it) and any
// mount that is not raceless's are refused (EBUSY), naming what is there.
func clearStaleFuse(dir string, log *slog.Logger) error {
	path, err := canonicalDir(dir)
	if err != nil {
		return err
	}
	mounts, err := readMountinfo()
	if err != nil {
		return fmt.Errorf("reading the mount table: %w", err)
	}
	var top *mountEntry
	for i := range mounts {
		if mounts[i].Target == path {
			top = &mounts[i] // the last one listed is on top
		}
	}
	if top == nil {
		return nil
	}
	if top.FSType != fuseType {
		return fmt.Errorf("%s is already a mount point (type %s, source %s), not a raceless FUSE mount: unmount it or choose another directory: %w",
			path, top.FSType, top.Source, syscall.EBUSY)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := os.Stat(path)
		errc <- err
	}()
	select {
	case err = <-errc:
	case <-time.After(statTimeout):
		return fmt.Errorf("%s is a raceless FUSE mount whose server does not answer (stat still waiting after %s): unmount it (fusermount -u -z %s): %w",
			path, statTimeout, path, syscall.EBUSY)
	}
	if !errors.Is(err, syscall.ENOTCONN) {
		return fmt.Errorf("%s is a raceless FUSE mount that is still served (another daemon?; stat: %v): %w", path, err, syscall.EBUSY)
	}
	how, err := detach(path)
	if err != nil {
		return fmt.Errorf("detaching the stale FUSE mount at %s: %w", path, err)
	}
	log.Warn("detached a stale FUSE mount left by a daemon that died", "dir", path, "type", top.FSType, "source", top.Source, "how", how)
	return nil
}

// detach unmounts path lazily: umount2(MNT_DETACH) when permitted (root),
// else fusermount3 -u -z or fusermount -u -z, whichever is installed.
func detach(path string) (string, error) {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err == nil {
		return "umount2(MNT_DETACH)", nil
	}
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES) {
		return "", fmt.Errorf("umount2: %w", err)
	}
	for _, tool := range []string{"fusermount3", "fusermount"} {
		bin, lerr := exec.LookPath(tool)
		if lerr != nil {
			continue
		}
		if out, xerr := exec.Command(bin, "-u", "-z", path).CombinedOutput(); xerr != nil {
			return "", fmt.Errorf("%s -u -z: %v: %s", bin, xerr, strings.TrimSpace(string(out)))
		}
		return bin + " -u -z", nil
	}
	return "", fmt.Errorf("umount2: %w, and neither fusermount3 nor fusermount is installed", err)
}
