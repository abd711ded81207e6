package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm/modinfo"
	"github.com/raceless/raceless/wasm/modsig"
)

// keygen makes a key pair dir/name.key, dir/name.pub with raceless keygen
// and returns the key's id.
func keygen(t *testing.T, dir, name string) string {
	t.Helper()
	prefix := filepath.Join(dir, name)
	r := runCmd(t, "", nil, "raceless", "keygen", prefix).ok(t)
	id, ok := strings.CutPrefix(strings.TrimSuffix(r.stdout, "\n"), prefix+".pub: sig_key ")
	if !ok || !regexp.MustCompile(`^([0-9A-F]{2}:){19}[0-9A-F]{2}$`).MatchString(id) {
		t.Fatalf("keygen printed %q", r.stdout)
	}
	return id
}

// modinfoField returns modinfo -F field of args.
func modinfoField(t *testing.T, field string, args ...string) string {
	t.Helper()
	return strings.TrimSuffix(runCmd(t, "", nil, "modinfo", append([]string{"-F", field}, args...)...).ok(t).stdout, "\n")
}

// keygen, sign and modinfo without a daemon: the key files, their modes, a
// signed file's signer and status with and without the keyring, a tampered
// file's bad signature, and the failures' exit statuses.
func TestKeygenSignModinfo(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	os.Mkdir(keys, 0o700)
	aliceID := keygen(t, keys, "alice")
	alice := filepath.Join(keys, "alice.key") // a keyring ignores all but *.pub
	if fi, err := os.Stat(alice); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("alice.key: %v, %v", fi.Mode(), err)
	}
	bobID := keygen(t, dir, "bob") // not in the keyring
	// keygen replaces no key file.
	k := filepath.Join(t.TempDir(), "k")
	keygen(t, filepath.Dir(k), "k")
	runCmd(t, "", nil, "raceless", "keygen", k).fails(t, 4, "keygen: ERROR: "+k+".pub: file exists")
	os.Remove(k + ".pub")
	runCmd(t, "", nil, "raceless", "keygen", k).fails(t, 4, "keygen: ERROR: open "+k+".key: file exists")
	if _, err := os.Stat(k + ".pub"); err == nil {
		t.Fatal("a failed keygen left k.pub")
	}

	mod := writeModule(t, dir, "m", tinyModule(t, "m", wasmtest.TinyOptions{}))
	signed := filepath.Join(dir, "signed.wasm")
	runCmd(t, "", nil, "raceless", "sign", "--key", alice, "-o", signed, mod).ok(t)
	if got := modinfoField(t, "sig_status", mod); got != "unsigned" {
		t.Fatalf("unsigned file: sig_status %q", got)
	}
	if got := modinfoField(t, "sig_status", signed); got != "unknown key" {
		t.Fatalf("signed file without a keyring: sig_status %q", got)
	}
	if got := modinfoField(t, "sig_key", signed); got != aliceID {
		t.Fatalf("sig_key %q, want keygen's %q", got, aliceID)
	}
	out := runCmd(t, "", nil, "modinfo", "--keyring", keys, signed).ok(t).stdout
	for _, l := range []string{"name:           m\n", "signer:         alice\n", "sig_key:        " + aliceID + "\n", "sig_status:     trusted\n"} {
		if !strings.Contains(out, l) {
			t.Fatalf("modinfo --keyring lacks %q:\n%s", l, out)
		}
	}
	// Signed in place, twice: the second signature replaces the first.
	inPlace := writeModule(t, dir, "inplace", tinyModule(t, "inplace", wasmtest.TinyOptions{}))
	runCmd(t, "", nil, "raceless", "sign", "--key", alice, inPlace).ok(t)
	runCmd(t, "", nil, "raceless", "sign", "--key", filepath.Join(dir, "bob.key"), inPlace).ok(t)
	if got := modinfoField(t, "sig_key", inPlace); got != bobID {
		t.Fatalf("re-signed: sig_key %q, want bob's %q", got, bobID)
	}
	// Tampered: modinfo still shows it, with the reason.
	b, _ := os.ReadFile(signed)
	b[len(b)-len(modsig.Marker)-1] ^= 1 // the signature's last byte
	bad := filepath.Join(dir, "bad.wasm")
	os.WriteFile(bad, b, 0o644)
	out = runCmd(t, "", nil, "modinfo", "--keyring", keys, bad).ok(t).stdout
	if !strings.Contains(out, "sig_status:     bad signature\n") || !strings.Contains(out, "sig_error:      bad module signature: ") {
		t.Fatalf("modinfo of a tampered file:\n%s", out)
	}
	var mi struct {
		Signature struct {
			Status string `json:"status"`
			KeyID  string `json:"key_id"`
		} `json:"signature"`
	}
	if err := json.Unmarshal([]byte(runCmd(t, "", nil, "modinfo", "--json", bad).ok(t).stdout), &mi); err != nil || mi.Signature.Status != "bad signature" || mi.Signature.KeyID != aliceID {
		t.Fatalf("modinfo --json: %+v, %v", mi, err)
	}

	// Failures.
	notKey := filepath.Join(dir, "notakey")
	os.WriteFile(notKey, []byte("hello"), 0o600)
	runCmd(t, "", nil, "raceless", "sign", "--key", notKey, mod).fails(t, 7, "sign: ERROR: "+notKey+": not an Ed25519 key: no PEM block")
	runCmd(t, "", nil, "raceless", "sign", "--key", filepath.Join(dir, "nope.key"), mod).fails(t, 3, "sign: ERROR: open "+filepath.Join(dir, "nope.key")+": no such file or directory")
	notWasm := filepath.Join(dir, "x.wasm")
	os.WriteFile(notWasm, []byte("\x7fELF"), 0o644)
	runCmd(t, "", nil, "raceless", "sign", "--key", alice, notWasm).fails(t, 7, "sign: ERROR: "+notWasm+": not a WebAssembly module")
	runCmd(t, "", nil, "raceless", "sign", mod).fails(t, 2, "sign: ERROR: missing --key KEY (usage: sign --key KEY [-o OUT] FILE)")
	nokeys := filepath.Join(dir, "nokeys")
	runCmd(t, "", nil, "modinfo", "--keyring", nokeys, mod).fails(t, 3, "modinfo: ERROR: --keyring "+nokeys+": keyring: stat "+nokeys+": no such file or directory")
}

