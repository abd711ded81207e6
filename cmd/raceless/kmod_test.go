package main_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Ported from Linux's tools/testing/selftests/kmod/kmod.sh (test_kmod's
// request_module tests), through `raceless request`, which calls
// Host.Request from N goroutines in the daemon as test_kmod does from N
// kernel threads.
func TestKmodSelftest(t *testing.T) {
	d := startDaemon(t)
	t.Run("0001-empty-name", func(t *testing.T) {
		r := d.run("request", "")
		if r.code != 3 || r.stderr != "request: ERROR: 1 of 1 requests failed: request \"\": empty module name: not found\n" {
			t.Fatalf("exit %d, %q", r.code, r.stderr)
		}
	})
	t.Run("0002-nonexistent", func(t *testing.T) {
		r := d.run("request", "nope")
		if r.code != 3 || r.stderr != "request: ERROR: 1 of 1 requests failed: request nope: module nope not found among the built-in modules: not found\n" {
			t.Fatalf("exit %d, %q", r.code, r.stderr)
		}
	})
	t.Run("0008-50-threads", func(t *testing.T) {
		d.run("rmmod", "hello").ok(t)
		if got := d.run("request", "--threads", "50", "hello").ok(t).stdout; got != "50 requests succeeded\n" {
			t.Fatalf("%q", got)
		}
	})
	t.Run("0009-cap-plus-quarter", func(t *testing.T) {
		// cap + cap/4 = 62 requests for 62 distinct aliases: each takes a
		// slot of the cap (they are not merged), and all succeed.
		d.run("rmmod", "hello").ok(t)
		var names []string
		for i := range 62 {
			names = append(names, fmt.Sprintf("hello-%d", i))
		}
		if got := d.run(append([]string{"request"}, names...)...).ok(t).stdout; got != "62 requests succeeded\n" {
			t.Fatalf("%q", got)
		}
		if got := d.run("lsmod").ok(t).stdout; got != lsmodHeader+"hello                   4096  0\n"+ramfsLine {
			t.Fatalf("lsmod: %q", got)
		}
	})
}

// Autoloading disabled: a request fails with "not found", never succeeds.
func TestKmodAutoloadDisabled(t *testing.T) {
	d := startDaemon(t, "--no-autoload")
	d.run("rmmod", "hello").ok(t)
	r := d.run("request", "hello")
	if r.code != 3 || !strings.Contains(r.stderr, "demand loading is not configured: not found") {
		t.Fatalf("exit %d, %q", r.code, r.stderr)
	}
	if got := d.run("lsmod").ok(t).stdout; got != lsmodHeader+ramfsLine {
		t.Fatalf("lsmod: %q", got)
	}
}

