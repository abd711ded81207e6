package wasm

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// spinModule exports spin: loop br 0 end (no globals, no memory).
func spinModule() []byte {
	b := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	b = append(b, 1, 4, 1, 0x60, 0, 0)                             // type 0: () -> ()
	b = append(b, 3, 2, 1, 0)                                      // function 0: type 0
	b = append(b, 7, 8, 1, 4, 's', 'p', 'i', 'n', 0, 0)            // export "spin" func 0
	b = append(b, 10, 9, 1, 7, 0, 0x03, 0x40, 0x0c, 0, 0x0b, 0x0b) // loop br 0 end end
	return b
}

// TestInstrumentInterrupts checks that raising the flag from another
// goroutine stops a looping guest on a runtime without CloseOnContextDone
// (so wazero starts no goroutine per call).
func TestInstrumentInterrupts(t *testing.T) {
	ctx := context.Background()
	bin, err := instrument(spinModule())
	if err != nil {
		t.Fatal(err)
	}
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	m, err := rt.Instantiate(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	g, ok := m.ExportedGlobal(interruptExport).(api.MutableGlobal)
	if !ok {
		t.Fatal("no mutable interrupt global")
	}
	done := make(chan error, 1)
	go func() { _, err := m.ExportedFunction("spin").Call(ctx); done <- err }()
	// Garbage collections while it spins: a spinning guest without a
	// preemption point (this module has no memory of its own: instrument
	// gives it an empty one for "memory.grow 0") would hold off their
	// stop-the-world, and with it the timer below, for ever.
	for range 3 {
		runtime.GC()
	}
	select {
	case err := <-done:
		t.Fatalf("spin returned early: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	g.Set(1)
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("spin returned no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("spin not interrupted")
	}
}

func TestInstrumentErrors(t *testing.T) {
	// A module already exporting the flag's name is refused.
	bad := append([]byte{}, spinModule()[:18]...) // header, type, function
	name := interruptExport
	exp := append([]byte{1, byte(len(name))}, name...)
	exp = append(exp, 0, 0)
	bad = append(bad, 7, byte(len(exp)))
	bad = append(bad, exp...)
	bad = append(bad, spinModule()[28:]...) // code
	if _, err := instrument(bad); !errors.Is(err, errInstrument) {
		t.Fatalf("reserved export: %v", err)
	}
	// Unknown opcodes are refused, not skipped.
	bad = append([]byte{}, spinModule()...)
	bad[len(bad)-4] = 0x06 // legacy try
	if _, err := instrument(bad); !errors.Is(err, errInstrument) {
		t.Fatalf("unknown opcode: %v", err)
	}
	// Truncated code.
	bad = spinModule()
	bad[len(bad)-8] = 9 // body size past the section
	if _, err := instrument(bad); err == nil {
		t.Fatal("truncated body accepted")
	}
}
