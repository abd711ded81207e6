package wasm_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/raceless/raceless"
	"github.com/raceless/raceless/internal/wasmtest"
)

func TestHello(t *testing.T) {
	e := newEnv(t, wasmConfig())
	m := e.mustLoad(wasmtest.Hello, map[string]string{"who": "raceless"})
	if !strings.Contains(e.logs.String(), "hello, raceless") {
		t.Fatalf("no greeting in log:\n%s", e.logs)
	}
	if !strings.Contains(e.logs.String(), "module=hello") {
		t.Fatalf("log lacks the module name:\n%s", e.logs)
	}
	if m.Size() <= 0 {
		t.Fatalf("size %d", m.Size())
	}
	if err := e.h.CallHooks(context.Background(), "hello.ping", nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.logs.String(), "pong") {
		t.Fatalf("hook did not run:\n%s", e.logs)
	}
	if err := e.h.Unload(context.Background(), "hello", raceless.UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.logs.String(), "goodbye, raceless") {
		t.Fatalf("no farewell in log:\n%s", e.logs)
	}
	if m.Size() != 0 || m.State() != raceless.StateGone {
		t.Fatalf("after unload: size %d state %v", m.Size(), m.State())
	}
}

func TestBadParam(t *testing.T) {
	e := newEnv(t, wasmConfig())
	for _, p := range []map[string]string{{"nope": "1"}} {
		_, err := e.load(wasmtest.Hello, p)
		if !errors.Is(err, raceless.ErrInvalid) || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("load with %v: %v", p, err)
		}
	}
	_, err := e.load(wasmtest.Misbehave, map[string]string{"fail": "maybe"})
	if !errors.Is(err, raceless.ErrInvalid) || !strings.Contains(err.Error(), "fail") {
		t.Fatalf("load with fail=maybe: %v", err)
	}
	if strings.Contains(e.logs.String(), "hello,") {
		t.Fatalf("init ran despite a bad parameter:\n%s", e.logs)
	}
}

func TestInitFails(t *testing.T) {
	e := newEnv(t, wasmConfig())
	_, err := e.load(wasmtest.Misbehave, map[string]string{"fail": "yes"})
	if !errors.Is(err, raceless.ErrInit) || !strings.Contains(err.Error(), "init failed on request") {
		t.Fatalf("load: %v", err)
	}
	if _, ok := e.h.Module("misbehave"); ok {
		t.Fatal("failed module still registered")
	}
	// Its symbols never became visible; a good load works afterwards.
	e.mustLoad(wasmtest.Misbehave, nil)
	if r, err := e.call("echo", 7); err != nil || r[0] != 7 {
		t.Fatalf("echo: %v %v", r, err)
	}
}

func TestProviderConsumer(t *testing.T) {
	e := newEnv(t, wasmConfig())
	prov := e.mustLoad(wasmtest.Provider, nil)
	if r, err := e.call("add", 2, 3); err != nil || r[0] != 5 {
		t.Fatalf("add: %v %v", r, err)
	}
	e.mustLoad(wasmtest.Consumer, nil)
	if h := prov.Holders(); len(h) != 1 || h[0] != "consumer" {
		t.Fatalf("provider holders %v", h)
	}
	if r, err := e.call("sum3", 1, 2, 3); err != nil || r[0] != 6 {
		t.Fatalf("sum3: %v %v", r, err)
	}
	err := e.h.Unload(context.Background(), "provider", raceless.UnloadOptions{})
	if !errors.Is(err, raceless.ErrBusy) || !strings.Contains(err.Error(), "consumer") {
		t.Fatalf("unload provider while used: %v", err)
	}
	if _, err := e.call("add", 1); !errors.Is(err, raceless.ErrInvalid) {
		t.Fatalf("add with one argument: %v", err)
	}
	// A protected call through a Handle computes in the caller's stack
	// (the symbol uses it as wazero's stack): the results come back in
	// it, so a caller that reuses one stack with room for them calls
	// without allocating; api.Function.Call allocates twice.
	add := e.h.Handle("add")
	stack := []uint64{2, 3}
	if r, err := add.Call(context.Background(), stack); err != nil || len(r) != 1 || r[0] != 5 || &r[0] != &stack[0] {
		t.Fatalf("add through a handle: %v %v, want [5] in the caller's stack (now %v)", r, err, stack)
	}
	if r, err := e.call("add", 2, 3); err != nil || len(r) != 1 || r[0] != 5 {
		t.Fatalf("add by name: %v %v", r, err)
	}
	if allocs := testing.AllocsPerRun(100, func() {
		stack = stack[:2]
		stack[0], stack[1] = 2, 3
		if r, err := add.Call(context.Background(), stack); err != nil || r[0] != 5 {
			t.Fatalf("add through a handle: %v %v", r, err)
		}
	}); allocs != 0 {
		t.Fatalf("a call through a handle in a reused stack allocates %v times, want 0", allocs)
	}
	// So does one through a Caller, which holds the reference in its own
	// word.
	c := e.h.NewCaller()
	defer c.Close()
	stack = stack[:2]
	stack[0], stack[1] = 2, 3
	if r, err := c.Call(context.Background(), add, stack); err != nil || len(r) != 1 || r[0] != 5 || &r[0] != &stack[0] {
		t.Fatalf("add through a caller: %v %v, want [5] in the caller's stack (now %v)", r, err, stack)
	}
	if allocs := testing.AllocsPerRun(100, func() {
		stack = stack[:2]
		stack[0], stack[1] = 2, 3
		if r, err := c.Call(context.Background(), add, stack); err != nil || r[0] != 5 {
			t.Fatalf("add through a caller: %v %v", r, err)
		}
	}); allocs != 0 {
		t.Fatalf("a call through a caller in a reused stack allocates %v times, want 0", allocs)
	}
	// The consumer's calls of its import (add, twice per sum3) compute in
	// the consumer's own stack: sum3 allocates no more than add.
	sum3 := e.h.Handle("sum3")
	stack3 := make([]uint64, 3)
	if allocs := testing.AllocsPerRun(100, func() {
		stack3 = stack3[:3]
		stack3[0], stack3[1], stack3[2] = 1, 2, 3
		if r, err := c.Call(context.Background(), sum3, stack3); err != nil || r[0] != 6 {
			t.Fatalf("sum3 through a caller: %v %v", r, err)
		}
	}); allocs != 0 {
		t.Fatalf("sum3 (two imported calls) in a reused stack allocates %v times, want 0", allocs)
	}
	for _, n := range []string{"consumer", "provider"} {
		if err := e.h.Unload(context.Background(), n, raceless.UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRefuser(t *testing.T) {
	e := newEnv(t, wasmConfig())
	e.mustLoad(wasmtest.Refuser, nil)
	if _, err := e.call("open"); err != nil {
		t.Fatal(err)
	}
	err := e.h.Unload(context.Background(), "refuser", raceless.UnloadOptions{})
	var be *raceless.BusyError
	if !errors.As(err, &be) || be.Refs != 1 {
		t.Fatalf("unload with a user: %v", err)
	}
	// Exactly as it was: live, symbols callable, state kept.
	if r, err := e.call("users"); err != nil || r[0] != 1 {
		t.Fatalf("users after refusal: %v %v", r, err)
	}
	if _, err := e.call("close"); err != nil {
		t.Fatal(err)
	}
	if err := e.h.Unload(context.Background(), "refuser", raceless.UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}