// A missing or broken module index gives a clear error, not success.
func TestKmodBrokenIndex(t *testing.T) {
	mods := t.TempDir()
	d := startDaemon(t, "--modules", mods)
	r := d.run("modprobe", "foo")
	want := "modprobe: FATAL: module foo: " + filepath.Join(mods, "modules.dep") + ": module index not found (run depmod): not found\n"
	if r.code != 3 || r.stderr != want {
		t.Fatalf("missing index: exit %d, %q, want %q", r.code, r.stderr, want)
	}
	r = d.run("request", "foo")
	if r.code != 3 || !strings.Contains(r.stderr, "module index not found (run depmod)") {
		t.Fatalf("request with a missing index: exit %d, %q", r.code, r.stderr)
	}
	// Built-in modules still resolve.
	d.run("modprobe", "hello_consumer").ok(t)
	if err := os.WriteFile(filepath.Join(mods, "modules.dep"), []byte("a.wasm:\nthis is not an index line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = d.run("modprobe", "foo")
	want = "modprobe: FATAL: module foo: " + filepath.Join(mods, "modules.dep") + ":2: malformed module index: invalid argument: want \"path.wasm: dep.wasm ...\"\n"
	if r.code != 7 || r.stderr != want {
		t.Fatalf("broken index: exit %d, %q, want %q", r.code, r.stderr, want)
	}
}

// Demand-loaded modules are removed by autoclean only after a whole sweep
// period unused: after a use, the first sweep clears the mark, the second
// removes.
func TestAutoclean(t *testing.T) {
	d := startDaemon(t)
	d.run("rmmod", "hello").ok(t)
	d.run("request", "greeter").ok(t)
	d.run("call", "hello_greet").ok(t) // a use: survives the next sweep
	if got := d.run("rmmod", "-a", "--json").ok(t).stdout; got != "[]\n" {
		t.Fatalf("first sweep removed %q", got)
	}
	if got := d.run("rmmod", "-a", "--json").ok(t).stdout; got != "[\n  \"hello\"\n]\n" {
		t.Fatalf("second sweep removed %q", got)
	}
	// A module loaded explicitly is never autocleaned.
	d.run("modprobe", "hello").ok(t)
	d.run("rmmod", "-a").ok(t)
	d.run("rmmod", "-a").ok(t)
	if got := d.run("lsmod").ok(t).stdout; got != lsmodHeader+"hello                   4096  0\n"+ramfsLine {
		t.Fatalf("lsmod: %q", got)
	}
}

func TestAutocleanSweeper(t *testing.T) {
	d := startDaemon(t, "--autoclean", "20ms")
	d.run("rmmod", "hello").ok(t)
	d.run("request", "hello").ok(t)
	waitFor(t, "the sweeper to remove hello", func() bool {
		return d.run("lsmod").ok(t).stdout == lsmodHeader+ramfsLine
	})
	if !strings.Contains(d.log.String(), "msg=autoclean removed=[hello]") {
		t.Fatalf("no autoclean log line:\n%s", d.log.String())
	}
}

// SIGTERM with a reference held: shutdown waits, then forces and says so.
func TestShutdownForces(t *testing.T) {
	d := startDaemon(t, "--shutdown-timeout", "200ms")
	d.run("modprobe", "hello_consumer").ok(t)
	holdRef(t, d, "hello                   4096  2 hello_consumer")
	d.stop()
	log := d.log.String()
	if !strings.Contains(log, `msg="shutdown forced modules that still had references" forced=[hello]`) {
		t.Fatalf("shutdown log:\n%s", log)
	}
	// Dependents first: hello_consumer went before hello.
	if i, j := strings.Index(log, "msg=\"module unloaded\" module=hello_consumer"), strings.Index(log, "module=hello forced"); i < 0 || (j >= 0 && j < i) {
		t.Fatalf("unload order:\n%s", log)
	}
}

// Module log lines carry the module's name.
func TestModuleLogs(t *testing.T) {
	d := startDaemon(t, "--log-format", "json")
	waitFor(t, "the ready line", func() bool { return strings.Contains(d.log.String(), "raceless daemon ready") })
	if !strings.Contains(d.log.String(), `"msg":"loaded","module":"hello","greeting":"Hello"`) {
		t.Fatalf("log:\n%s", d.log.String())
	}
}

func TestMetrics(t *testing.T) {
	d := startDaemon(t, "--metrics-addr", "127.0.0.1:0")
	var addr string
	re := regexp.MustCompile(`metrics=(127\.0\.0\.1:\d+)`)
	waitFor(t, "the ready line", func() bool {
		m := re.FindStringSubmatch(d.log.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	d.run("modprobe", "hello_consumer").ok(t)
	d.run("call", "hello_greet").ok(t)
	d.run("rmmod", "hello").fails(t, 5, "rmmod: ERROR: Module hello is in use by: hello_consumer")
	d.run("mount", "-t", "initrd", "-o", "X-mount.mkdir", "none", "/i").ok(t)
	d.run("rmmod", "hello_consumer").ok(t)
	d.run("rmmod", "hello").ok(t)
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`raceless_module_references{module="initrd",state="live"} 1`,
		`raceless_module_load_seconds_count{module="hello_consumer"} 1`,
		`raceless_module_load_seconds_count{module="hello"} 1`, // at boot
		`raceless_module_unload_seconds_count{module="hello"} 1`,
		`raceless_module_load_seconds_count{module="initrd"} 1`, // demand-loaded by mount -t initrd
		`raceless_module_calls_total{module="hello"} 1`,
		`raceless_module_failures_total{module="hello",op="unload"} 1`,
		`raceless_control_requests_total{op="probe"} 1`,
		"# TYPE raceless_module_unload_seconds summary",
	} {
		if !strings.Contains(string(body), want+"\n") && !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

// Every kmod link runs its command (argv[0]).
func TestSymlinks(t *testing.T) {
	d := startDaemon(t)
	d.runAs("modprobe", "hello_consumer").ok(t)
	if got := d.runAs("lsmod").ok(t).stdout; !strings.HasPrefix(got, lsmodHeader+"hello_consumer") {
		t.Fatalf("lsmod link: %q", got)
	}
	d.runAs("rmmod", "hello").fails(t, 5, "rmmod: ERROR: Module hello is in use by: hello_consumer")
	d.runAs("modinfo", "nope").fails(t, 3, "modinfo: ERROR: Module nope not found.")
	d.runAs("insmod").fails(t, 2, "insmod: ERROR: missing filename (usage: insmod FILE [key=value ...])")
	d.runAs("insmod", "/nonexistent/x.wasm").fails(t, 3, "insmod: ERROR: could not load module /nonexistent/x.wasm: No such file or directory")
	d.runAs("depmod").fails(t, 2, "depmod: ERROR: want exactly one directory (usage: depmod [-n] [--json] DIR)")
	d.runAs("umount").fails(t, 2, "umount: ERROR: want exactly one directory (usage: umount [-l] DIR)")
	if r := d.runAs("mount"); r.code != 0 && r.code != 9 {
		t.Fatalf("mount link: %+v", r)
	}
}
