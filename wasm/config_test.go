package wasm_test

import (
	"time"

	"github.com/raceless/raceless/wasm"
)

func wasmConfig() wasm.Config {
	return wasm.Config{CallTimeout: 5 * time.Second, InitTimeout: 20 * time.Second}
}
