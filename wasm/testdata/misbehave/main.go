//go:build wasip1

// Command misbehave is a test module that traps, panics, loops and eats
// memory on request. Its parameter "fail" makes init fail.
package main

import (
	"errors"

	"github.com/raceless/raceless/wasm/sdk"
)

func init() {
	sdk.OnInit(func() error {
		if v, _ := sdk.Param("fail"); v == "Y" { // a bool parameter, in canonical form
			return errors.New("init failed on request")
		}
		for _, s := range []string{"spin", "boom", "eat", "nilderef", "echo"} {
			if err := sdk.Export(s); err != nil {
				return err
			}
		}
		return nil
	})
}

var sink [][]byte

//go:wasmexport spin
func spin() int64 {
	n := int64(0)
	for {
		n++
		if n < 0 {
			return n
		}
	}
}

//go:wasmexport boom
func boom() int64 { panic("boom on request") }

var nilp *int64

//go:wasmexport nilderef
func nilderef() int64 { return *nilp }

// eat allocates mb MiB and keeps it.
//
//go:wasmexport eat
func eat(mb int64) int64 {
	for i := int64(0); i < mb; i++ {
		b := make([]byte, 1<<20)
		b[0] = 1
		sink = append(sink, b)
	}
	return int64(len(sink))
}

//go:wasmexport echo
func echo(v int64) int64 { return v }

func main() {}
