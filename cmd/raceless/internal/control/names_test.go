package control

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/raceless/raceless"
)

// TestRequestNamesAreBytes: every name field of a Request, and each of
// Names, crosses the wire byte for byte, valid UTF-8 or not; two names
// that differ in one invalid byte stay different; valid UTF-8 is a plain
// JSON string, as before.
func TestRequestNamesAreBytes(t *testing.T) {
	for _, name := range []string{"plain", "/bad\xff", "/bad\xfe", "caf\xc3\xa9", "\xff\xfe\x80", ""} {
		in := Request{Op: "mount", Name: name, Path: name + "p", Type: name + "t", Source: name + "s",
			Target: name, Options: name + "o", Names: []string{"a", name, name + "\x80"}}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var out Request
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%q: %v (%s)", name, err, b)
		}
		if out.Name != in.Name || out.Path != in.Path || out.Type != in.Type || out.Source != in.Source ||
			out.Target != in.Target || out.Options != in.Options || strings.Join(out.Names, "|") != strings.Join(in.Names, "|") {
			t.Fatalf("%q: got back %+v from %s", name, out, b)
		}
		if strings.Contains(string(b), "\ufffd") {
			t.Fatalf("%q: a replacement character on the wire: %s", name, b)
		}
	}
	b, _ := json.Marshal(Request{Op: "umount", Target: "/mnt"})
	if string(b) != `{"op":"umount","target":"/mnt"}` {
		t.Fatalf("valid UTF-8 on the wire: %s", b)
	}
	b, _ = json.Marshal(Request{Op: "umount", Target: "/bad\xff"})
	if string(b) != `{"op":"umount","raw":{"target":"L2JhZP8="}}` {
		t.Fatalf("invalid UTF-8 on the wire: %s", b)
	}
	for _, bad := range []string{`{"op":"x","raw":{"target":"%%%"}}`, `{"op":"x","raw":{"nope":"eA=="}}`, `{"op":"x","raw":{"names.3":"eA=="}}`} {
		var r Request
		if err := json.Unmarshal([]byte(bad), &r); err == nil {
			t.Fatalf("%s decoded: %+v", bad, r)
		}
	}
}

// TestBytesRoundTrip: a response name comes back byte for byte.
func TestBytesRoundTrip(t *testing.T) {
	for _, s := range []string{"", "ok", "/bad\xff", "\x00nul", "tab\tnl\n"} {
		b, err := json.Marshal(Bytes(s))
		if err != nil {
			t.Fatal(err)
		}
		var back Bytes
		if err := json.Unmarshal(b, &back); err != nil || string(back) != s {
			t.Fatalf("%q: %s -> %q %v", s, b, back, err)
		}
	}
	if b, _ := json.Marshal(Bytes("/bad\xff")); string(b) != `{"base64":"L2JhZP8="}` {
		t.Fatalf("wire form %s", b)
	}
	var b Bytes
	if err := json.Unmarshal([]byte(`{"other":1}`), &b); err == nil {
		t.Fatal("an object without base64 decoded")
	}
}

// TestNULRefused: a name holding a NUL byte is refused by the server with
// EINVAL's class before the handler sees it, naming the field; a raw
// client's "\u0000" included.
func TestNULRefused(t *testing.T) {
	var called atomic.Bool
	sock := serve(t, func(ctx context.Context, req *Request, progress func(any)) (any, error) {
		called.Store(true)
		return nil, nil
	})
	for _, req := range []*Request{
		{Op: "mount", Target: "/a\x00b"},
		{Op: "load", Name: "x\x00"},
		{Op: "unload", Names: []string{"ok", "n\x00"}},
	} {
		_, err := Call(context.Background(), sock, req, nil)
		var we *Error
		if !errors.As(err, &we) || we.Code != CodeInvalid || !errors.Is(err, raceless.ErrInvalid) || !strings.Contains(we.Message, "NUL") {
			t.Fatalf("%+v: %v", req, err)
		}
	}
	// A raw client: the JSON escape.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(`{"op":"umount","target":"/a\u0000b"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil || resp.OK || resp.Error == nil || resp.Error.Code != CodeInvalid {
		t.Fatalf("raw NUL: %+v %v", resp, err)
	}
	if called.Load() {
		t.Fatal("the handler saw a name with a NUL byte")
	}
}

// TestErrorMessageIsBytes: an error naming a path that is not UTF-8 comes
// back byte for byte; "message" alone still reads (with U+FFFD).
func TestErrorMessageIsBytes(t *testing.T) {
	in := Error{Code: CodeNotFound, Message: "umount /bad\xfe: no such file or directory"}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Error
	if err := json.Unmarshal(b, &out); err != nil || out.Message != in.Message || out.Code != in.Code {
		t.Fatalf("%s -> %+v %v", b, out, err)
	}
	var plain struct{ Message string }
	if err := json.Unmarshal(b, &plain); err != nil || plain.Message != "umount /bad\ufffd: no such file or directory" {
		t.Fatalf("message for a reader without raw: %q %v", plain.Message, err)
	}
	if b, _ := json.Marshal(Error{Code: CodeFailed, Message: "ok"}); strings.Contains(string(b), "raw") {
		t.Fatalf("a valid message in raw: %s", b)
	}
}