// trustDir is a module directory with a keyring: alice's key trusted, and
// modules signed by her, unsigned, signed by bob (not trusted), tampered.
type trustDir struct {
	dir, keys string
	alice     string // alice's private key
}

func newTrustDir(t *testing.T) *trustDir {
	t.Helper()
	td := &trustDir{dir: t.TempDir()}
	td.keys = filepath.Join(td.dir, "keys")
	os.Mkdir(td.keys, 0o700)
	keygen(t, td.keys, "alice")
	keygen(t, td.dir, "bob")
	td.alice = filepath.Join(td.dir, "alice.key")
	os.Rename(filepath.Join(td.keys, "alice.key"), td.alice)
	return td
}

// module writes a tiny module named name into the directory, signed with
// key ("" for none).
func (td *trustDir) module(t *testing.T, name, key string) string {
	t.Helper()
	p := writeModule(t, td.dir, name, tinyModule(t, name, wasmtest.TinyOptions{}))
	if key != "" {
		runCmd(t, "", nil, "raceless", "sign", "--key", key, p).ok(t)
	}
	return p
}

// taintFlags returns each loaded module's taint flags (lsmod --json).
func taintFlags(t *testing.T, d *daemon) map[string]string {
	t.Helper()
	var mods []struct {
		Name       string `json:"name"`
		TaintFlags string `json:"taint_flags"`
	}
	if err := json.Unmarshal([]byte(d.run("lsmod", "--json").ok(t).stdout), &mods); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range mods {
		out[m.Name] = m.TaintFlags
	}
	return out
}

