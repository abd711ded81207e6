package modinfo_test

import (
	"bytes"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm/modinfo"
)

// emptyModule is the smallest valid wasm binary: magic and version.
var emptyModule = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

func sampleInfo() raceless.Info {
	return raceless.Info{
		Name: "hello", Version: "1.0", License: "MIT", Description: "says hello",
		Author: "raceless", Depends: []string{"base"}, Imports: []string{"add", "base_log"}, Aliases: []string{"greet-*"},
		Params: []raceless.ParamSpec{{Name: "who", Type: raceless.ParamString, Default: "world", Description: "whom to greet"},
			{Name: "times", Type: raceless.ParamInt, Default: "1"}},
	}
}

func TestAppendRead(t *testing.T) {
	b, err := modinfo.Append(emptyModule, sampleInfo())
	if err != nil {
		t.Fatal(err)
	}
	got, err := modinfo.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sampleInfo()) {
		t.Fatalf("round trip: got %+v", got)
	}
	// Append replaces: still exactly one section, with the new content.
	info2 := sampleInfo()
	info2.Version = "2.0"
	b2, err := modinfo.Append(b, info2)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := modinfo.Read(b2); err != nil || got.Version != "2.0" {
		t.Fatalf("after re-append: %+v, %v", got, err)
	}
	secs, err := modinfo.Sections(b2)
	if err != nil || len(secs) != 1 {
		t.Fatalf("sections: %v, %v", secs, err)
	}
}

