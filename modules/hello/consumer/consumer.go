// Package consumer is a native module that imports hello's symbol: while it
// is loaded, hello is "Used by" it and cannot be removed.
package consumer

import (
	"context"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/modules/hello"
)

// Name is the module's name.
const Name = "hello_consumer"

// Info is the module's metadata.
var Info = raceless.Info{
	Name:        Name,
	Version:     "1.0.0",
	License:     "Apache-2.0",
	Description: "Example native module that imports hello_greet",
	Author:      "The raceless authors",
	Depends:     []string{hello.Name},
}

// Source returns the module's source.
func Source() raceless.Source {
	return raceless.Native(Info, func() raceless.Module { return new(module) })
}

type module struct{}

func (*module) Init(k *raceless.Kernel) error {
	v, err := k.Import(context.Background(), hello.Symbol)
	if err != nil {
		return err
	}
	if f, ok := v.(raceless.Func); ok {
		_, err = f(context.Background(), []uint64{1})
	}
	return err
}

func (*module) Exit() (int, error) { return 0, nil }

func (*module) Size() int64 { return 2048 }