// The daemon without enforcement: a trusted module loads clean; an
// unsigned one, or one signed by a key not in the keyring, loads tainted E
// (/proc/modules, lsmod --json, modinfo); a tampered one is refused with
// exit 10. Then sig-enforce on: the untrusted ones are refused, by insmod
// and by demand loading (modprobe, request, a module's dependency), and
// nothing switches it off.
func TestDaemonSignatures(t *testing.T) {
	td := newTrustDir(t)
	good := td.module(t, "good", td.alice)
	plain := td.module(t, "plain", "")
	bobs := td.module(t, "bobs", filepath.Join(td.dir, "bob.key"))
	tampered := td.module(t, "tampered", td.alice)
	b, _ := os.ReadFile(tampered)
	b[12] ^= 0x40
	os.WriteFile(tampered, b, 0o644)
	// For demand loading: an unsigned module, and a signed one depending on it.
	td.module(t, "late", "")
	blk := modinfo.Block{}
	blk.Name, blk.Version, blk.Depends = "needs", "1", []string{"late"}
	bin, err := modinfo.AppendBlock(wasmtest.Tiny(wasmtest.TinyOptions{}), blk)
	if err != nil {
		t.Fatal(err)
	}
	needs := writeModule(t, td.dir, "needs", bin)
	runCmd(t, "", nil, "raceless", "sign", "--key", td.alice, needs).ok(t)
	runCmd(t, "", nil, "depmod", td.dir).ok(t)

	d := startDaemon(t, "--keyring", td.keys, "--modules", td.dir)
	if got := d.run("sig-enforce").ok(t).stdout; got != "off\n" {
		t.Fatalf("sig-enforce: %q", got)
	}
	d.run("insmod", good).ok(t)
	if got := d.run("cat", "/proc/sys/kernel/tainted").ok(t).stdout; got != "0\n" {
		t.Fatalf("host tainted %q by a trusted module", got)
	}
	for _, p := range []string{plain, bobs} {
		d.run("insmod", p).ok(t)
	}
	// An unverified module taints the host too, as the kernel's
	// add_taint_module does for TAINT_UNSIGNED_MODULE (bit 13).
	if got := d.run("cat", "/proc/sys/kernel/tainted").ok(t).stdout; got != "8192\n" {
		t.Fatalf("/proc/sys/kernel/tainted: %q, want 8192", got)
	}
	if got := d.run("ping").ok(t).stdout; !strings.Contains(got, " tainted 8192 (E)") {
		t.Fatalf("ping: %q", got)
	}
	if got := taintFlags(t, d); got["good"] != "" || got["plain"] != "E" || got["bobs"] != "E" {
		t.Fatalf("taints %v: want good clean, plain and bobs E", got)
	}
	mods := d.run("cat", "/proc/modules").ok(t).stdout
	if !regexp.MustCompile(`(?m)^plain \d+ 0 - Live 0x[0-9a-f]+ \(E\)$`).MatchString(mods) || !regexp.MustCompile(`(?m)^good \d+ 0 - Live 0x[0-9a-f]+$`).MatchString(mods) {
		t.Fatalf("/proc/modules:\n%s", mods)
	}
	if got := d.run("cat", "/proc/plain/taint").ok(t).stdout; got != "E\n" {
		t.Fatalf("/proc/plain/taint: %q", got)
	}
	if got := d.run("modinfo", "-F", "sig_status", "good").ok(t).stdout; got != "trusted\n" {
		t.Fatalf("modinfo good: %q", got)
	}
	if got := d.run("modinfo", "-F", "signer", "good").ok(t).stdout; got != "alice\n" {
		t.Fatalf("modinfo -F signer good: %q", got)
	}
	if got := d.run("modinfo", "-F", "sig_status", "bobs").ok(t).stdout; got != "unknown key\n" {
		t.Fatalf("modinfo bobs: %q", got)
	}
	if got := d.run("modinfo", "-F", "sig_status", "late").ok(t).stdout; got != "unsigned\n" {
		t.Fatalf("modinfo late (from the index): %q", got)
	}
	r := d.run("insmod", tampered)
	if r.code != 10 || !strings.HasPrefix(r.stderr, "insmod: ERROR: could not insert module "+tampered+": Key was rejected by service (wasm verify "+tampered+": key rejected: bad module signature: ") {
		t.Fatalf("tampered: exit %d, %q", r.code, r.stderr)
	}
	if _, ok := taintFlags(t, d)["tampered"]; ok {
		t.Fatal("the tampered module is loaded")
	}

	// Enforcement, at run time; never off.
	d.run("sig-enforce", "on").ok(t)
	d.run("sig-enforce", "off").fails(t, 6, "sig-enforce: ERROR: signature enforcement cannot be switched off while the daemon runs (restart it without --sig-enforce): permission denied")
	if got := d.run("sig-enforce").ok(t).stdout; got != "on\n" {
		t.Fatalf("sig-enforce after off: %q", got)
	}
	var ping struct {
		SigEnforce bool `json:"sig_enforce"`
	}
	if err := json.Unmarshal([]byte(d.run("ping", "--json").ok(t).stdout), &ping); err != nil || !ping.SigEnforce {
		t.Fatalf("ping --json: %+v, %v", ping, err)
	}
	d.run("rmmod", "plain").ok(t)
	keyRejected := func(r result, prefix string) {
		t.Helper()
		if r.code != 10 || !strings.HasPrefix(r.stderr, prefix) || !strings.Contains(r.stderr, "key rejected: module is unsigned (signatures are enforced)") {
			t.Fatalf("exit %d, stderr %q; want exit 10, %q...", r.code, r.stderr, prefix)
		}
	}
	keyRejected(d.run("insmod", plain), "insmod: ERROR: could not insert module "+plain+": Key was rejected by service (")
	keyRejected(d.run("modprobe", "late"), "modprobe: ERROR: could not insert 'late': Key was rejected by service (wasm verify "+filepath.Join(td.dir, "late.wasm")+": ")
	keyRejected(d.run("request", "late"), "request: ERROR: 1 of 1 requests failed: request late: wasm verify ")
	keyRejected(d.run("modprobe", "needs"), "modprobe: ERROR: could not insert 'needs': Key was rejected by service (wasm verify "+filepath.Join(td.dir, "late.wasm")+": ") // its dependency
	// bobs, loaded before, stays: enforcing refuses loads, it unloads nothing.
	if _, ok := taintFlags(t, d)["bobs"]; !ok {
		t.Fatal("enforcement unloaded bobs")
	}
	d.run("rmmod", "bobs").ok(t)
	if r := d.run("insmod", bobs); r.code != 10 || !strings.Contains(r.stderr, "module is signed by a key not in the keyring") {
		t.Fatalf("bobs under enforcement: exit %d %q", r.code, r.stderr)
	}
	got := taintFlags(t, d)
	for _, m := range []string{"plain", "late", "needs", "bobs"} {
		if _, ok := got[m]; ok {
			t.Errorf("%s is loaded under enforcement", m)
		}
	}
	d.run("rmmod", "good").ok(t)
	d.run("insmod", good).ok(t)
	d.run("rmmod", "good").ok(t)
	// The file swapped on disk for an unsigned one of the same name.
	os.WriteFile(good, tinyModule(t, "good", wasmtest.TinyOptions{}), 0o644)
	keyRejected(d.run("insmod", good), "insmod: ERROR: could not insert module "+good+": Key was rejected by service (")
}

