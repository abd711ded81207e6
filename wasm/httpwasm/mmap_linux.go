package httpwasm

import (
	"context"
	"syscall"

	"github.com/tetratelabs/wazero/experimental"
)

// withMemory makes the linear memory of the instance instantiated with the
// returned context outside the Go heap, recording it in *lm: it reserves
// its largest size as anonymous memory (mmap, MAP_NORESERVE: the kernel
// backs pages as they are touched, zeroed) and grows in place. A pool
// started or closed under load, as in a hot swap, so costs the Go
// collector nothing: no multi-megabyte slices to allocate, zero, copy on
// growth and collect.
//
// wazero calls Free when the instance is closed, which it may do while
// the guest still runs (a deadline: the code stops at its next check), so
// Free does not unmap: the owner calls (*linearMemory).release once it
// knows no call runs in the closed instance (freeMember).
func withMemory(ctx context.Context, lm **linearMemory) context.Context {
	return experimental.WithMemoryAllocator(ctx, allocator(lm))
}

// allocator is withMemory's: it maps one memory and records it in *lm.
func allocator(lm **linearMemory) experimental.MemoryAllocatorFunc {
	return func(_, max uint64) experimental.LinearMemory {
		m := &linearMemory{}
		if max > 0 && max <= 1<<32 {
			if b, err := syscall.Mmap(-1, 0, int(max), syscall.PROT_READ|syscall.PROT_WRITE,
				syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE); err == nil {
				m.buf, m.mapped = b, true
			}
		}
		*lm = m
		return m
	}
}

// linearMemory is a member's linear memory: mapped (mmap) or, if the
// mapping failed, a Go slice grown by copying, as wazero's own.
type linearMemory struct {
	buf    []byte
	mapped bool
}

func (m *linearMemory) Reallocate(size uint64) []byte {
	switch {
	case m.mapped:
		if size > uint64(len(m.buf)) {
			return nil // past the reserved maximum
		}
		return m.buf[:size]
	case size <= uint64(cap(m.buf)):
		m.buf = m.buf[:size]
	default:
		m.buf = append(m.buf[:cap(m.buf)], make([]byte, size-uint64(cap(m.buf)))...)
	}
	return m.buf
}

// Free is wazero's: see withMemory.
func (m *linearMemory) Free() {}

// release unmaps the memory; the instance must be closed and run nothing.
func (m *linearMemory) release() {
	if m != nil && m.mapped {
		m.mapped = false
		syscall.Munmap(m.buf[:cap(m.buf)])
		m.buf = nil
	}
}
