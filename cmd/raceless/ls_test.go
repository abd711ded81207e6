package main_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// raceless ls lists a directory of the daemon's namespace as ls -1 does;
// /proc/<module>/holders and /proc/<module>/parameters are directories.
func TestLs(t *testing.T) {
	d := startDaemon(t)
	d.run("modprobe", "hello_consumer").ok(t)
	if got := d.run("ls", "/proc/hello/holders").ok(t).stdout; got != "hello_consumer\n" {
		t.Fatalf("ls /proc/hello/holders: %q", got)
	}
	if got := d.run("ls", "/proc/hello/parameters").ok(t).stdout; got != "greeting\nrepeat\n" {
		t.Fatalf("ls /proc/hello/parameters: %q", got)
	}
	got := d.run("ls", "-p", "/proc/hello").ok(t).stdout
	if !strings.Contains(got, "holders/\n") || !strings.Contains(got, "parameters/\n") || !strings.Contains(got, "refcnt\n") {
		t.Fatalf("ls -p /proc/hello: %q", got)
	}
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	for i := 1; i < len(lines); i++ {
		if lines[i-1] >= lines[i] {
			t.Fatalf("ls -p /proc/hello is not sorted: %q", got)
		}
	}
	if got := d.run("ls", "-l", "/proc/hello").ok(t).stdout; !strings.HasPrefix(got, "dr-xr-xr-x        0 holders\n") ||
		!strings.Contains(got, "\ndr-xr-xr-x        0 parameters\n") || !strings.Contains(got, "\n-r--r--r--        0 refcnt\n") {
		t.Fatalf("ls -l /proc/hello: %q", got)
	}
	// A file is listed under the name given, as ls lists a file operand;
	// several operands: files first, then each directory under a header.
	if got := d.run("ls", "/proc/modules").ok(t).stdout; got != "/proc/modules\n" {
		t.Fatalf("ls /proc/modules: %q", got)
	}
	if got := d.run("ls", "/proc/hello_consumer/holders", "/proc/modules", "/proc/hello/holders").ok(t).stdout; got != "/proc/modules\n\n/proc/hello_consumer/holders:\n\n/proc/hello/holders:\nhello_consumer\n" {
		t.Fatalf("ls of three operands: %q", got)
	}
	d.run("ls", "/nope").fails(t, 3, "ls: ERROR: stat /nope: no such file or directory")
	d.run("ls", "/proc/modules/x").fails(t, 1, "ls: ERROR: stat /proc/modules/x: not a directory")
	d.run("ls", "--bogus").fails(t, 2, "ls: ERROR: unrecognized option '--bogus' (usage: ls [-l] [-p] [PATH ...])")
	if r := d.run("ls", "--help").ok(t); !strings.HasPrefix(r.stdout, "Usage: raceless ls [-l] [-p] [PATH ...]\n") {
		t.Fatalf("ls --help: %q", r.stdout)
	}
}

// rmmod --wait -v prints a line when what it waits for changes, not ten
// times a second: two references held, then one, then none.
func TestRmmodWaitProgressLines(t *testing.T) {
	d := startDaemon(t)
	release1 := holdRef(t, d)
	release2 := holdRef(t, d, "hello                   4096  2")
	cmd := exec.Command(bin, "rmmod", "-v", "-w", "hello")
	cmd.Env = append(os.Environ(), "RACELESS_SOCKET="+d.sock)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rmmod -w to report 2 references", func() bool {
		return strings.Contains(stderr.String(), "rmmod: waiting for hello: 2 references\n")
	})
	release1()
	waitFor(t, "rmmod -w to report 1 references", func() bool {
		return strings.Contains(stderr.String(), "rmmod: waiting for hello: 1 references\n")
	})
	release2()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("rmmod -w: %v\n%s", err, stderr.String())
	}
	if got, want := stderr.String(), "rmmod: waiting for hello: 2 references\nrmmod: waiting for hello: 1 references\n"; got != want {
		t.Fatalf("rmmod -v -w printed:\n%s\nwant:\n%s", got, want)
	}
}