// serve --sig-enforce enforces from the start; a keyring others may write,
// or one that does not parse, stops the daemon from starting.
func TestServeSigEnforce(t *testing.T) {
	td := newTrustDir(t)
	good := td.module(t, "good", td.alice)
	plain := td.module(t, "plain", "")
	d := startDaemon(t, "--keyring", td.keys, "--sig-enforce")
	if got := d.run("sig-enforce").ok(t).stdout; got != "on\n" {
		t.Fatalf("sig-enforce: %q", got)
	}
	d.run("insmod", good).ok(t)
	if r := d.run("insmod", plain); r.code != 10 {
		t.Fatalf("unsigned under --sig-enforce: exit %d %q", r.code, r.stderr)
	}

	sock := filepath.Join(t.TempDir(), "sock")
	os.Chmod(td.keys, 0o777)
	r := runCmd(t, "", nil, "raceless", "serve", "--socket", sock, "--keyring", td.keys)
	if r.code != 6 || !strings.Contains(r.stderr, "serve: ERROR: cannot start: --keyring "+td.keys+": keyring: "+td.keys+" is writable by users other than its owner (mode 0777)") {
		t.Fatalf("keyring others may write: exit %d %q", r.code, r.stderr)
	}
	os.Chmod(td.keys, 0o700)
	os.WriteFile(filepath.Join(td.keys, "junk.pub"), []byte("junk"), 0o600)
	r = runCmd(t, "", nil, "raceless", "serve", "--socket", sock, "--keyring", td.keys)
	if r.code != 7 || !strings.Contains(r.stderr, "junk.pub: not an Ed25519 key") {
		t.Fatalf("a bad key file: exit %d %q", r.code, r.stderr)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Fatal("a daemon that did not start left its socket")
	}
}

