package modinfo_test

import (
	"fmt"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/wasm/modinfo"
)

func ExampleAppend() {
	wasmBytes := []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00} // from go build
	out, err := modinfo.Append(wasmBytes, raceless.Info{Name: "hello", Version: "1.0",
		Params: []raceless.ParamSpec{{Name: "who", Type: raceless.ParamString, Default: "world"}}})
	if err != nil {
		panic(err)
	}
	info, err := modinfo.Read(out)
	fmt.Println(info.Name, info.Version, info.Params[0].Name, err)
	// Output: hello 1.0 who <nil>
}
