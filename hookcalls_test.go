package raceless

// Lifecycle calls made from inside a hook call, that is from inside a read
// section of the host's grace-period domain (see "Lifecycle calls from
// hooks" in doc.go): every entry point either works or fails at once with
// ErrInReadSection, and afterwards every grace period of the host still
// ends.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// hookRig is a host with a module "hooker" whose hook "ev" runs the body
// set by run, inside the read section of a CallHooks.
type hookRig struct {
	h    *Host
	k    *Kernel // hooker's
	mu   sync.Mutex
	body func(ctx context.Context) error
	err  error
}

func newHookRig(t *testing.T, opts ...Option) *hookRig {
	t.Helper()
	r := &hookRig{h: quietHost(t, opts...)}
	mustLoad(t, r.h, src("hooker", &testModule{init: func(k *Kernel) error {
		r.k = k
		return k.Hook("ev", func(ctx context.Context, _ any) error {
			r.mu.Lock()
			body := r.body
			r.mu.Unlock()
			err := body(ctx)
			r.mu.Lock()
			r.err = err
			r.mu.Unlock()
			return nil
		})
	}}))
	return r
}

// run calls body from inside the hook (through a Caller's CallHooks when
// viaCaller)
// and returns its error. The hook call has no deadline of its own: a
// lifecycle call that waits for the grace period of its own read section
// hangs, and the test fails here, loudly, after 10 s.
func (r *hookRig) run(t *testing.T, viaCaller bool, body func(ctx context.Context) error) error {
	t.Helper()
	r.mu.Lock()
	r.body, r.err = body, nil
	r.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // unblocks a hung call once the test has failed
	done := make(chan error, 1)
	go func() {
		if viaCaller {
			c := r.h.NewCaller()
			defer c.Close()
			done <- c.CallHooks(ctx, "ev", nil)
			return
		}
		done <- r.h.CallHooks(ctx, "ev", nil)
	}()
	if err := waitFor(t, done, "the hook call (a lifecycle call inside it waits for its own read section?)"); err != nil {
		t.Fatalf("CallHooks: %v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// usable checks that the host's grace periods still end and that it
// shuts down cleanly.
func (r *hookRig) usable(t *testing.T) {
	t.Helper()
	if err := r.h.Synchronize(deadline(t)); err != nil {
		t.Fatalf("Synchronize after the hook: %v", err)
	}
	if _, err := r.h.Shutdown(deadline(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := len(r.h.Modules()); n != 0 {
		t.Fatalf("%d modules left after Shutdown", n)
	}
}

func failingSrc(name string) Source {
	return src(name, &testModule{init: func(k *Kernel) error {
		if err := k.Export(name+".sym", 1); err != nil {
			return err
		}
		return errors.New("no device")
	}})
}

// TestLifecycleCallsFromHook calls every lifecycle entry point from inside
// a hook call.
func TestLifecycleCallsFromHook(t *testing.T) {
	resolver := mapResolver{
		"dyn":           src("dyn", &testModule{}),
		"victim":        src("victim", &testModule{}),
		"dynbad":        failingSrc("dynbad"),
		"symbol:dynsym": src("dynsym", &testModule{init: func(k *Kernel) error { return k.Export("dynsym", 7) }}),
	}
	// expectGone waits for the instance of name that a hook left going.
	goneLater := func(t *testing.T, m *Instance) {
		t.Helper()
		if m == nil {
			t.Fatal("no instance recorded")
		}
		waitFor(t, m.Gone(), "the failed instance to be gone")
	}
	// inSection checks a refusal made inside the section.
	inSection := func(t *testing.T, err error) {
		t.Helper()
		if !errors.Is(err, ErrInReadSection) {
			t.Fatalf("got %v, want ErrInReadSection", err)
		}
	}
	// failedLoad is a load whose Init fails, made from the hook.
	failedLoad := func(name string, load func(ctx context.Context, r *hookRig) error) func(t *testing.T, r *hookRig) {
		return func(t *testing.T, r *hookRig) {
			var failed *Instance
			err := r.run(t, false, func(ctx context.Context) error {
				err := load(ctx, r)
				failed, _ = r.h.Module(name) // going: its teardown waits for this hook
				return err
			})
			if !errors.Is(err, ErrInit) {
				t.Fatalf("failing load from a hook: %v, want ErrInit", err)
			}
			goneLater(t, failed)
			if _, err := r.h.Acquire(KindSymbol, name+".sym"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("symbol of the failed module: %v", err)
			}
			// The name is free again, and unloads, replaces and grace
			// periods (all waiting on the domain) work.
			mustLoad(t, r.h, src(name, &testModule{init: func(k *Kernel) error { return k.Export(name+".sym", 2) }}))
			if _, err := r.h.Replace(deadline(t), name, Native(Info{Name: name}, func() Module { return &testModule{} }), nil, ReplaceOptions{Force: true}); err != nil {
				t.Fatalf("replace after the failed load: %v", err)
			}
			if err := r.h.Unload(deadline(t), name, UnloadOptions{}); err != nil {
				t.Fatalf("unload after the failed load: %v", err)
			}
		}
	}
	cases := []struct {
		name string
		test func(t *testing.T, r *hookRig)
	}{
		{"Host.Load/init-fails", failedLoad("bad", func(ctx context.Context, r *hookRig) error {
			_, err := r.h.Load(ctx, failingSrc("bad"), nil)
			return err
		})},
		{"Host.Request/init-fails", failedLoad("dynbad", func(ctx context.Context, r *hookRig) error {
			_, err := r.h.Request(ctx, "dynbad")
			return err
		})},
		{"Kernel.Load/init-fails", failedLoad("kbad", func(ctx context.Context, r *hookRig) error {
			_, err := r.k.Load(ctx, failingSrc("kbad"), nil)
			return err
		})},
		{"Kernel.Request/init-fails", failedLoad("dynbad", func(ctx context.Context, r *hookRig) error {
			_, err := r.k.Request(ctx, "dynbad")
			return err
		})},
		{"Host.Load/ok", func(t *testing.T, r *hookRig) {
			err := r.run(t, false, func(ctx context.Context) error {
				_, err := r.h.Load(ctx, src("extra", &testModule{}), nil)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if m, ok := r.h.Module("extra"); !ok || m.State() != StateLive {
				t.Fatal("module loaded from a hook is not live")
			}
		}},
		{"Host.Request/ok", func(t *testing.T, r *hookRig) {
			if err := r.run(t, false, func(ctx context.Context) error { _, err := r.h.Request(ctx, "dyn"); return err }); err != nil {
				t.Fatal(err)
			}
		}},
		{"Kernel.Request/ok", func(t *testing.T, r *hookRig) {
			if err := r.run(t, false, func(ctx context.Context) error { _, err := r.k.Request(ctx, "dyn"); return err }); err != nil {
				t.Fatal(err)
			}
		}},
		{"Kernel.Import/demand-load", func(t *testing.T, r *hookRig) {
			var v any
			err := r.run(t, false, func(ctx context.Context) (err error) { v, err = r.k.Import(ctx, "dynsym"); return err })
			if err != nil || v != 7 {
				t.Fatalf("import from a hook: %v %v", v, err)
			}
		}},
		{"Host.Load/name-going", func(t *testing.T, r *hookRig) {
			// victim's unload is parked in its Exit: the name is going.
			exiting := newGate()
			mustLoad(t, r.h, src("victim", &testModule{exit: func() (int, error) { exiting.park(); return 0, nil }}))
			unloaded := make(chan error, 1)
			go func() { unloaded <- r.h.Unload(deadline(t), "victim", UnloadOptions{}) }()
			exiting.reached(t)
			for _, load := range []func(ctx context.Context) error{
				func(ctx context.Context) error {
					_, err := r.h.Load(ctx, src("victim", &testModule{}), nil)
					return err
				},
				func(ctx context.Context) error {
					_, err := r.k.Load(ctx, src("victim", &testModule{}), nil)
					return err
				},
				func(ctx context.Context) error { _, err := r.h.Request(ctx, "victim"); return err },
				func(ctx context.Context) error { _, err := r.k.Request(ctx, "victim"); return err },
			} {
				inSection(t, r.run(t, false, load))
			}
			exiting.release()
			if err := waitFor(t, unloaded, "unload"); err != nil {
				t.Fatal(err)
			}
			// A refusal from a hook is no failed load: no backoff.
			if _, err := r.h.Request(deadline(t), "victim"); err != nil {
				t.Fatalf("request after the refusals: %v", err)
			}
		}},
		{"Host.Unload", func(t *testing.T, r *hookRig) {
			m := mustLoad(t, r.h, src("target", &testModule{}))
			inSection(t, r.run(t, false, func(ctx context.Context) error { return r.h.Unload(ctx, "target", UnloadOptions{}) }))
			inSection(t, r.run(t, false, func(ctx context.Context) error { return r.h.Unload(ctx, "target", UnloadOptions{Force: true}) }))
			// A context derived from the hook's is the hook's too.
			inSection(t, r.run(t, false, func(ctx context.Context) error {
				dctx, cancel := context.WithTimeout(ctx, time.Hour)
				defer cancel()
				return r.h.Unload(dctx, "target", UnloadOptions{Wait: true})
			}))
			if m.State() != StateLive || m.Refs() != 0 {
				t.Fatalf("after refused unloads: %s with %d references", m.State(), m.Refs())
			}
		}},
		{"Caller/Host.Unload", func(t *testing.T, r *hookRig) {
			mustLoad(t, r.h, src("target", &testModule{}))
			inSection(t, r.run(t, true, func(ctx context.Context) error { return r.h.Unload(ctx, "target", UnloadOptions{}) }))
		}},
		{"Host.Replace", func(t *testing.T, r *hookRig) {
			old := mustLoad(t, r.h, src("target", &testModule{}))
			fresh := &testModule{}
			inSection(t, r.run(t, false, func(ctx context.Context) error {
				_, err := r.h.Replace(ctx, "target", src("target", fresh), nil, ReplaceOptions{})
				return err
			}))
			if cur, _ := r.h.Module("target"); cur != old || old.State() != StateLive || fresh.inits.Load() != 0 {
				t.Fatal("a refused Replace changed something")
			}
		}},
		{"Host.Synchronize", func(t *testing.T, r *hookRig) {
			inSection(t, r.run(t, false, func(ctx context.Context) error { return r.h.Synchronize(ctx) }))
		}},
		{"Host.Shutdown", func(t *testing.T, r *hookRig) {
			inSection(t, r.run(t, false, func(ctx context.Context) error { _, err := r.h.Shutdown(ctx); return err }))
			if _, ok := r.h.Module("hooker"); !ok {
				t.Fatal("a refused Shutdown unloaded modules")
			}
		}},
		{"Host.Autoclean", func(t *testing.T, r *hookRig) {
			inSection(t, r.run(t, false, func(ctx context.Context) error { _, err := r.h.Autoclean(ctx); return err }))
		}},
		{"Kernel-and-Instance-methods", func(t *testing.T, r *hookRig) {
			other := mustLoad(t, r.h, src("other", &testModule{init: func(k *Kernel) error { return k.Export("o", 1) }}))
			err := r.run(t, false, func(ctx context.Context) error {
				k := r.k
				if !k.Get() {
					return errors.New("Kernel.Get failed")
				}
				k.Put()
				k.Taint(TaintWarn, "from a hook")
				_ = k.Name()
				_ = k.Params()
				_ = k.Instance().Holders()
				if !other.tryGet() {
					return errors.New("tryGet failed")
				}
				other.put()
				b, err := r.h.Acquire(KindSymbol, "o")
				if err != nil {
					return err
				}
				owner := b.Owner()
				b.Release()
				if owner != other {
					return fmt.Errorf("o is owned by %v, want %v", owner, other)
				}
				_ = other.Size()
				_ = other.Deps()
				_ = other.Refs()
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newHookRig(t, WithResolver(resolver))
			c.test(t, r)
			r.usable(t)
		})
	}
}

// TestHookLoadFailingInitKeepsGracePeriods is issue 13's reproduction: a
// hook loads a module whose Init fails. The failed teardown waits for a
// grace period, which waits for the hook: it must not do so in the hook's
// goroutine, and every later grace period (Synchronize, Unload, Replace)
// must end.
func TestHookLoadFailingInitKeepsGracePeriods(t *testing.T) {
	r := newHookRig(t)
	var rec recorder
	defer r.h.Subscribe(rec.record)()
	err := r.run(t, false, func(ctx context.Context) error {
		_, err := r.h.Load(ctx, failingSrc("bad"), nil)
		return err
	})
	if !errors.Is(err, ErrInit) {
		t.Fatalf("load: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- r.h.Synchronize(context.Background()) }()
	if err := waitFor(t, done, "a grace period after the hook returned"); err != nil {
		t.Fatal(err)
	}
	mustLoad(t, r.h, src("other", &testModule{}))
	if _, err := r.h.Replace(deadline(t), "other", Native(Info{Name: "other"}, func() Module { return &testModule{} }), nil, ReplaceOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := r.h.Unload(deadline(t), "other", UnloadOptions{}); err != nil {
		t.Fatal(err)
	}
	r.usable(t)
	want := []string{"bad:coming", "bad:going", "bad:gone"}
	var got []string
	for _, e := range rec.get() {
		if len(e) > 4 && e[:4] == "bad:" {
			got = append(got, e)
		}
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("events of the failed module: %v, want %v", got, want)
	}
}

// TestHookCallWithoutContextAllocatesNothing: marking the read section costs
// no allocation when the caller has no context of its own (the hook path is
// a fast path), and the hook still gets a marked context.
func TestHookCallWithoutContextAllocatesNothing(t *testing.T) {
	h := quietHost(t)
	marked := false
	mustLoad(t, h, src("hooker", &testModule{init: func(k *Kernel) error {
		return k.Hook("ev", func(ctx context.Context, _ any) error {
			marked = h.inReadSection(ctx)
			return nil
		})
	}}))
	c := h.NewCaller()
	defer c.Close()
	allocs := testing.AllocsPerRun(100, func() {
		if err := c.CallHooks(context.Background(), "ev", nil); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Caller.CallHooks(context.Background()) allocates %.1f times a call, want 0", allocs)
	}
	if !marked {
		t.Error("the hook's context is not marked as the host's read section")
	}
}
