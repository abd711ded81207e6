package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
	"github.com/raceless/raceless/wasm"
	"github.com/raceless/raceless/wasm/modinfo"
)

// moduleDir builds the example wasm modules (provider exports add and mul
// with aliases symbol:add and symbol:mul; consumer imports add; hello has
// the alias greeting-*) into a fresh module directory.
func moduleDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, m := range []string{"provider", "consumer", "hello"} {
		b, err := os.ReadFile(wasmtest.Build(t, "examples/wasm/"+m))
		if err != nil {
			t.Fatal(err)
		}
		sub := dir
		if m == "hello" {
			sub = filepath.Join(dir, "extra") // a subdirectory: paths are relative
			os.Mkdir(sub, 0o755)
		}
		if err := os.WriteFile(filepath.Join(sub, m+".wasm"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestDepmodAndWasmModules(t *testing.T) {
	dir := moduleDir(t)
	// extra/hello.wasm has the built-in hello's name: the built-in module
	// wins (kmod's modules.builtin), and depmod says so and leaves it out.
	r := runCmd(t, "", nil, "depmod", dir)
	if r.code != 0 || r.stderr != "depmod: WARNING: extra/hello.wasm: module hello is built in; file not indexed (the built-in module wins)\n" {
		t.Fatalf("depmod: exit %d, %q", r.code, r.stderr)
	}
	dep, _ := os.ReadFile(filepath.Join(dir, "modules.dep"))
	// consumer declares "imports": ["add"]: depmod follows it to provider,
	// the module whose alias symbol:add provides it (docs/cli.md's example).
	if string(dep) != "consumer.wasm: provider.wasm\nprovider.wasm:\n" {
		t.Fatalf("modules.dep:\n%s", dep)
	}
	alias, _ := os.ReadFile(filepath.Join(dir, "modules.alias"))
	if string(alias) != "# Aliases extracted from modules themselves.\nalias symbol:add provider\nalias symbol:mul provider\n" {
		t.Fatalf("modules.alias:\n%s", alias)
	}
	if got := runCmd(t, "", nil, "modinfo", "-F", "alias", filepath.Join(dir, "provider.wasm")).ok(t).stdout; got != "symbol:add\nsymbol:mul\n" {
		t.Fatalf("modinfo FILE: %q", got)
	}
	// A module that declares a dependency: modules.dep lists it, and
	// modprobe loads it first.
	user := filepath.Join(dir, "user.wasm")
	b, _ := os.ReadFile(filepath.Join(dir, "consumer.wasm"))
	os.WriteFile(user, b, 0o644)
	info, err := wasm.ReadInfo(user)
	if err != nil {
		t.Fatal(err)
	}
	info.Name, info.Depends = "user", []string{"provider"}
	if err := wasmtest.AppendInfoFile(user, info); err != nil {
		t.Fatal(err)
	}
	runCmd(t, "", nil, "depmod", dir).ok(t)
	dep, _ = os.ReadFile(filepath.Join(dir, "modules.dep"))
	if string(dep) != "consumer.wasm: provider.wasm\nprovider.wasm:\nuser.wasm: provider.wasm\n" {
		t.Fatalf("modules.dep with a dependency:\n%s", dep)
	}

	d := startDaemon(t, "--modules", dir)
	// insmod consumer: its import of add is demand-loaded through the alias
	// symbol:add, so provider comes in and is "Used by" consumer.
	d.runAs("insmod", filepath.Join(dir, "consumer.wasm")).ok(t)
	out := d.run("lsmod").ok(t).stdout
	// Newest first: provider was loaded during consumer's init.
	if lines := strings.Split(out, "\n"); !strings.HasPrefix(lines[1], "provider ") || !strings.HasSuffix(lines[1], "  1 consumer") || !strings.HasPrefix(lines[2], "consumer ") {
		t.Fatalf("lsmod:\n%s", out)
	}
	d.run("rmmod", "provider").fails(t, 5, "rmmod: ERROR: Module provider is in use by: consumer")
	d.runAs("insmod", filepath.Join(dir, "consumer.wasm")).fails(t, 4, "insmod: ERROR: could not insert module "+filepath.Join(dir, "consumer.wasm")+": File exists (load consumer: already exists)")
	d.run("modprobe", "-r", "consumer").ok(t)
	if got := d.run("modprobe", "-n", "user").ok(t).stdout; got != "insmod "+filepath.Join(dir, "provider.wasm")+"\ninsmod "+user+"\n" {
		t.Fatalf("modprobe -n user: %q", got)
	}
	d.run("modprobe", "user").ok(t)
	d.run("rmmod", "provider").fails(t, 5, "rmmod: ERROR: Module provider is in use by: user")
	if got := d.run("modprobe", "-r", "-v", "user").ok(t).stdout; got != "rmmod user\nrmmod provider\n" {
		t.Fatalf("modprobe -r -v user: %q", got)
	}
	if got := d.run("lsmod").ok(t).stdout; got != lsmodHeader+"hello                   4096  0\n"+ramfsLine {
		t.Fatalf("after modprobe -r consumer: %q", got)
	}
	// The built-in hello wins over extra/hello.wasm everywhere: modprobe
	// and modinfo name it, the file's alias is not indexed; the file loads
	// only by path, once the built-in one is gone.
	d.run("modprobe", "--first-time", "hello").fails(t, 4, "modprobe: ERROR: could not insert 'hello': Module already in kernel")
	d.run("rmmod", "hello").ok(t)
	if got := d.run("modprobe", "-n", "hello").ok(t).stdout; got != "builtin hello\n" {
		t.Fatalf("modprobe -n hello: %q", got)
	}
	if got := d.run("modinfo", "-F", "filename", "hello").ok(t).stdout; got != "(builtin)\n" {
		t.Fatalf("modinfo -F filename hello: %q", got)
	}
	d.run("modprobe", "greeting-fr").fails(t, 3, "modprobe: FATAL: Module greeting-fr not found in directory "+dir)
	d.run("insmod", filepath.Join(dir, "extra", "hello.wasm"), "who=monde").ok(t)
	if got := d.run("lsmod").ok(t).stdout; !strings.HasPrefix(got, lsmodHeader+"hello                ") || strings.HasPrefix(got, lsmodHeader+"hello                   4096") {
		t.Fatalf("wasm hello not loaded: %q", got)
	}
	if !strings.Contains(d.log.String(), "monde") {
		t.Fatalf("the parameter did not reach the module:\n%s", d.log.String())
	}
	d.run("insmod", filepath.Join(dir, "provider.wasm"), "nope=1").fails(t, 7, "insmod: ERROR: could not insert module "+filepath.Join(dir, "provider.wasm")+": Invalid parameters (param provider: unknown parameter \"nope\": invalid argument)")
	// A file that is not a module.
	bad := filepath.Join(t.TempDir(), "bad.wasm")
	os.WriteFile(bad, []byte("not wasm"), 0o644)
	r = d.run("insmod", bad)
	if r.code != 7 || r.stderr != "insmod: ERROR: could not insert module "+bad+": Invalid module format (wasm open "+bad+": not a WebAssembly module)\n" {
		t.Fatalf("insmod bad: exit %d %q", r.code, r.stderr)
	}
}

// raceless replace hot-swaps a live wasm module for a new instance of the
// same name: the parameters change, the name stays, and an unknown name or a
// bad parameter leaves the module as it was.
func TestReplaceWasmModule(t *testing.T) {
	dir := moduleDir(t)
	hello := filepath.Join(dir, "extra", "hello.wasm")
	d := startDaemon(t)
	d.run("rmmod", "hello").ok(t) // the built-in native hello
	d.run("insmod", hello, "who=v1").ok(t)
	if got := d.run("lsmod", "--json").ok(t).stdout; !strings.Contains(got, `"who": "v1"`) {
		t.Fatalf("lsmod after insmod: %s", got)
	}
	d.run("replace", hello, "who=v2").ok(t)
	got := d.run("lsmod", "--json").ok(t).stdout
	if !strings.Contains(got, `"who": "v2"`) || strings.Contains(got, `"who": "v1"`) {
		t.Fatalf("lsmod after replace: %s", got)
	}
	d.run("replace", hello, "nope=1").fails(t, 7, "replace: ERROR: could not replace module "+hello+": Invalid parameters (param hello: unknown parameter \"nope\": invalid argument)")
	if got := d.run("lsmod", "--json").ok(t).stdout; !strings.Contains(got, `"who": "v2"`) {
		t.Fatalf("lsmod after a refused replace: %s", got)
	}
	d.run("rmmod", "hello").ok(t)
	d.run("replace", hello).fails(t, 3, "replace: ERROR: could not replace module "+hello+": No such file or directory (replace hello: not found)")
}

// depmod skips a file that is not a module with a one-line warning naming
// it and why, indexes the rest and exits 0, as kmod's depmod does.
func TestDepmodSkipsMalformedFile(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile(wasmtest.Build(t, "examples/wasm/provider"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "provider.wasm"), b, 0o644)
	bad := filepath.Join(dir, "bad.wasm")
	os.WriteFile(bad, []byte("not wasm"), 0o644)
	r := runCmd(t, "", nil, "depmod", dir)
	if r.code != 0 || r.stderr != "depmod: WARNING: bad.wasm: not indexed: wasm open "+bad+": not a WebAssembly module\n" {
		t.Fatalf("depmod: exit %d, %q", r.code, r.stderr)
	}
	if dep, _ := os.ReadFile(filepath.Join(dir, "modules.dep")); string(dep) != "provider.wasm:\n" {
		t.Fatalf("modules.dep:\n%s", dep)
	}
}

// raceless replace swaps a module that others import (issue 15, point 11):
// allowed when the new version exports every symbol the importers hold,
// with the same types, and the importers then call the new version;
// refused otherwise, naming the symbols; a version that drops a symbol
// nobody imports is refused unless forced.
func TestReplaceImportedWasmModule(t *testing.T) {
	dir := moduleDir(t)
	// Versions of provider, without a Go runtime: add of (i64, i64) ->
	// i64 returning a+b+bias (the bias tells the versions apart), mul,
	// or add retyped to (i32, i32) -> i32.
	version := func(file string, funcs ...wasmtest.Func) string {
		bin, err := modinfo.Append(wasmtest.Module(nil, funcs...), raceless.Info{Name: "provider", Version: file, License: "MIT"})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), file)
		if err := os.WriteFile(path, bin, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	op := func(name string, t byte, add byte, bias int64) wasmtest.Func {
		code := []byte{0x20, 0, 0x20, 1, add} // local.get 0, local.get 1, add
		if t == wasmtest.I64 {
			code = append(append(code, wasmtest.I64Const(bias)...), 0x7c)
		} else {
			code = append(append(code, wasmtest.I32Const(int32(bias))...), 0x6a)
		}
		return wasmtest.Func{Export: name, Symbol: true, Params: []byte{t, t}, Result: []byte{t}, Code: code}
	}
	add := func(bias int64) wasmtest.Func { return op("add", wasmtest.I64, 0x7c, bias) }
	mul := op("mul", wasmtest.I64, 0x7e, 0) // i64.mul
	v2 := version("provider2.wasm", add(1000), mul)
	noAdd := version("provider3.wasm", mul)
	retyped := version("provider4.wasm", op("add", wasmtest.I32, 0x6a, 0), mul)
	noMul := version("provider5.wasm", add(2000))

	d := startDaemon(t, "--modules", dir)
	d.run("insmod", filepath.Join(dir, "provider.wasm")).ok(t)
	d.run("insmod", filepath.Join(dir, "consumer.wasm")).ok(t)
	if got := d.run("call", "sum3", "1", "2", "3").ok(t).stdout; got != "6\n" {
		t.Fatalf("sum3 before: %q", got)
	}
	d.run("replace", v2).ok(t)
	// consumer's imported add now calls version 2: (1+2+1000)+3+1000.
	if got := d.run("call", "sum3", "1", "2", "3").ok(t).stdout; got != "2006\n" {
		t.Fatalf("sum3 after the replace: %q", got)
	}
	if got := d.run("cat", "/proc/modules").ok(t).stdout; !strings.Contains(got, "provider ") || !strings.Contains(got, " 1 consumer,") {
		t.Fatalf("/proc/modules after the replace:\n%s", got)
	}
	if got := d.run("modinfo", "-F", "version", "provider").ok(t).stdout; got != "provider2.wasm\n" {
		t.Fatalf("version after the replace: %q", got)
	}
	d.run("replace", noAdd).fails(t, 5, "replace: ERROR: could not replace module "+noAdd+": Device or resource busy (replace provider: busy: the replacement does not serve its importers: add (imported by consumer) is missing)")
	d.run("replace", "-f", noAdd).fails(t, 5, "replace: ERROR: could not replace module "+noAdd+": Device or resource busy (replace provider: busy: the replacement does not serve its importers: add (imported by consumer) is missing)")
	d.run("replace", retyped).fails(t, 5, "replace: ERROR: could not replace module "+retyped+": Device or resource busy (replace provider: busy: the replacement does not serve its importers: add (imported by consumer) changes type from (i64,i64)->(i64) to (i32,i32)->(i32))")
	d.run("replace", noMul).fails(t, 5, "replace: ERROR: could not replace module "+noMul+": Device or resource busy (replace provider: busy: the replacement drops symbols that callers may hold: mul (force to drop them))")
	// Every refusal left version 2 serving.
	if got := d.run("call", "sum3", "1", "2", "3").ok(t).stdout; got != "2006\n" {
		t.Fatalf("sum3 after the refusals: %q", got)
	}
	d.run("replace", "--force", noMul).ok(t)
	if got := d.run("call", "sum3", "1", "2", "3").ok(t).stdout; got != "4006\n" {
		t.Fatalf("sum3 after the forced replace: %q", got)
	}
	d.run("call", "mul", "2", "3").fails(t, 3, "call: ERROR: acquire mul: symbol: not found")
	d.run("rmmod", "provider").fails(t, 5, "rmmod: ERROR: Module provider is in use by: consumer")
	d.run("rmmod", "consumer", "provider").ok(t)
}
