//go:build wasip1

// Command provider exports symbols for other modules (and the host) to
// call: add and mul. See examples/wasm/consumer.
package main

import "github.com/raceless/raceless/wasm/sdk"

func init() {
	sdk.OnInit(func() error {
		for _, s := range []string{"add", "mul"} {
			if err := sdk.Export(s); err != nil {
				return err
			}
		}
		return nil
	})
}

//go:wasmexport add
func add(a, b int64) int64 { return a + b }

//go:wasmexport mul
func mul(a, b int64) int64 { return a * b }

func main() {}