func TestReadErrors(t *testing.T) {
	good, _ := modinfo.Append(emptyModule, sampleInfo())
	dup := append(append([]byte{}, good...), good[len(emptyModule):]...)
	custom := func(name string, payload []byte) []byte {
		body := append([]byte{byte(len(name))}, name...)
		body = append(body, payload...)
		out := append([]byte{}, emptyModule...)
		out = append(out, 0)
		for v := uint32(len(body)); ; {
			c := byte(v & 0x7f)
			v >>= 7
			if v != 0 {
				out = append(out, c|0x80)
				continue
			}
			out = append(out, c)
			break
		}
		return append(out, body...)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, modinfo.ErrNotWasm},
		{"text", []byte("#!/bin/sh\necho hi\n"), modinfo.ErrNotWasm},
		{"version2", []byte{0, 'a', 's', 'm', 2, 0, 0, 0}, modinfo.ErrNotWasm},
		{"no section", emptyModule, modinfo.ErrNoModinfo},
		{"truncated", good[:len(good)-3], modinfo.ErrTruncated},
		{"bad leb", append(append([]byte{}, emptyModule...), 1, 0xff, 0xff, 0xff, 0xff, 0xff), modinfo.ErrTruncated},
		{"duplicate", dup, modinfo.ErrDuplicate},
		{"not json", custom(modinfo.SectionName, []byte("name=x")), modinfo.ErrMalformed},
		{"unknown field", custom(modinfo.SectionName, []byte(`{"name":"x","colour":"red"}`)), modinfo.ErrMalformed},
		{"trailing", custom(modinfo.SectionName, []byte(`{"name":"x"} {}`)), modinfo.ErrMalformed},
		{"bad name", custom(modinfo.SectionName, []byte(`{"name":"a b"}`)), modinfo.ErrMalformed},
		{"no name", custom(modinfo.SectionName, []byte(`{}`)), modinfo.ErrMalformed},
		{"bad type", custom(modinfo.SectionName, []byte(`{"name":"x","params":[{"name":"p","type":"float"}]}`)), modinfo.ErrMalformed},
		{"bad default", custom(modinfo.SectionName, []byte(`{"name":"x","params":[{"name":"p","type":"int","default":"ten"}]}`)), modinfo.ErrMalformed},
		{"dup param", custom(modinfo.SectionName, []byte(`{"name":"x","params":[{"name":"p","type":"int"},{"name":"p","type":"int"}]}`)), modinfo.ErrMalformed},
		{"bad depend", custom(modinfo.SectionName, []byte(`{"name":"x","depends":["../etc"]}`)), modinfo.ErrMalformed},
		{"empty import", custom(modinfo.SectionName, []byte(`{"name":"x","imports":[""]}`)), modinfo.ErrMalformed},
		{"import with NUL", custom(modinfo.SectionName, []byte(`{"name":"x","imports":["a\u0000b"]}`)), modinfo.ErrMalformed},
		{"import with newline", custom(modinfo.SectionName, []byte(`{"name":"x","imports":["a\nb"]}`)), modinfo.ErrMalformed},
		{"long import", custom(modinfo.SectionName, []byte(`{"name":"x","imports":["`+strings.Repeat("a", 4097)+`"]}`)), modinfo.ErrMalformed},
		{"dup import", custom(modinfo.SectionName, []byte(`{"name":"x","imports":["add","mul","add"]}`)), modinfo.ErrMalformed},
		{"too many imports", custom(modinfo.SectionName, []byte(`{"name":"x","imports":[`+manyImports(257)+`]}`)), modinfo.ErrMalformed},
		{"import not a string", custom(modinfo.SectionName, []byte(`{"name":"x","imports":[1]}`)), modinfo.ErrMalformed},
		{"imports not a list", custom(modinfo.SectionName, []byte(`{"name":"x","imports":"add"}`)), modinfo.ErrMalformed},
		{"oversized", custom(modinfo.SectionName, []byte(`{"name":"x","description":"`+strings.Repeat("a", modinfo.MaxSize)+`"}`)), modinfo.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := modinfo.Read(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Read: got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestEncodeValidates(t *testing.T) {
	info := sampleInfo()
	info.Name = ""
	if _, err := modinfo.Append(emptyModule, info); !errors.Is(err, modinfo.ErrMalformed) {
		t.Fatalf("Append with empty name: %v", err)
	}
	if _, err := modinfo.Append([]byte("nope"), sampleInfo()); !errors.Is(err, modinfo.ErrNotWasm) {
		t.Fatalf("Append to non-wasm: %v", err)
	}
}

// FuzzDecode checks that Decode never panics and that what it accepts
// survives an Encode/Decode round trip unchanged.
func FuzzDecode(f *testing.F) {
	p, _ := modinfo.Encode(sampleInfo())
	f.Add(p)
	f.Add([]byte(`{"name":"x"}`))
	f.Add([]byte(`{"name":"x","params":[{"name":"p","type":"bool","default":"yes"}]}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"name":"x","imports":["add","mul"]}`))
	f.Add([]byte(`{"name":"x","capabilities":["fs-read"]}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		blk, err := modinfo.DecodeBlock(p)
		if info, ierr := modinfo.Decode(p); (ierr == nil) != (err == nil) || !reflect.DeepEqual(info, blk.Info) {
			t.Fatalf("Decode (%v) and DecodeBlock (%v) disagree", ierr, err)
		}
		if err != nil {
			return
		}
		q, err := modinfo.EncodeBlock(blk)
		if err != nil {
			t.Fatalf("Encode of decoded block: %v", err)
		}
		blk2, err := modinfo.DecodeBlock(q)
		if err != nil || !reflect.DeepEqual(blk, blk2) {
			t.Fatalf("round trip: %+v != %+v (%v)", blk, blk2, err)
		}
	})
}

// FuzzRead checks that Read and Sections never panic on arbitrary binaries,
// and that Append on anything Sections accepts yields a readable block.
func FuzzRead(f *testing.F) {
	good, _ := modinfo.Append(emptyModule, sampleInfo())
	f.Add(good)
	f.Add(emptyModule)
	f.Add([]byte{0, 'a', 's', 'm', 1, 0, 0, 0, 0, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = modinfo.Read(b)
		if _, err := modinfo.Sections(b); err != nil {
			return
		}
		out, err := modinfo.Append(b, sampleInfo())
		if err != nil {
			t.Fatalf("Append on a walkable module: %v", err)
		}
		if got, err := modinfo.Read(out); err != nil || !reflect.DeepEqual(got, sampleInfo()) {
			t.Fatalf("Read after Append: %+v, %v", got, err)
		}
		if !bytes.HasPrefix(out, b[:8]) {
			t.Fatal("header lost")
		}
	})
}

// manyImports returns n distinct JSON strings, comma-separated.
func manyImports(n int) string {
	q := make([]string, n)
	for i := range q {
		q[i] = `"s` + strconv.Itoa(i) + `"`
	}
	return strings.Join(q, ",")
}

// TestImports checks the imports field: kept in order by a round trip,
// "imports": [] read as none, the limits accepted up to their bound, and
// Encode refusing what Decode refuses.
func TestImports(t *testing.T) {
	info, err := modinfo.Decode([]byte(`{"name":"x","imports":["mul","add"]}`))
	if err != nil || !reflect.DeepEqual(info.Imports, []string{"mul", "add"}) {
		t.Fatalf("Decode: %+v, %v", info, err)
	}
	p, err := modinfo.Encode(info)
	if err != nil || !strings.Contains(string(p), `"imports": [`) {
		t.Fatalf("Encode: %s, %v", p, err)
	}
	if info, err := modinfo.Decode([]byte(`{"name":"x","imports":[]}`)); err != nil || info.Imports != nil {
		t.Fatalf("empty imports: %#v, %v", info.Imports, err)
	}
	if p, err := modinfo.Encode(raceless.Info{Name: "x"}); err != nil || strings.Contains(string(p), "imports") {
		t.Fatalf("no imports encoded as %s, %v", p, err)
	}
	if _, err := modinfo.Decode([]byte(`{"name":"x","imports":[` + manyImports(256) + `]}`)); err != nil {
		t.Fatalf("256 imports: %v", err)
	}
	if _, err := modinfo.Decode([]byte(`{"name":"x","imports":["` + strings.Repeat("a", 4096) + `"]}`)); err != nil {
		t.Fatalf("a 4096-byte import: %v", err)
	}
	for _, bad := range [][]string{{""}, {"a\x00"}, {"a\n"}, {"add", "add"}} {
		if _, err := modinfo.Encode(raceless.Info{Name: "x", Imports: bad}); !errors.Is(err, modinfo.ErrMalformed) {
			t.Errorf("Encode with imports %q: %v, want ErrMalformed", bad, err)
		}
	}
}

// A block's capabilities: kept by the Block functions, left out (and
// accepted) by the Info ones; an unknown or repeated capability is
// malformed.
func TestCapabilities(t *testing.T) {
	blk := modinfo.Block{Info: sampleInfo(), Capabilities: []string{modinfo.CapFSRead}}
	b, err := modinfo.AppendBlock(emptyModule, blk)
	if err != nil {
		t.Fatal(err)
	}
	got, err := modinfo.ReadBlock(b)
	if err != nil || !reflect.DeepEqual(got, blk) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if info, err := modinfo.Read(b); err != nil || !reflect.DeepEqual(info, sampleInfo()) {
		t.Fatalf("Read of a block with capabilities: %+v, %v", info, err)
	}
	p, _ := modinfo.Extract(b)
	if !bytes.Contains(p, []byte(`"capabilities": [`)) {
		t.Fatalf("payload:\n%s", p)
	}
	// Append writes the Info it is given: no capabilities.
	b2, err := modinfo.Append(b, sampleInfo())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := modinfo.ReadBlock(b2); err != nil || got.Capabilities != nil {
		t.Fatalf("after Append: %+v, %v", got, err)
	}
	for _, p := range []string{
		`{"name":"x","capabilities":["net"]}`,
		`{"name":"x","capabilities":["fs-read","fs-read"]}`,
		`{"name":"x","capabilities":[""]}`,
		`{"name":"x","capabilities":"fs-read"}`,
	} {
		if _, err := modinfo.DecodeBlock([]byte(p)); !errors.Is(err, modinfo.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", p, err)
		}
		if _, err := modinfo.Decode([]byte(p)); !errors.Is(err, modinfo.ErrMalformed) {
			t.Errorf("Decode %s: %v, want ErrMalformed", p, err)
		}
	}
	if blk, err := modinfo.DecodeBlock([]byte(`{"name":"x","capabilities":[]}`)); err != nil || blk.Capabilities != nil {
		t.Fatalf("empty list: %+v, %v", blk, err)
	}
}