// The policy: a module declaring fs-read loads only when the policy grants
// it a directory, which it then reads through WASI (here the daemon's
// /proc), and which stays busy while it is loaded.
func TestDaemonPolicy(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile(wasmtest.Build(t, "wasm/testdata/sandbox"))
	if err != nil {
		t.Fatal(err)
	}
	blk, err := modinfo.ReadBlock(b)
	if err != nil {
		t.Fatal(err)
	}
	blk.Capabilities = []string{modinfo.CapFSRead}
	if b, err = modinfo.AppendBlock(b, blk); err != nil {
		t.Fatal(err)
	}
	sandbox := writeModule(t, dir, "sandbox", b)

	d := startDaemon(t)
	r := d.run("insmod", sandbox, "path=/modules")
	if r.code != 6 || !strings.Contains(r.stderr, ": Operation not permitted (") || !strings.Contains(r.stderr, "module sandbox wants capability fs-read: the policy does not grant it to sandbox: capability not granted") {
		t.Fatalf("without a grant: exit %d %q", r.code, r.stderr)
	}
	d.stop()

	pol := filepath.Join(dir, "policy.conf")
	os.WriteFile(pol, []byte("# the sandbox reads the host's /proc\ngrant sandbox fs-read /proc\n"), 0o644)
	d = startDaemon(t, "--policy", pol)
	d.run("insmod", sandbox, "path=/modules").ok(t)
	if got := d.run("modinfo", "-F", "capability", "sandbox").ok(t).stdout; got != "fs-read\n" {
		t.Fatalf("modinfo -F capability: %q", got)
	}
	n := strings.TrimSuffix(d.run("call", "read_os").ok(t).stdout, "\n")
	if n == "0" || strings.HasPrefix(n, "-") {
		t.Fatalf("read_os of /modules in the grant: %s", n)
	}
	d.run("umount", "/proc").fails(t, 5, "umount: ERROR: umount /proc: device or resource busy")
	d.run("rmmod", "sandbox").ok(t)
	// Escapes: .. and a path outside.
	for _, p := range []string{"path=/../proc/modules", "path=../../etc/passwd"} {
		d.run("insmod", sandbox, p).ok(t)
		if got := d.run("call", "open_raw").ok(t).stdout; !strings.HasPrefix(got, "-") {
			t.Errorf("open_raw %s: %s", p, got)
		}
		d.run("rmmod", "sandbox").ok(t)
	}

	bad := filepath.Join(dir, "bad.conf")
	os.WriteFile(bad, []byte("grant sandbox fs-read proc\n"), 0o644)
	r = runCmd(t, "", nil, "raceless", "serve", "--socket", filepath.Join(t.TempDir(), "sock"), "--policy", bad)
	if r.code != 7 || !strings.Contains(r.stderr, `serve: ERROR: cannot start: --policy `+bad+`: `+bad+`:1: invalid policy: fs-read: "proc" is not a clean absolute path`) {
		t.Fatalf("a bad policy: exit %d %q", r.code, r.stderr)
	}
}

