package wasmfs_test

import (
	"context"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/vfs/ramfs"
	"github.com/raceless/raceless/vfs/vfstest"
)

// memfsType is examples/wasm/memfs as the conformance suite sees it: the
// ramfs implementation running in the guest, so with ramfs's limits.
var memfsType = vfstest.Type{
	Name: "memfs",
	Load: func(ctx context.Context, h *raceless.Host) error {
		return load(ctx, h, "examples/wasm/memfs")
	},
	LimitOptions: "size=64k",
	Limit:        64 << 10,
	MaxFileSize:  ramfs.MaxFileSize,
}

func TestMemfsConformance(t *testing.T) { vfstest.Run(t, memfsType) }

// statusfsType is examples/wasm/statusfs: read-only, generated files.
var statusfsType = vfstest.Type{
	Name: "statusfs",
	Load: func(ctx context.Context, h *raceless.Host) error {
		return load(ctx, h, "examples/wasm/statusfs")
	},
	ReadOnly: true,
	Files:    []string{"mount", "superblocks", "info/squares"},
}

func TestStatusfsConformance(t *testing.T) { vfstest.Run(t, statusfsType) }
