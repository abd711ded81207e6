//go:build wasip1

// Command consumer imports the symbol add from another module (provider):
// the import makes provider list consumer among its holders ("Used by"),
// so provider cannot be unloaded while consumer is loaded.
package main

import "github.com/raceless/raceless/wasm/sdk"

var add sdk.Symbol

func init() {
	sdk.OnInit(func() error {
		var err error
		if add, err = sdk.Import("add"); err != nil {
			return err
		}
		return sdk.Export("sum3")
	})
}

// sum3 returns a+b+c, computed by the provider's add; a negative result
// signals an error from the imported call.
//
//go:wasmexport sum3
func sum3(a, b, c int64) int64 {
	r, err := add.Call(uint64(a), uint64(b))
	if err != nil {
		sdk.LogLevel(sdk.LevelError, err.Error())
		return -1
	}
	r, err = add.Call(r[0], uint64(c))
	if err != nil {
		sdk.LogLevel(sdk.LevelError, err.Error())
		return -1
	}
	return int64(r[0])
}

func main() {}
