package control

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Names are bytes, as in Linux: a module name, a path, a mount source or
// option is whatever bytes the user gave, valid UTF-8 or not. A JSON
// string can hold only UTF-8 (encoding/json turns every invalid byte into
// U+FFFD, so two different names would collide), so a Request carries a
// name that is not valid UTF-8 in "raw" instead, base64 (RFC 4648, standard
// alphabet) under the field's JSON name, with the field itself omitted:
//
//	{"op":"mount","type":"ramfs","source":"none","raw":{"target":"L2JhZP8="}}
//
// is a mount at "/bad\xff". For Names, the key is "names.N" (N the index).
// A name holding a NUL byte, which no Linux name can hold, is refused
// (CheckNames). Valid UTF-8 goes as a plain string, as before.

// requestWire is Request on the wire: the same fields, plus Raw.
type requestWire struct {
	requestFields
	Raw map[string]string `json:"raw,omitempty"`
}

// requestFields has Request's fields and JSON names, and no methods (so
// that encoding it does not recurse into Request's MarshalJSON).
type requestFields Request

// byteFields returns pointers to the Request's name fields, by JSON name.
func (r *Request) byteFields() map[string]*string {
	return map[string]*string{
		"name": &r.Name, "path": &r.Path, "type": &r.Type,
		"source": &r.Source, "target": &r.Target, "options": &r.Options,
	}
}

// MarshalJSON encodes r with its names that are not valid UTF-8 in "raw".
func (r Request) MarshalJSON() ([]byte, error) {
	w := requestWire{requestFields: requestFields(r)}
	w.Names = append([]string(nil), r.Names...)
	for key, p := range (&w.requestFields).asRequest().byteFields() {
		if !utf8.ValidString(*p) {
			w.setRaw(key, *p)
			*p = ""
		}
	}
	for i, n := range w.Names {
		if !utf8.ValidString(n) {
			w.setRaw("names."+strconv.Itoa(i), n)
			w.Names[i] = ""
		}
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes r, taking back from "raw" the names sent there.
func (r *Request) UnmarshalJSON(b []byte) error {
	var w requestWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = Request(w.requestFields)
	fields := r.byteFields()
	for key, enc := range w.Raw {
		v, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return fmt.Errorf("raw %q: not base64: %w", key, err)
		}
		if p, ok := fields[key]; ok {
			*p = string(v)
			continue
		}
		i, err := strconv.Atoi(strings.TrimPrefix(key, "names."))
		if !strings.HasPrefix(key, "names.") || err != nil || i < 0 || i >= len(r.Names) {
			return fmt.Errorf("raw %q: no such name field", key)
		}
		r.Names[i] = string(v)
	}
	return nil
}

func (w *requestWire) setRaw(key, v string) {
	if w.Raw == nil {
		w.Raw = map[string]string{}
	}
	w.Raw[key] = base64.StdEncoding.EncodeToString([]byte(v))
}

func (f *requestFields) asRequest() *Request { return (*Request)(f) }

// CheckNames refuses a request whose names hold a NUL byte, naming the
// field: Linux names cannot hold one (a C string ends there), so a name
// with one could only be cut short or misread downstream.
func (r *Request) CheckNames() error {
	for key, p := range r.byteFields() {
		if strings.IndexByte(*p, 0) >= 0 {
			return fmt.Errorf("%s %q holds a NUL byte", key, *p)
		}
	}
	for i, n := range r.Names {
		if strings.IndexByte(n, 0) >= 0 {
			return fmt.Errorf("names[%d] %q holds a NUL byte", i, n)
		}
	}
	return nil
}

// Bytes is a name (or text holding names) in a response: a JSON string
// when it is valid UTF-8, else {"base64": "..."} with its bytes, so that a
// name that is not UTF-8 comes back as it is (see Request's "raw").
type Bytes string

// MarshalJSON encodes b as a string, or as {"base64": ...} when it is not
// valid UTF-8.
func (b Bytes) MarshalJSON() ([]byte, error) {
	if utf8.ValidString(string(b)) {
		return json.Marshal(string(b))
	}
	return json.Marshal(struct {
		Base64 string `json:"base64"`
	}{base64.StdEncoding.EncodeToString([]byte(b))})
}

// UnmarshalJSON decodes either form.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*b = Bytes(s)
		return nil
	}
	var o struct {
		Base64 *string `json:"base64"`
	}
	if err := json.Unmarshal(data, &o); err != nil || o.Base64 == nil {
		return fmt.Errorf("control: a name is a string or {\"base64\": ...}, not %s", data)
	}
	v, err := base64.StdEncoding.DecodeString(*o.Base64)
	if err != nil {
		return fmt.Errorf("control: base64 name: %w", err)
	}
	*b = Bytes(v)
	return nil
}

// errorWire is Error on the wire: a message that is not valid UTF-8 (it
// names a path that is not) goes in Raw, base64, as a Request's names do.
type errorWire struct {
	errorFields
	Raw map[string]string `json:"raw,omitempty"`
}

type errorFields Error

// MarshalJSON encodes e with a message that is not valid UTF-8 in "raw".
func (e Error) MarshalJSON() ([]byte, error) {
	w := errorWire{errorFields: errorFields(e)}
	if !utf8.ValidString(e.Message) {
		w.Raw = map[string]string{"message": base64.StdEncoding.EncodeToString([]byte(e.Message))}
		w.Message = strings.ToValidUTF8(e.Message, "\ufffd") // for a reader that ignores raw
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes e, the message from "raw" when it is there.
func (e *Error) UnmarshalJSON(b []byte) error {
	var w errorWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*e = Error(w.errorFields)
	if enc, ok := w.Raw["message"]; ok {
		v, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return fmt.Errorf("raw message: not base64: %w", err)
		}
		e.Message = string(v)
	}
	return nil
}
