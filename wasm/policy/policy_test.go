package policy_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/raceless/raceless/wasm/modinfo"
	"github.com/raceless/raceless/wasm/policy"
)

const sample = `# what each module may use
grant hello fs-read /srv/hello

	grant  reader	fs-read /   
grant x-y_1 fs-read /a/b/c
`

func TestParse(t *testing.T) {
	p, err := policy.Parse("p.conf", []byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	want := []policy.Grant{
		{Module: "hello", Capability: modinfo.CapFSRead, Arg: "/srv/hello"},
		{Module: "reader", Capability: modinfo.CapFSRead, Arg: "/"},
		{Module: "x-y_1", Capability: modinfo.CapFSRead, Arg: "/a/b/c"},
	}
	if got := p.Grants(); !reflect.DeepEqual(got, want) {
		t.Fatalf("grants %+v", got)
	}
	if g, ok := p.Lookup("hello", modinfo.CapFSRead); !ok || g.Arg != "/srv/hello" {
		t.Fatalf("lookup: %+v %v", g, ok)
	}
	if _, ok := p.Lookup("other", modinfo.CapFSRead); ok {
		t.Fatal("a grant to a module the policy does not name")
	}
	if _, ok := policy.Empty.Lookup("hello", modinfo.CapFSRead); ok || policy.Empty.String() != "" {
		t.Fatal("the empty policy grants something")
	}
	if got := p.String(); got != "grant hello fs-read /srv/hello\ngrant reader fs-read /\ngrant x-y_1 fs-read /a/b/c\n" {
		t.Fatalf("String:\n%s", got)
	}
	if p, err := policy.Parse("crlf", []byte("grant a fs-read /x\r\n")); err != nil || p.String() != "grant a fs-read /x\n" {
		t.Fatalf("CRLF: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, msg string }{
		{"allow a fs-read /x", `p.conf:1: invalid policy: unknown directive "allow" (want grant)`},
		{"\ngrant a", "p.conf:2: invalid policy: grant needs a module and a capability: grant MODULE CAPABILITY [ARGUMENT]"},
		{"grant a net", `p.conf:1: invalid policy: unknown capability "net" (known: fs-read)`},
		{"grant a fs-read", "p.conf:1: invalid policy: fs-read needs one argument, a directory of the VFS: grant a fs-read DIR"},
		{"grant a fs-read /x /y", "p.conf:1: invalid policy: fs-read needs one argument, a directory of the VFS: grant a fs-read DIR"},
		{"grant a fs-read x", `p.conf:1: invalid policy: fs-read: "x" is not a clean absolute path`},
		{"grant a fs-read /x/../y", `p.conf:1: invalid policy: fs-read: "/x/../y" is not a clean absolute path`},
		{"grant a fs-read /x/", `p.conf:1: invalid policy: fs-read: "/x/" is not a clean absolute path`},
		{"grant a.b fs-read /x", `p.conf:1: invalid policy: invalid module name "a.b"`},
		{"grant a fs-read /x\ngrant a fs-read /y", "p.conf:2: invalid policy: a is granted fs-read twice"},
		{"grant a fs-read /x\x00y", "p.conf:1: invalid policy: a control character"},
		{"grant a fs-read /\xff", "p.conf:0: invalid policy: not UTF-8 text"},
		{"grant a fs-read /x # a comment", "p.conf:1: invalid policy: fs-read needs one argument, a directory of the VFS: grant a fs-read DIR"},
	} {
		_, err := policy.Parse("p.conf", []byte(tc.in))
		if !errors.Is(err, policy.ErrSyntax) || err.Error() != tc.msg {
			t.Errorf("%q: %v, want %s", tc.in, err, tc.msg)
		}
	}
	if _, err := policy.Parse("big", make([]byte, policy.MaxSize+1)); !errors.Is(err, policy.ErrSyntax) {
		t.Fatalf("too large: %v", err)
	}
}

func TestLoad(t *testing.T) {
	name := filepath.Join(t.TempDir(), "policy.conf")
	if _, err := policy.Load(name); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if err := os.WriteFile(name, []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := policy.Load(name)
	if err != nil || len(p.Grants()) != 3 {
		t.Fatalf("load: %v", err)
	}
	os.WriteFile(name, []byte("grant a fs-read nope\n"), 0o644)
	if _, err := policy.Load(name); !errors.Is(err, policy.ErrSyntax) || !strings.HasPrefix(err.Error(), name+":1: ") {
		t.Fatalf("a bad file: %v", err)
	}
}

// FuzzParse checks that Parse never panics, that its errors name the file
// and wrap ErrSyntax, and that what it accepts String writes back to the
// same policy. Seeds: testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := policy.Parse("f", b)
		if err != nil {
			if !errors.Is(err, policy.ErrSyntax) || !strings.HasPrefix(err.Error(), "f:") {
				t.Fatalf("error %q does not wrap ErrSyntax or name the file", err)
			}
			return
		}
		s := p.String()
		q, err := policy.Parse("f", []byte(s))
		if err != nil || !reflect.DeepEqual(p.Grants(), q.Grants()) || q.String() != s {
			t.Fatalf("round trip of\n%s: %v", s, err)
		}
	})
}

var seeds = map[string]string{
	"sample":    sample,
	"empty":     "",
	"comment":   "# nothing\n",
	"twice":     "grant a fs-read /x\ngrant a fs-read /y\n",
	"badpath":   "grant a fs-read /x/../y\n",
	"unknown":   "grant a net 1\n",
	"nul":       "grant a fs-read /\x00\n",
	"crlf":      "grant a fs-read /x\r\ngrant b fs-read /y\r\n",
	"nonbreak":  "grant a fs-read /\u00a0x\n",
	"directive": "deny a fs-read /x\n",
}

// TestWriteSeeds regenerates testdata/fuzz/FuzzParse when
// RACELESS_WRITE_SEEDS=1.
func TestWriteSeeds(t *testing.T) {
	if os.Getenv("RACELESS_WRITE_SEEDS") != "1" {
		t.Skip("set RACELESS_WRITE_SEEDS=1 to regenerate the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, s := range seeds {
		if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
