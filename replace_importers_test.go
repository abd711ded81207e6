package raceless

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

// provider is a native module exporting Funcs (each returning its
// version, so a call tells which instance served it) and optional
// values, declaring the signatures in sigs (implementing Signer when sigs
// is not nil). A call after its Exit fails the test through poisoned.
type provider struct {
	testModule
	version  uint64
	funcs    []string
	values   map[string]any
	sigs     map[string]Signature
	poisoned atomic.Bool // a Func was called after Exit
}

func (p *provider) Init(k *Kernel) error {
	p.inits.Add(1)
	for _, name := range p.funcs {
		if err := k.Export(name, Func(func(_ context.Context, stack []uint64) ([]uint64, error) {
			if p.exited.Load() {
				p.poisoned.Store(true)
			}
			return append(stack[:0], p.version), nil
		})); err != nil {
			return err
		}
	}
	for name, v := range p.values {
		if err := k.Export(name, v); err != nil {
			return err
		}
	}
	if p.init != nil {
		return p.init(k)
	}
	return nil
}

// signedProvider is a provider that declares signatures (Signer).
type signedProvider struct{ *provider }

func (p signedProvider) Signature(symbol string) (Signature, bool) {
	s, ok := p.sigs[symbol]
	return s, ok
}

func providerSrc(p *provider) Source {
	var mod Module = p
	if p.sigs != nil {
		mod = signedProvider{p}
	}
	return Native(Info{Name: "provider", Version: fmt.Sprint(p.version)}, func() Module { return mod })
}

// importer is a module importing syms in Init and keeping what it got.
type importer struct {
	testModule
	syms []string
	got  map[string]any
}

func (c *importer) Init(k *Kernel) error {
	c.got = map[string]any{}
	for _, s := range c.syms {
		v, err := k.Import(context.Background(), s)
		if err != nil {
			return err
		}
		c.got[s] = v
	}
	return nil
}

// call calls the imported Func sym and returns the version that served it.
func (c *importer) call(sym string) (uint64, error) {
	res, err := c.got[sym].(Func)(context.Background(), make([]uint64, 1))
	if err != nil {
		return 0, err
	}
	return res[0], nil
}

var sigAdd = Signature{Params: []ValueType{ValueTypeI32, ValueTypeI32}, Results: []ValueType{ValueTypeI32}}

