// Command wasm-modinfo shows or sets the raceless.modinfo block of a
// WebAssembly module.
//
//	wasm-modinfo FILE.wasm                  print the block as JSON
//	wasm-modinfo -set modinfo.json FILE.wasm  append (replace) the block
//	wasm-modinfo -set modinfo.json -o OUT.wasm FILE.wasm
//
// The post-build step of a Go module:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o m.wasm .
//	go run github.com/raceless/raceless/cmd/wasm-modinfo -set modinfo.json m.wasm
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/raceless/raceless/wasm/modinfo"
)

func main() {
	set := flag.String("set", "", "modinfo JSON `file` to append")
	out := flag.String("o", "", "output `file` (default: rewrite the input)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: wasm-modinfo [-set modinfo.json [-o out.wasm]] FILE.wasm")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *set, *out); err != nil {
		fmt.Fprintln(os.Stderr, "wasm-modinfo:", err)
		os.Exit(1)
	}
}

func run(file, set, out string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if set == "" {
		blk, err := modinfo.ReadBlock(b)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(blk)
	}
	p, err := os.ReadFile(set)
	if err != nil {
		return err
	}
	blk, err := modinfo.DecodeBlock(p) // capabilities included
	if err != nil {
		return fmt.Errorf("%s: %w", set, err)
	}
	nb, err := modinfo.AppendBlock(b, blk)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if out == "" {
		out = file
	}
	return os.WriteFile(out, nb, 0o644)
}
