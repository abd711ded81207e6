//go:build wasip1

// Command httpbench is the http-wasm guest of `raceless bench http`: the
// benchmark's handler ("hello, world", Content-Type text/plain) in plain
// Go with package guest.
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o httpbench.wasm .
package main

import "github.com/raceless/raceless/wasm/httpwasm/guest"

var body = []byte("hello, world\n")

func init() {
	guest.Handle(func() bool {
		guest.SetHeader(guest.Response, "Content-Type", "text/plain")
		guest.Write(body)
		return false
	})
}

func main() {}
