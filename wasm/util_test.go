package wasm_test

import "os"

func osMkdirTemp() (string, error) { return os.MkdirTemp("", "raceless-wasm-cache-") }
