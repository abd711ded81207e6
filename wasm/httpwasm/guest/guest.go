//go:build wasip1

// Package guest is a minimal Go SDK for http-wasm handler guests (the
// http-wasm HTTP handler ABI, http-wasm.io), built with the standard
// toolchain: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared. It
// exports handle_request and handle_response (go:wasmexport) and calls
// the handler registered with Handle (in an init function).
//
// A handler answers the request itself (a route: it returns false) or
// passes it to the host's next handler (middleware: it returns true),
// whose response the function given to HandleResponse may then change.
package guest

import "unsafe"

//go:wasmimport http_handler get_method
func getMethod(buf, limit uint32) uint32

//go:wasmimport http_handler get_uri
func getURI(buf, limit uint32) uint32

//go:wasmimport http_handler get_config
func getConfig(buf, limit uint32) uint32

//go:wasmimport http_handler get_header_values
func getHeaderValues(kind, name, nameLen, buf, limit uint32) uint64

//go:wasmimport http_handler set_header_value
func setHeaderValue(kind, name, nameLen, value, valueLen uint32)

//go:wasmimport http_handler read_body
func readBody(kind, buf, limit uint32) uint64

//go:wasmimport http_handler write_body
func writeBody(kind, buf, n uint32)

//go:wasmimport http_handler set_status_code
func setStatusCode(code uint32)

//go:wasmimport http_handler get_status_code
func getStatusCode() uint32

// Header kinds and body kinds of the ABI.
const (
	Request  = 0
	Response = 1
)

var buf = make([]byte, 2048)

func ptr(b []byte) uint32 {
	if len(b) == 0 {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(&b[0])))
}

func strPtr(s string) uint32 {
	if s == "" {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(unsafe.StringData(s))))
}

// get calls a getter with buf, growing it when the value is longer.
func get(fn func(buf, limit uint32) uint32) string {
	for {
		n := fn(ptr(buf), uint32(len(buf)))
		if int(n) <= len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, n)
	}
}

// Method is the request's method.
func Method() string { return get(getMethod) }

// URI is the request's URI (path and query).
func URI() string { return get(getURI) }

// Config is the module's configuration (get_config).
func Config() string { return get(getConfig) }

// HeaderValues returns the values of a request (kind Request) or response
// (kind Response) header.
func HeaderValues(kind uint32, name string) []string {
	for {
		r := getHeaderValues(kind, strPtr(name), uint32(len(name)), ptr(buf), uint32(len(buf)))
		count, n := uint32(r>>32), uint32(r)
		if int(n) > len(buf) {
			buf = make([]byte, n)
			continue
		}
		vs := make([]string, 0, count)
		start := 0
		for i := 0; i < int(n); i++ {
			if buf[i] == 0 {
				vs = append(vs, string(buf[start:i]))
				start = i + 1
			}
		}
		return vs
	}
}

// SetHeader sets a header of kind Request or Response.
func SetHeader(kind uint32, name, value string) {
	setHeaderValue(kind, strPtr(name), uint32(len(name)), strPtr(value), uint32(len(value)))
}

// ReadBody reads the whole body of kind Request or Response.
func ReadBody(kind uint32) []byte {
	var out []byte
	for {
		r := readBody(kind, ptr(buf), uint32(len(buf)))
		out = append(out, buf[:uint32(r)]...)
		if r>>32 == 1 {
			return out
		}
	}
}

// Write appends b to the response body.
func Write(b []byte) { writeBody(Response, ptr(b), uint32(len(b))) }

// WriteString appends s to the response body.
func WriteString(s string) { writeBody(Response, strPtr(s), uint32(len(s))) }

// SetStatus sets the response status.
func SetStatus(code int) { setStatusCode(uint32(code)) }

// Status returns the response status.
func Status() int { return int(getStatusCode()) }

var (
	onRequest  func() (next bool)
	onResponse func(isError bool)
)

// Handle registers the request handler. It returns true to pass the
// request to the host's next handler (middleware), false when it wrote
// the response (a route).
func Handle(fn func() (next bool)) { onRequest = fn }

// HandleResponse registers what runs after the next handler, when the
// request handler returned true.
func HandleResponse(fn func(isError bool)) { onResponse = fn }

//go:wasmexport handle_request
func handleRequest() uint64 {
	if onRequest != nil && onRequest() {
		return 1
	}
	return 0
}

//go:wasmexport handle_response
func handleResponse(reqCtx, isError uint32) {
	if onResponse != nil {
		onResponse(isError != 0)
	}
}