// TestReplaceMovesImporters is issue 15's point 11: a module that others
// import is replaced; its importers move to the new instance in the swap's
// step (the Funcs they hold call it), the dependency edges and their
// references move with them, and the old instance is unloaded.
func TestReplaceMovesImporters(t *testing.T) {
	h := quietHost(t)
	v1 := &provider{version: 1, funcs: []string{"add"}}
	old := mustLoad(t, h, providerSrc(v1))
	c := &importer{syms: []string{"add"}}
	cons := mustLoad(t, h, src("consumer", c))
	// A Depends-only holder moves too.
	dep := mustLoad(t, h, src("dependant", &testModule{}, "provider"))
	if v, err := c.call("add"); err != nil || v != 1 {
		t.Fatalf("before: %d %v", v, err)
	}
	v2 := &provider{version: 2, funcs: []string{"add"}}
	m, err := h.Replace(deadline(t), "provider", providerSrc(v2), nil, ReplaceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := c.call("add"); err != nil || v != 2 {
		t.Fatalf("after: the imported Func called v%d (%v), want v2", v, err)
	}
	if old.State() != StateGone || v1.exits.Load() != 1 || v1.poisoned.Load() {
		t.Fatalf("old %s, exits %d, called after exit %v", old.State(), v1.exits.Load(), v1.poisoned.Load())
	}
	if got := m.Holders(); !slices.Equal(got, []string{"consumer", "dependant"}) {
		t.Fatalf("new instance's holders %v", got)
	}
	if got := cons.Deps(); !slices.Equal(got, []string{"provider"}) {
		t.Fatalf("consumer's deps %v", got)
	}
	h.mu.Lock()
	moved := cons.deps[m] && dep.deps[m] && cons.imported["add"] == m && len(old.holders) == 0
	h.mu.Unlock()
	if !moved {
		t.Fatal("dependency edges not moved to the new instance")
	}
	if n := m.Refs(); n != 2 {
		t.Fatalf("new instance holds %d references, want 2 (one per dependant)", n)
	}
	// The holders still hold it: an unload is refused naming them.
	if err := h.Unload(deadline(t), "provider", UnloadOptions{}); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "consumer,dependant") {
		t.Fatalf("unload of a held provider: %v", err)
	}
	for _, name := range []string{"consumer", "dependant"} {
		if err := h.Unload(deadline(t), name, UnloadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := m.Refs(); n != 0 {
		t.Fatalf("%d references left once the dependants are gone", n)
	}
	if err := h.Unload(deadline(t), "provider", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestReplaceWithImportersUnderLoad: goroutines calling through an imported
// Func while the provider is replaced again and again never see a failed
// call, never reach an instance after its Exit, and see versions only
// grow.
func TestReplaceWithImportersUnderLoad(t *testing.T) {
	h := quietHost(t)
	var versions []*provider
	v1 := &provider{version: 1, funcs: []string{"add"}}
	versions = append(versions, v1)
	mustLoad(t, h, providerSrc(v1))
	c := &importer{syms: []string{"add"}}
	mustLoad(t, h, src("consumer", c))
	var failed atomic.Value
	var calls atomic.Int64
	called := make(chan struct{}, 1) // a call has returned since the last receive
	stop := hammer(4, func() {
		last := uint64(0)
		for range 100 {
			v, err := c.call("add")
			if err != nil {
				failed.Store(err)
				return
			}
			if v < last {
				failed.Store(fmt.Errorf("version went back from %d to %d", last, v))
				return
			}
			last = v
			calls.Add(1)
			select {
			case called <- struct{}{}:
			default:
			}
		}
	})
	for v := uint64(2); v <= 20; v++ {
		waitFor(t, called, "a call between two swaps")
		p := &provider{version: v, funcs: []string{"add"}}
		versions = append(versions, p)
		if _, err := h.Replace(deadline(t), "provider", providerSrc(p), nil, ReplaceOptions{}); err != nil {
			stop()
			t.Fatal(err)
		}
	}
	stop()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	for _, p := range versions {
		if p.poisoned.Load() {
			t.Fatalf("v%d called after its Exit", p.version)
		}
	}
	if v, err := c.call("add"); err != nil || v != 20 {
		t.Fatalf("last call: v%d %v", v, err)
	}
}

// TestReplaceRefusedForImporters: a replacement that does not serve what
// the importers hold is refused naming the symbols and the importers; the
// replacement's Exit runs, and the old instance serves on unchanged.
func TestReplaceRefusedForImporters(t *testing.T) {
	cases := []struct {
		name  string
		v1    *provider
		v2    *provider
		want  []string // in the error, besides "consumer"
		sym   string
		force bool
	}{
		{name: "missing", sym: "add",
			v1:   &provider{funcs: []string{"add", "sub"}},
			v2:   &provider{funcs: []string{"sub"}},
			want: []string{"add (imported by consumer) is missing"}},
		{name: "missing-even-forced", sym: "add", force: true,
			v1:   &provider{funcs: []string{"add"}},
			v2:   &provider{funcs: []string{"other"}},
			want: []string{"add (imported by consumer) is missing"}},
		{name: "other-type", sym: "add",
			v1:   &provider{funcs: []string{"add"}, sigs: map[string]Signature{"add": sigAdd}},
			v2:   &provider{funcs: []string{"add"}, sigs: map[string]Signature{"add": {Params: []ValueType{ValueTypeI64}, Results: []ValueType{ValueTypeI64}}}},
			want: []string{"add (imported by consumer) changes type from (i32,i32)->(i32) to (i64)->(i64)"}},
		{name: "type-no-longer-declared", sym: "add",
			v1:   &provider{funcs: []string{"add"}, sigs: map[string]Signature{"add": sigAdd}},
			v2:   &provider{funcs: []string{"add"}},
			want: []string{"changes type from (i32,i32)->(i32) to undeclared"}},
		{name: "no-longer-a-func", sym: "add",
			v1:   &provider{funcs: []string{"add"}},
			v2:   &provider{values: map[string]any{"add": 7}},
			want: []string{"add (imported by consumer) is not a function in the replacement"}},
		{name: "value-imported", sym: "answer",
			v1:   &provider{values: map[string]any{"answer": 42}},
			v2:   &provider{values: map[string]any{"answer": 42}},
			want: []string{"answer (imported by consumer) is not a function: its importers hold the old value"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := quietHost(t)
			tc.v1.version, tc.v2.version = 1, 2
			old := mustLoad(t, h, providerSrc(tc.v1))
			c := &importer{syms: []string{tc.sym}}
			mustLoad(t, h, src("consumer", c))
			_, err := h.Replace(deadline(t), "provider", providerSrc(tc.v2), nil, ReplaceOptions{Force: tc.force})
			var be *BusyError
			if !errors.As(err, &be) || !errors.Is(err, ErrBusy) || be.Op != "replace" || !slices.Equal(be.Symbols, []string{tc.sym}) || !slices.Equal(be.Holders, []string{"consumer"}) {
				t.Fatalf("replace: %v, want a *BusyError about %s", err, tc.sym)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not say %q", err, w)
				}
			}
			if !strings.HasPrefix(err.Error(), "replace provider: busy: ") {
				t.Fatalf("error %q", err)
			}
			if tc.v2.inits.Load() != 1 || tc.v2.exits.Load() != 1 {
				t.Fatalf("replacement: %d inits, %d exits, want 1 and 1", tc.v2.inits.Load(), tc.v2.exits.Load())
			}
			if cur, _ := h.Module("provider"); cur != old || old.State() != StateLive || tc.v1.exits.Load() != 0 {
				t.Fatal("the old instance is not the live provider any more")
			}
			if _, isFunc := c.got[tc.sym].(Func); isFunc {
				if v, err := c.call(tc.sym); err != nil || v != 1 {
					t.Fatalf("after the refusal: v%d %v", v, err)
				}
			}
			if got := old.Holders(); !slices.Equal(got, []string{"consumer"}) {
				t.Fatalf("holders %v", got)
			}
			if _, err := h.Shutdown(deadline(t)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestReplaceSameSignatures: declared signatures that are equal pass.
func TestReplaceSameSignatures(t *testing.T) {
	h := quietHost(t)
	mustLoad(t, h, providerSrc(&provider{version: 1, funcs: []string{"add"}, sigs: map[string]Signature{"add": sigAdd}}))
	c := &importer{syms: []string{"add"}}
	mustLoad(t, h, src("consumer", c))
	same := Signature{Params: []ValueType{ValueTypeI32, ValueTypeI32}, Results: []ValueType{ValueTypeI32}}
	if _, err := h.Replace(deadline(t), "provider", providerSrc(&provider{version: 2, funcs: []string{"add"}, sigs: map[string]Signature{"add": same}}), nil, ReplaceOptions{}); err != nil {
		t.Fatal(err)
	}
	if v, err := c.call("add"); err != nil || v != 2 {
		t.Fatalf("v%d %v", v, err)
	}
}

// TestReplaceDroppingSymbols: a replacement that drops symbols nobody
// imports is refused unless forced; forced, a Handle on a dropped symbol
// then finds nothing, one on a kept symbol the new instance.
func TestReplaceDroppingSymbols(t *testing.T) {
	h := quietHost(t)
	mustLoad(t, h, providerSrc(&provider{version: 1, funcs: []string{"add", "extra"}, values: map[string]any{"table": 1}}))
	extra, add := h.Handle("extra"), h.Handle("add")
	if _, err := extra.Call(context.Background(), make([]uint64, 1)); err != nil {
		t.Fatal(err)
	}
	v2 := func() *provider { return &provider{version: 2, funcs: []string{"add"}} }
	_, err := h.Replace(deadline(t), "provider", providerSrc(v2()), nil, ReplaceOptions{})
	var be *BusyError
	if !errors.As(err, &be) || !slices.Equal(be.Symbols, []string{"extra", "table"}) || !strings.Contains(err.Error(), "drops symbols that callers may hold: extra,table (force to drop them)") {
		t.Fatalf("replace dropping symbols: %v", err)
	}
	if _, err := extra.Call(context.Background(), make([]uint64, 1)); err != nil {
		t.Fatalf("after the refusal: %v", err)
	}
	if _, err := h.Replace(deadline(t), "provider", providerSrc(v2()), nil, ReplaceOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := extra.Call(context.Background(), make([]uint64, 1)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a dropped symbol: %v, want ErrNotFound", err)
	}
	if res, err := add.Call(context.Background(), make([]uint64, 1)); err != nil || res[0] != 2 {
		t.Fatalf("a kept symbol: %v %v", res, err)
	}
}

// TestUndoneReplaceMovesImportersBack: when the old Exit refuses, the
// importers are back on the old instance, and the undone one leaves with
// no reference.
func TestUndoneReplaceMovesImportersBack(t *testing.T) {
	h := quietHost(t)
	v1 := &provider{version: 1, funcs: []string{"add"}}
	v1.exit = func() (int, error) { return 1, nil }
	old := mustLoad(t, h, providerSrc(v1))
	c := &importer{syms: []string{"add"}}
	mustLoad(t, h, src("consumer", c))
	v2 := &provider{version: 2, funcs: []string{"add"}}
	live := make(chan *Instance, 2) // the replacement, then the old one again
	defer h.Subscribe(func(e Event) {
		if e.State == StateLive && e.Module == "provider" {
			live <- e.Instance
		}
	})()
	if _, err := h.Replace(deadline(t), "provider", providerSrc(v2), nil, ReplaceOptions{}); !errors.Is(err, ErrBusy) {
		t.Fatalf("replace: %v, want the old Exit's refusal", err)
	}
	m := waitFor(t, live, "the replacement live")
	if m == old {
		t.Fatal("the replacement never went live")
	}
	waitFor(t, m.Gone(), "the undone replacement gone")
	if v, err := c.call("add"); err != nil || v != 1 {
		t.Fatalf("after the undo: v%d %v", v, err)
	}
	if got := old.Holders(); !slices.Equal(got, []string{"consumer"}) {
		t.Fatalf("old instance's holders %v", got)
	}
	if n := m.Refs(); n != 0 {
		t.Fatalf("the undone instance holds %d references", n)
	}
	if n := old.Refs(); n != 1 {
		t.Fatalf("the old instance holds %d references, want 1 (the consumer's edge)", n)
	}
}

// TestImportDuringReplace: an import from the old instance while the
// replacement's Init runs is seen by the check and moves; one that comes
// after the swap's step, while the old instance drains, waits for the
// Replace to finish and then depends on the new instance; the
// replacement cannot import from the instance it replaces.
func TestImportDuringReplace(t *testing.T) {
	h := quietHost(t)
	old := mustLoad(t, h, providerSrc(&provider{version: 1, funcs: []string{"add"}}))
	inInit := newGate()
	v2 := &provider{version: 2, funcs: []string{"add"}}
	var selfImport error
	v2.init = func(k *Kernel) error {
		_, selfImport = k.Import(context.Background(), "add")
		inInit.park()
		return nil
	}
	// A reference held on the old instance keeps it draining after the
	// swap's step.
	held, err := h.Acquire(KindSymbol, "add")
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan *Instance, 1)
	h.hooks.swapWait = func(m *Instance) { waiting <- m }
	live := make(chan *Instance, 1)
	defer h.Subscribe(func(e Event) {
		if e.Module == "provider" && e.State == StateLive {
			live <- e.Instance
		}
	})()
	replaced := make(chan error, 1)
	go func() {
		_, err := h.Replace(deadline(t), "provider", providerSrc(v2), nil, ReplaceOptions{})
		replaced <- err
	}()
	inInit.reached(t)
	if !errors.Is(selfImport, ErrCycle) {
		t.Fatalf("the replacement importing from the instance it replaces: %v, want ErrCycle", selfImport)
	}
	// 1. During the replacement's Init: added, and checked.
	early := &importer{syms: []string{"add"}}
	mustLoad(t, h, src("early", early))
	inStart := newGate()
	v2.start = inStart.park
	inInit.release()
	// 2. Checked, not yet swapped (its Start runs): an import from the
	// old instance, which the check did not see, waits.
	inStart.reached(t)
	mid := &importer{syms: []string{"add"}}
	midLoaded := make(chan error, 1)
	go func() {
		_, err := h.Load(deadline(t), src("mid", mid), nil)
		midLoaded <- err
	}()
	if w := waitFor(t, waiting, "the import during Start to wait"); w != old {
		t.Fatalf("waited for %v", w)
	}
	inStart.release()
	m := waitFor(t, live, "the replacement live")
	// 3. After the step, the old one draining: the import waits.
	late := &importer{syms: []string{"add"}}
	loaded := make(chan error, 1)
	go func() {
		_, err := h.Load(deadline(t), src("late", late), nil)
		loaded <- err
	}()
	if w := waitFor(t, waiting, "the late import to wait"); w != m {
		t.Fatalf("waited for %v", w)
	}
	select {
	case err := <-loaded:
		t.Fatalf("the late import did not wait for the swap: %v", err)
	default:
	}
	held.Release()
	if err := waitFor(t, replaced, "Replace"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []chan error{midLoaded, loaded} {
		if err := waitFor(t, c, "the waiting loads"); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*importer{early, mid, late} {
		if v, err := c.call("add"); err != nil || v != 2 {
			t.Fatalf("v%d %v", v, err)
		}
	}
	if got := m.Holders(); !slices.Equal(got, []string{"early", "late", "mid"}) {
		t.Fatalf("holders %v", got)
	}
}

// TestReplaceRefusesADependencyCycle: a replacement that depends on a
// module importing from the instance it replaces would, once the importer
// moved to it, make the two hold each other for ever: refused.
func TestReplaceRefusesADependencyCycle(t *testing.T) {
	h := quietHost(t)
	old := mustLoad(t, h, providerSrc(&provider{version: 1, funcs: []string{"add"}}))
	mustLoad(t, h, src("consumer", &provider{testModule: testModule{init: func(k *Kernel) error {
		_, err := k.Import(context.Background(), "add")
		return err
	}}, funcs: []string{"mul"}}))
	v2 := &provider{version: 2, funcs: []string{"add"}}
	v2.init = func(k *Kernel) error {
		_, err := k.Import(context.Background(), "mul")
		return err
	}
	_, err := h.Replace(deadline(t), "provider", providerSrc(v2), nil, ReplaceOptions{})
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "it depends on consumer, which imports from it (a cycle)") {
		t.Fatalf("replace: %v", err)
	}
	if cur, _ := h.Module("provider"); cur != old {
		t.Fatal("the old instance is not the provider any more")
	}
}

// TestImportFromAHookDuringReplace: a hook that imports from a module
// being replaced, with its own context, fails at once with
// ErrInReadSection: waiting for the Replace would wait for a grace period,
// which waits for the hook.
func TestImportFromAHookDuringReplace(t *testing.T) {
	h := quietHost(t)
	mustLoad(t, h, providerSrc(&provider{version: 1, funcs: []string{"add"}}))
	hookErr := make(chan error, 1)
	mustLoad(t, h, src("listener", &testModule{init: func(k *Kernel) error {
		return k.Hook("ev", func(ctx context.Context, _ any) error {
			_, err := k.Import(ctx, "add")
			hookErr <- err
			return nil
		})
	}}))
	held, err := h.Acquire(KindSymbol, "add") // the old instance drains until released
	if err != nil {
		t.Fatal(err)
	}
	live := make(chan *Instance, 1)
	defer h.Subscribe(func(e Event) {
		if e.Module == "provider" && e.State == StateLive {
			live <- e.Instance
		}
	})()
	replaced := make(chan error, 1)
	go func() {
		_, err := h.Replace(deadline(t), "provider", providerSrc(&provider{version: 2, funcs: []string{"add"}}), nil, ReplaceOptions{})
		replaced <- err
	}()
	waitFor(t, live, "the replacement live")
	if err := h.CallHooks(context.Background(), "ev", nil); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(t, hookErr, "the hook"); !errors.Is(err, ErrInReadSection) {
		t.Fatalf("import from a hook during a replace: %v, want ErrInReadSection", err)
	}
	held.Release()
	if err := waitFor(t, replaced, "Replace"); err != nil {
		t.Fatal(err)
	}
}

// TestImportSaysWhyTheDemandLoadFailed: an import whose provider the
// resolver finds but cannot load fails with that reason (here its Init's
// error), not with "not found"; an unknown symbol is still ErrNotFound.
func TestImportSaysWhyTheDemandLoadFailed(t *testing.T) {
	boom := errors.New("boom")
	h := quietHost(t, WithResolver(mapResolver{
		"symbol:add": src("provider", &testModule{init: func(*Kernel) error { return boom }}),
	}))
	var addErr, nopeErr error
	mustLoad(t, h, src("consumer", &testModule{init: func(k *Kernel) error {
		_, addErr = k.Import(context.Background(), "add")
		_, nopeErr = k.Import(context.Background(), "nope")
		return nil
	}}))
	if !errors.Is(addErr, boom) || !errors.Is(addErr, ErrInit) || errors.Is(addErr, ErrNotFound) {
		t.Fatalf("import of a provider whose init fails: %v", addErr)
	}
	if !errors.Is(nopeErr, ErrNotFound) {
		t.Fatalf("import of an unknown symbol: %v", nopeErr)
	}
}
