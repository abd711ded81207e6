package httpwasm

import (
	"testing"

	"github.com/tetratelabs/wazero/experimental"
)

// A member's linear memory is mapped at its maximum, grows in place up to
// it and no further, is zeroed, survives wazero's Free (the instance may
// still run), and is unmapped by release.
func TestLinearMemoryMapped(t *testing.T) {
	var lm *linearMemory
	alloc := allocator(&lm)
	const max = 4 << 16
	mem := alloc.Allocate(1<<16, max)
	if lm == nil || mem != experimental.LinearMemory(lm) || !lm.mapped {
		t.Fatalf("not recorded or not mapped: %+v", lm)
	}
	b := mem.Reallocate(1 << 16)
	b[0], b[len(b)-1] = 1, 2
	g := mem.Reallocate(3 << 16)
	if len(g) != 3<<16 || &g[0] != &b[0] || g[0] != 1 || g[1<<16-1] != 2 || g[3<<16-1] != 0 {
		t.Fatal("growth moved or lost the memory, or is not zeroed")
	}
	if mem.Reallocate(max+1) != nil {
		t.Fatal("grew past its maximum")
	}
	mem.Free()
	if !lm.mapped || lm.Reallocate(1) == nil {
		t.Fatal("Free unmapped the memory: an instance closed at its deadline may still run")
	}
	lm.release()
	if lm.mapped || lm.buf != nil {
		t.Fatal("release did not unmap")
	}
	lm.release() // twice: harmless
}
