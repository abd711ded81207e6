//go:build wasip1

// Command hello is the smallest raceless module: it logs on init and exit,
// has one parameter, "who", and subscribes to the hook "hello.ping".
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o hello.wasm .
//	go run ./cmd/wasm-modinfo -set modinfo.json hello.wasm
package main

import "github.com/raceless/raceless/wasm/sdk"

func init() {
	sdk.OnInit(func() error {
		sdk.Log("hello, " + sdk.ParamOr("who", "world"))
		// A hook: called by the host's CallHooks("hello.ping", ...).
		return sdk.Hook("hello.ping", func() error {
			sdk.Log("pong")
			return nil
		})
	})
	sdk.OnExit(func() (int, error) {
		sdk.Log("goodbye, " + sdk.ParamOr("who", "world"))
		return 0, nil
	})
}

func main() {}
