//go:build wasip1

// Command values is a test module whose symbols take and return every
// WebAssembly value type: i32 (int32), i64 (int64), f32 and f64. The CLI's
// typed arguments and results are tested with it.
package main

import "github.com/raceless/raceless/wasm/sdk"

func init() {
	sdk.OnInit(func() error {
		for _, s := range []string{"one32", "neg32", "neg64", "mulf32", "divf64"} {
			if err := sdk.Export(s); err != nil {
				return err
			}
		}
		return nil
	})
}

// one32 returns 1 whatever its argument: its i32 result takes the slot
// of an i64 argument.
//
//go:wasmexport one32
func one32(int64) int32 { return 1 }

//go:wasmexport neg32
func neg32(x int32) int32 { return -x }

//go:wasmexport neg64
func neg64(x int64) int64 { return -x }

//go:wasmexport mulf32
func mulf32(a, b float32) float32 { return a * b }

//go:wasmexport divf64
func divf64(a, b float64) float64 { return a / b }

func main() {}
