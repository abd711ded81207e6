// Package hello is the native example module: one parameter (greeting), one
// exported symbol (hello_greet, a raceless.Func) and one hook (on the
// "hello" event chain). Package hello/consumer imports its symbol, so that
// lsmod shows "hello ... 1 hello_consumer".
package hello

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/raceless/raceless"
)

// Name is the module's name; Symbol the name of its exported function;
// Event the hook chain it subscribes to.
const (
	Name   = "hello"
	Symbol = "hello_greet"
	Event  = "hello"
	// SleepSymbol is a function that holds a reference for a while.
	SleepSymbol = "hello_sleep"
)

// Size is what lsmod shows in its Size column for this module.
const Size = 4096

// Info is the module's metadata (what modinfo hello shows).
var Info = raceless.Info{
	Name:        Name,
	Version:     "1.0.0",
	License:     "Apache-2.0",
	Description: "Example native module: a parameter, a symbol and a hook",
	Author:      "The raceless authors",
	Aliases:     []string{"symbol:" + Symbol, "hello-*", "greeter"},
	Params: []raceless.ParamSpec{
		{Name: "greeting", Type: raceless.ParamString, Default: "Hello", Description: "what the module says"},
		{Name: "repeat", Type: raceless.ParamInt, Default: "1", Description: "how many times the hook says it"},
	},
}

// Source returns the module's source, for Host.Load.
func Source() raceless.Source {
	return raceless.Native(Info, func() raceless.Module { return new(module) })
}

type module struct {
	k     *raceless.Kernel
	calls atomic.Int64
}

func (m *module) Init(k *raceless.Kernel) error {
	m.k = k
	greeting := k.Params()["greeting"]
	var greet raceless.Func = func(ctx context.Context, args []uint64) ([]uint64, error) {
		n := m.calls.Add(1)
		var sum uint64
		for _, a := range args {
			sum += a
		}
		k.Logger().Debug(greeting, "call", n)
		return []uint64{uint64(n), sum}, nil
	}
	if err := k.Export(Symbol, greet); err != nil {
		return err
	}
	// hello_sleep(ms) holds the caller's reference on the module for ms
	// milliseconds (or until the call is cancelled): a long call, for
	// demonstrating rmmod --wait and --force.
	var sleep raceless.Func = func(ctx context.Context, args []uint64) ([]uint64, error) {
		if len(args) != 1 {
			return nil, fmt.Errorf("hello_sleep wants 1 argument (milliseconds): %w", raceless.ErrInvalid)
		}
		t := time.NewTimer(time.Duration(args[0]) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
			return []uint64{0}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := k.Export(SleepSymbol, sleep); err != nil {
		return err
	}
	repeat := k.Params()["repeat"]
	if err := k.Hook(Event, func(ctx context.Context, arg any) error {
		k.Logger().Info(fmt.Sprintf("%s, %v", greeting, arg), "repeat", repeat)
		return nil
	}); err != nil {
		return err
	}
	k.Logger().Info("loaded", "greeting", greeting)
	return nil
}

func (m *module) Exit() (int, error) {
	m.k.Logger().Info("unloaded", "calls", m.calls.Load())
	return 0, nil
}

func (m *module) Size() int64 { return Size }
