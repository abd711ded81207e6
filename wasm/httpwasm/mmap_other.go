//go:build !linux

package httpwasm

import "context"

// withMemory leaves the linear memory to wazero (in the Go heap) outside
// Linux.
func withMemory(ctx context.Context, _ **linearMemory) context.Context { return ctx }

type linearMemory struct{}

func (*linearMemory) release() {}
