//go:build wasip1

// Command httphello is an http-wasm handler guest (the http-wasm HTTP
// handler ABI) written in plain Go with package guest: a route answering
// with its method, URI, configuration and a per-instance counter, and,
// for the path /panic, a panic (which the host turns into a 500 and a
// replaced pool member).
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o httphello.wasm .
package main

import (
	"strconv"

	"github.com/raceless/raceless/wasm/httpwasm/guest"
)

var served int // this instance's own state: each pool member has its own

func init() {
	guest.Handle(func() bool {
		uri := guest.URI()
		if uri == "/panic" {
			panic("asked to")
		}
		served++
		guest.SetHeader(guest.Response, "X-Guest", "go")
		guest.SetStatus(200)
		guest.WriteString("hello from go: " + guest.Method() + " " + uri + " config=" + guest.Config() +
			" served=" + strconv.Itoa(served) + " agent=" + first(guest.HeaderValues(guest.Request, "User-Agent")))
		return false
	})
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

func main() {}
