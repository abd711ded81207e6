package wasm

import (
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
)

// wasmPage is the size of a WebAssembly memory page.
const wasmPage = 64 << 10

// memoryAllocator backs an instance's linear memory with a plain []byte
// that refuses to grow past limit bytes and reports every size it takes to
// size. wazero's memory limit is per runtime, and a Loader has one runtime,
// so the per-module limit (Source.WithMemoryLimit) is enforced here, where
// memory.grow asks for more; and reporting the size here, where it
// changes, keeps the call path free of a size check.
func memoryAllocator(limit uint64, size *atomic.Int64) experimental.MemoryAllocator {
	return experimental.MemoryAllocatorFunc(func(capacity, max uint64) experimental.LinearMemory {
		return &linearMemory{limit: min(limit, max), size: size, buf: make([]byte, 0, min(capacity, limit))}
	})
}

// linearMemory is a non-shared linear memory: Reallocate may move it.
// wazero calls Reallocate at instantiation and from memory.grow, so never
// concurrently (a guest call holds its instance's call lock).
type linearMemory struct {
	limit uint64
	size  *atomic.Int64 // the instance's memSize
	buf   []byte
}

func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > m.limit {
		return nil // memory.grow fails: the guest sees -1
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
	} else {
		// Grow geometrically, as append would, but never past the limit.
		next := make([]byte, size, min(max(size, 2*uint64(cap(m.buf))), m.limit))
		copy(next, m.buf)
		m.buf = next
	}
	m.size.Store(int64(size))
	return m.buf
}

// Free is called when the module is closed.
func (m *linearMemory) Free() {
	m.buf = nil
	m.size.Store(0)
}
