package wasm

import "github.com/tetratelabs/wazero/experimental"

// wasmPage is the size of a WebAssembly memory page.
const wasmPage = 64 << 10

// limitAllocator backs an instance's linear memory with a plain []byte that
// refuses to grow past limit bytes: wazero's memory limit is per runtime, and
// a Loader has one runtime, so the per-module limit (Source.WithMemoryLimit)
// is enforced here, where memory.grow asks for more.
func limitAllocator(limit uint64) experimental.MemoryAllocator {
	return experimental.MemoryAllocatorFunc(func(capacity, max uint64) experimental.LinearMemory {
		return &limitedMemory{limit: min(limit, max), buf: make([]byte, 0, min(capacity, limit))}
	})
}

// limitedMemory is a non-shared linear memory: Reallocate may move it.
type limitedMemory struct {
	limit uint64
	buf   []byte
}

func (m *limitedMemory) Reallocate(size uint64) []byte {
	if size > m.limit {
		return nil // memory.grow fails: the guest sees -1
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
		return m.buf
	}
	// Grow geometrically, as append would, but never past the limit.
	next := make([]byte, size, min(max(size, 2*uint64(cap(m.buf))), m.limit))
	copy(next, m.buf)
	m.buf = next
	return m.buf
}

func (m *limitedMemory) Free() { m.buf = nil }
