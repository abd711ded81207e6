package main_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/raceless/raceless/internal/testdeadline"
	"github.com/raceless/raceless/internal/wasmtest"
)

// startFleetEtcd runs `raceless fleet etcd` on a unix socket and waits for
// its ready line; cleanup stops it with SIGTERM (after the daemons, whose
// cleanups run first).
func startFleetEtcd(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rlfe") // short: a unix socket's path is limited
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "etcd.sock")
	out := &syncBuffer{}
	cmd := exec.Command(bin, "fleet", "etcd", "--data-dir", filepath.Join(dir, "data"), "--listen", sock)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		defer os.RemoveAll(dir)
		cmd.Process.Signal(syscall.SIGTERM)
		ctx, cancel := testdeadline.Context(t)
		defer cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("fleet etcd: %v\n%s", err, out.String())
			}
		case <-ctx.Done():
			cmd.Process.Kill()
			<-done
			t.Errorf("fleet etcd did not stop after SIGTERM\n%s", out.String())
		}
	})
	waitFor(t, "fleet etcd ready", func() bool {
		select {
		case err := <-done:
			t.Fatalf("fleet etcd exited: %v\n%s", err, out.String())
		default:
		}
		return strings.Contains(out.String(), "serves unix://"+sock)
	})
	return "unix://" + sock
}

// The README's three-host fleet, as a reader runs it: an etcd, three
// daemons following fleet demo, fleet set of examples/fleet/demo.toml as
// it is, fleet status showing every host converged; a host stopped
// (SIGTERM) leaves the status at once.
func TestFleetThreeHosts(t *testing.T) {
	ep := startFleetEtcd(t)
	blobs := t.TempDir()
	var hosts []*daemon
	for _, h := range []string{"h1", "h2", "h3"} {
		hosts = append(hosts, startDaemon(t, "--etcd", ep, "--fleet", "demo", "--host", h, "--blob-dir", blobs))
	}
	fleetCmd := func(args ...string) result {
		return hosts[0].run(append(append([]string{"fleet"}, args...), "--etcd", ep, "--fleet", "demo")...)
	}
	status := func() (st struct {
		Stable int64
		Hosts  []struct {
			Host       string
			Converged  bool
			Generation int64
			Modules    []struct{ Name string }
		}
	}) {
		t.Helper()
		r := fleetCmd("status", "--json").ok(t)
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, r.stdout)
		}
		return st
	}
	// The daemons register through their leases; set waits for nobody
	// but the hosts it finds, so wait for the three first.
	waitFor(t, "three hosts in the fleet", func() bool { return len(status().Hosts) == 3 })
	r := fleetCmd("set", "../../examples/fleet/demo.toml").ok(t)
	if !strings.Contains(r.stdout, "fleet demo: generation 1 (previous 0): canary h1\n") || !strings.HasSuffix(r.stdout, "fleet demo: generation 1 done: updated h1 h2 h3\n") {
		t.Fatalf("fleet set:\n%s", r.stdout)
	}
	st := status()
	if st.Stable != 1 || len(st.Hosts) != 3 {
		t.Fatalf("status: %+v", st)
	}
	for _, h := range st.Hosts {
		found := false
		for _, m := range h.Modules {
			found = found || m.Name == "hello_consumer"
		}
		if !h.Converged || h.Generation != 1 || !found {
			t.Errorf("host %s: %+v", h.Host, h)
		}
	}
	text := fleetCmd("status").ok(t).stdout
	if !strings.HasPrefix(text, "fleet demo: desired generation 1, stable 1\nrollout of generation 1: done, canary h1, updated h1 h2 h3\nHOST") || strings.Count(text, "  yes  ") != 3 {
		t.Errorf("fleet status:\n%s", text)
	}
	for _, d := range hosts {
		if out := d.run("lsmod").ok(t).stdout; !strings.Contains(out, "hello_consumer") {
			t.Errorf("lsmod of %s:\n%s", d.sock, out)
		}
		if out := d.run("cat", "/proc/mounts").ok(t).stdout; !strings.Contains(out, " /fleet ramfs ") {
			t.Errorf("/proc/mounts of %s:\n%s", d.sock, out)
		}
	}
	// fleet drain waits for the host to unload what the fleet loaded;
	// undrain brings it back.
	if out := fleetCmd("drain", "h2").ok(t).stdout; out != "fleet demo: h2 drained\n" {
		t.Errorf("fleet drain h2: %q", out)
	}
	if out := hosts[1].run("lsmod").ok(t).stdout; strings.Contains(out, "hello_consumer") {
		t.Errorf("lsmod of the drained h2:\n%s", out)
	}
	fleetCmd("undrain", "h2").ok(t)
	waitFor(t, "h2 back", func() bool {
		for _, h := range status().Hosts {
			if h.Host == "h2" {
				return h.Converged && h.Generation == 1 && strings.Contains(hosts[1].run("lsmod").ok(t).stdout, "hello_consumer")
			}
		}
		return false
	})
	hosts[2].stop()
	if st := status(); len(st.Hosts) != 2 {
		t.Errorf("a stopped host is still in the status: %+v", st.Hosts)
	}
	// A state that does not parse is refused before etcd is touched.
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[[module]]\nnmae = \"x\"\n"), 0o600)
	if r := fleetCmd("set", bad); r.code != 7 || !strings.Contains(r.stderr, "module[0].nmae: unknown key") {
		t.Errorf("fleet set of a bad file: exit %d, stderr %q", r.code, r.stderr)
	}
}