// A compilation cache directory others may write is not used: the daemon
// runs the compiled code it finds there, signed modules or not.
func TestCacheDirOwnerOnly(t *testing.T) {
	open := t.TempDir()
	os.Chmod(open, 0o777)
	r := runCmd(t, "", nil, "raceless", "serve", "--socket", filepath.Join(t.TempDir(), "sock"), "--cache-dir", open)
	if r.code != 6 || !strings.Contains(r.stderr, "serve: ERROR: cannot start: --cache-dir "+open+": "+open+" is writable by users other than its owner (mode 0777)") {
		t.Fatalf("--cache-dir open to all: exit %d %q", r.code, r.stderr)
	}
	home := t.TempDir()
	os.Mkdir(filepath.Join(home, "raceless"), 0o700)
	os.Chmod(filepath.Join(home, "raceless"), 0o777)
	d := startDaemonEnv(t, []string{"XDG_CACHE_HOME=" + home})
	mod := writeModule(t, t.TempDir(), "m", tinyModule(t, "m", wasmtest.TinyOptions{}))
	d.run("insmod", mod).ok(t)
	if !strings.Contains(d.log.String(), "no on-disk compilation cache") || len(cacheFiles(t, filepath.Join(home, "raceless"))) != 0 {
		t.Fatalf("the default cache directory open to all was used:\n%s", d.log.String())
	}
}

// A symbol import demand-loads its provider through the same checks: under
// enforcement a signed consumer cannot pull in an unsigned provider (its
// init fails, nothing stays loaded), and can once the provider is signed.
func TestDaemonSignedImports(t *testing.T) {
	dir := moduleDir(t)
	keys := filepath.Join(t.TempDir(), "keys")
	os.Mkdir(keys, 0o700)
	keygen(t, keys, "alice")
	alice := filepath.Join(keys, "alice.key")
	consumer := filepath.Join(dir, "consumer.wasm")
	runCmd(t, "", nil, "raceless", "sign", "--key", alice, consumer).ok(t)
	runCmd(t, "", nil, "depmod", dir) // warns of extra/hello.wasm (the built-in hello wins)

	d := startDaemon(t, "--keyring", keys, "--sig-enforce", "--modules", dir)
	r := d.run("insmod", consumer)
	if r.code != 1 || !strings.Contains(r.stderr, "Module init failed") {
		t.Fatalf("signed consumer, unsigned provider: exit %d %q", r.code, r.stderr)
	}
	if got := taintFlags(t, d); len(got) != 3 { // hello, procfs, ramfs
		t.Fatalf("loaded: %v", got)
	}
	// Why: the demand load of symbol:add was refused for its key (the
	// request is in its backoff, which returns that error, or tried again).
	if r := d.run("request", "symbol:add"); r.code != 10 || !strings.Contains(r.stderr, "key rejected: module is unsigned") {
		t.Fatalf("request symbol:add: exit %d %q", r.code, r.stderr)
	}
	// Signed, the provider loads (an explicit load ignores the backoff),
	// and the consumer with it.
	provider := filepath.Join(dir, "provider.wasm")
	runCmd(t, "", nil, "raceless", "sign", "--key", alice, provider).ok(t)
	d.run("insmod", provider).ok(t)
	d.run("insmod", consumer).ok(t)
	if got := taintFlags(t, d); got["provider"] != "" || got["consumer"] != "" {
		t.Fatalf("taints %v", got)
	}
}