// The fleet's command-line mistakes are usage errors (exit 2), caught
// before anything starts or etcd is asked.
func TestFleetUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		line string
	}{
		{[]string{"fleet"}, "fleet: ERROR: want set, status, drain, undrain or etcd (usage: "},
		{[]string{"fleet", "nope"}, `fleet: ERROR: unknown fleet command "nope" (set, status, drain, undrain or etcd) (usage: `},
		{[]string{"fleet", "set"}, "fleet: ERROR: fleet set takes one desired state FILE (or directory) (usage: "},
		{[]string{"fleet", "set", "x.toml", "--batch", "0"}, `fleet: ERROR: bad --batch "0" (usage: `},
		{[]string{"fleet", "set", "x.toml", "--max-error-rate", "2"}, `fleet: ERROR: bad --max-error-rate "2" (0 to 1) (usage: `},
		{[]string{"fleet", "set", "x.toml", "--health", "healthz"}, `fleet: ERROR: bad --health "healthz": a path starting with / (usage: `},
		{[]string{"fleet", "drain"}, "fleet: ERROR: fleet drain takes one HOST (usage: "},
		{[]string{"fleet", "etcd"}, "fleet: ERROR: fleet etcd needs --data-dir DIR (usage: "},
		{[]string{"serve", "--etcd", "http://127.0.0.1:1"}, "serve: ERROR: --etcd needs --fleet NAME (usage: "},
		{[]string{"serve", "--fleet", "demo"}, "serve: ERROR: --fleet, --host and --blob-dir need --etcd (usage: "},
		{[]string{"serve", "--etcd", "http://127.0.0.1:1", "--fleet", "demo", "--config", "x.toml"}, "serve: ERROR: --config and --etcd cannot be combined: the host follows one desired state (usage: "},
		{[]string{"serve", "--etcd", "http://127.0.0.1:1", "--fleet", "demo", "--host", "a/b"}, `serve: ERROR: bad --host "a/b": not a name (letters, digits, _ and -) (usage: `},
	} {
		r := runCmd(t, filepath.Join(t.TempDir(), "sock"), nil, "raceless", append(c.args, "--cache-dir", "off")...)
		if c.args[0] == "fleet" {
			r = runCmd(t, "", nil, "raceless", c.args...)
		}
		if r.code != 2 || !strings.HasPrefix(r.stderr, c.line) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2, %q...", c.args, r.code, r.stderr, c.line)
		}
	}
}

// A real module file through the fleet: a Go-built wasm module (about
// 2 MB: several chunks in etcd), signed, to hosts that enforce
// signatures. fleet set stores it, each host fetches it, checks its digest
// and the daemon's loader its signature, and it goes live; the same
// module unsigned is refused by the canary's loader (key rejected), the
// rollout fails and the fleet stays on the signed one.
func TestFleetSignedWasm(t *testing.T) {
	dir := t.TempDir()
	wasm, err := os.ReadFile(wasmtest.Build(t, "examples/wasm/provider"))
	if err != nil {
		t.Fatal(err)
	}
	if len(wasm) < 1<<20 {
		t.Fatalf("provider.wasm is %d bytes: too small to test chunking", len(wasm))
	}
	keys := filepath.Join(dir, "keys")
	os.Mkdir(keys, 0o700)
	keygen(t, keys, "alice")
	unsigned := filepath.Join(dir, "unsigned.wasm")
	if err := os.WriteFile(unsigned, wasm, 0o644); err != nil {
		t.Fatal(err)
	}
	signed := filepath.Join(dir, "provider.wasm")
	runCmd(t, "", nil, "raceless", "sign", "--key", filepath.Join(keys, "alice.key"), "-o", signed, unsigned).ok(t)
	state := func(file string) string {
		p := filepath.Join(dir, "state-"+filepath.Base(file)+".toml")
		if err := os.WriteFile(p, []byte("[[module]]\nfile = \""+file+"\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	ep := startFleetEtcd(t)
	blobs := t.TempDir()
	var hosts []*daemon
	for _, h := range []string{"h1", "h2"} {
		hosts = append(hosts, startDaemon(t, "--etcd", ep, "--fleet", "wasm", "--host", h, "--blob-dir", blobs, "--keyring", keys, "--sig-enforce"))
	}
	fleetCmd := func(args ...string) result {
		return hosts[0].run(append(append([]string{"fleet"}, args...), "--etcd", ep, "--fleet", "wasm")...)
	}
	waitFor(t, "two hosts in the fleet", func() bool {
		return strings.Count(fleetCmd("status").ok(t).stdout, "\nh") == 2
	})
	r := fleetCmd("set", state(signed), "--timeout", "5m").ok(t)
	if !strings.HasSuffix(r.stdout, "generation 1 done: updated h1 h2\n") {
		t.Fatalf("fleet set of the signed module:\n%s", r.stdout)
	}
	for _, d := range hosts {
		if out := d.run("lsmod").ok(t).stdout; !strings.Contains(out, "provider") {
			t.Errorf("lsmod of %s:\n%s", d.sock, out)
		}
	}
	r = fleetCmd("set", state(unsigned), "--timeout", "5m")
	if r.code != 1 || !strings.Contains(r.stderr, "canary h1: ") || !strings.Contains(r.stderr, "key rejected") || !strings.Contains(r.stderr, "h1 back on generation 1: rollout failed") {
		t.Fatalf("fleet set of the unsigned module: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if out := fleetCmd("status").ok(t).stdout; !strings.Contains(out, "\nrollout of generation 2: failed: canary h1: module unsigned.wasm (sha256:") {
		t.Errorf("fleet status after the refused rollout:\n%s", out)
	}
	for _, d := range hosts {
		if out := d.run("lsmod").ok(t).stdout; !strings.Contains(out, "provider") {
			t.Errorf("lsmod of %s after the refused rollout:\n%s", d.sock, out)
		}
	}
}
