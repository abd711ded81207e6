package raceless

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
)

// panicMod panics in the entry point named by where (once, unless
// always); every entry point is implemented.
type panicMod struct {
	where  string
	always bool
	fired  atomic.Bool
	refuse atomic.Int32 // Exit refuses this many times
	self   *Instance
	exits  atomic.Int32
	stops  atomic.Int32
}

func (p *panicMod) boom(at string) {
	if p.where == at && (p.always || !p.fired.Swap(true)) {
		panic("boom in " + at)
	}
}

func (p *panicMod) Init(k *Kernel) error {
	p.self = k.Instance()
	p.boom("init")
	err := errors.Join(
		k.Hook("ev", func(context.Context, any) error { p.boom("hook"); return nil }),
		k.Export(k.Name()+".f", Func(func(context.Context, []uint64) ([]uint64, error) { p.boom("symbol"); return nil, nil })),
	)
	return err
}
func (p *panicMod) Start() { p.boom("start") }
func (p *panicMod) Stop()  { p.stops.Add(1); p.boom("stop") }
func (p *panicMod) Exit() (int, error) {
	p.exits.Add(1)
	p.boom("exit")
	if p.refuse.Load() > 0 {
		p.refuse.Add(-1)
		return 1, nil
	}
	return 0, nil
}
func (p *panicMod) Size() int64 { p.boom("size"); return 42 }

// ctxPanicMod is panicMod with ExitContext.
type ctxPanicMod struct{ *panicMod }

func (p ctxPanicMod) ExitContext(context.Context) (int, error) {
	p.exits.Add(1)
	p.boom("exitcontext")
	return 0, nil
}

// legacyPanic is a LegacyModule whose Cleanup panics.
type legacyPanic struct{ self **Instance }

func (l legacyPanic) Init(k *Kernel) error { *l.self = k.Instance(); return nil }
func (legacyPanic) Cleanup()               { panic("boom in cleanup") }

// TestPanicInEveryEntryPoint panics in each entry point of a module and
// checks that the panic is contained (the module tainted, the operation
// failing or finishing as documented) and that the host stays usable: the
// name loads again, grace periods end, Shutdown finishes.
func TestPanicInEveryEntryPoint(t *testing.T) {
	type run func(t *testing.T, h *Host, ctx context.Context) (tainted *Instance)
	loadOK := func(t *testing.T, h *Host, mod Module) *Instance {
		t.Helper()
		return mustLoad(t, h, Native(Info{Name: "p"}, func() Module { return mod }))
	}
	unloadOK := func(t *testing.T, h *Host, m *Instance) {
		t.Helper()
		if err := h.Unload(deadline(t), "p", UnloadOptions{}); err != nil {
			t.Fatalf("unload: %v", err)
		}
		if m.State() != StateGone {
			t.Fatalf("state %s after unload, want gone", m.State())
		}
	}
	wantInitErr := func(t *testing.T, err error, what string) {
		t.Helper()
		if !errors.Is(err, ErrInit) || !strings.Contains(err.Error(), "p") || !strings.Contains(err.Error(), "boom in "+what) {
			t.Fatalf("load: %v, want ErrInit naming the module and the panic", err)
		}
	}
	cases := map[string]run{
		"constructor": func(t *testing.T, h *Host, ctx context.Context) *Instance {
			var self *Instance
			defer h.Subscribe(func(e Event) {
				if e.State == StateComing {
					self = e.Instance
				}
			})()
			_, err := h.Load(ctx, Native(Info{Name: "p"}, func() Module { panic("boom in constructor") }), nil)
			if err == nil || !strings.Contains(err.Error(), "boom in constructor") {
				t.Fatalf("load: %v", err)
			}
			return self
		},
		"init": func(t *testing.T, h *Host, ctx context.Context) *Instance {
			p := &panicMod{where: "init"}
			_, err := h.Load(ctx, Native(Info{Name: "p"}, func() Module { return p }), nil)
			wantInitErr(t, err, "init")
			return p.self
		},
		"start": func(t *testing.T, h *Host, ctx context.Context) *Instance {
			p := &panicMod{where: "start"}
			_, err := h.Load(ctx, Native(Info{Name: "p"}, func() Module { return p }), nil)
			wantInitErr(t, err, "start")
			if p.self.State() != StateGone || p.exits.Load() != 1 || p.stops.Load() != 0 {
				t.Fatalf("after a panicking Start: %s, %d exits, %d stops; want gone, 1, 0", p.self.State(), p.exits.Load(), p.stops.Load())
			}
			if _, err := h.Acquire(KindSymbol, "p.f"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("symbol of a module whose Start panicked: %v", err)
			}
			return p.self
		},
		"restart": func(t *testing.T, h *Host, ctx context.Context) *Instance {
			p := &panicMod{where: "restart"}
			m := loadOK(t, h, &restartOnly{p})
			p.refuse.Store(1)
			if err := h.Unload(ctx, "p", UnloadOptions{}); !errors.Is(err, ErrBusy) {
				t.Fatalf("unload with a refusing Exit: %v", err)
			}
			if m.State() != StateLive {
				t.Fatalf("after a refused unload whose restart panicked: %s, want live", m.State())
			}
			unloadOK(t, h, m)
			return m
		},
		"stop": func(t *testing.T, h *Host, ctx context.Context) *Instance {
			m := loadOK(t, h, &panicMod{where: "stop"})
			unloadOK(t, h, m)
			return m
		},
		"exit": func(t *testing.T, h *Host, ctx context.Context) *Instance {
			m := loadOK(t, h, &panicMod{where: "exit"})
			unloadOK(t, h, m)
			return m
		},
		"exitcontext": func(t *testing.T, h *Host, ctx context.Context) *Instance {
			m := loadOK(t, h, ctxPanicMod{&panicMod{where: "exitcontext"}})
			unloadOK(t, h, m)
			return m
		},
		"legacy-cleanup": func(t *testing.T, h *Host, ctx context.Context) *Instance {
			var self *Instance
			m := loadOK(t, h, Legacy(legacyPanic{&self}))
			unloadOK(t, h, m)
			return m
		},
		"size": func(t *testing.T, h *Host, ctx context.Context) *Instance {
			m := loadOK(t, h, &panicMod{where: "size"})
			if n := m.Size(); n != 0 {
				t.Fatalf("Size of a panicking Sizer = %d, want 0", n)
			}
			if n := m.Size(); n != 42 || m.Refs() != 0 {
				t.Fatalf("Size again = %d with %d references, want 42 and 0", n, m.Refs())
			}
			unloadOK(t, h, m)
			return m
		},
		"hook": func(t *testing.T, h *Host, ctx context.Context) *Instance {
			m := loadOK(t, h, &panicMod{where: "hook", always: true})
			if err := h.CallHooks(ctx, "ev", nil); err == nil || !strings.Contains(err.Error(), "boom in hook") || !strings.Contains(err.Error(), "p") {
				t.Fatalf("CallHooks: %v", err)
			}
			c := h.NewCaller()
			for range 2 { // registering its reader, then registered
				if err := c.CallHooks(ctx, "ev", nil); err == nil || !strings.Contains(err.Error(), "boom in hook") {
					t.Fatalf("Caller.CallHooks: %v, want the hook's panic", err)
				}
			}
			if c.inHooks {
				t.Fatal("Caller still marked in CallHooks after a panicking hook")
			}
			c.Close()
			unloadOK(t, h, m)
			return m
		},
		"symbol-handle": func(t *testing.T, h *Host, ctx context.Context) *Instance {
			m := loadOK(t, h, &panicMod{where: "symbol", always: true})
			hd := h.Handle("p.f")
			for range 2 { // resolving, then cached
				if _, err := hd.Call(ctx, nil); err == nil || !strings.Contains(err.Error(), "boom in symbol") || !strings.Contains(err.Error(), "p") {
					t.Fatalf("Handle.Call: %v", err)
				}
			}
			if m.Refs() != 0 {
				t.Fatalf("%d references after panicking calls", m.Refs())
			}
			unloadOK(t, h, m)
			return m
		},
		"symbol-caller": func(t *testing.T, h *Host, ctx context.Context) *Instance {
			m := loadOK(t, h, &panicMod{where: "symbol", always: true})
			hd := h.Handle("p.f")
			c := h.NewCaller()
			defer c.Close()
			for range 2 { // shared path resolving, then the Word's
				if _, err := c.Call(ctx, hd, nil); err == nil || !strings.Contains(err.Error(), "boom in symbol") {
					t.Fatalf("Caller.Call: %v", err)
				}
			}
			if m.Refs() != 0 || c.regs.hold.Holding() {
				t.Fatalf("%d references after panicking calls (holding %v)", m.Refs(), c.regs.hold.Holding())
			}
			unloadOK(t, h, m)
			return m
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			h := quietHost(t)
			ctx := deadline(t)
			m := c(t, h, ctx)
			if m == nil || len(m.Taints()) == 0 || !strings.Contains(strings.Join(m.Taints(), ";"), "panic") {
				t.Fatalf("module not tainted by the panic")
			}
			if m.State() != StateGone {
				waitFor(t, m.Gone(), "the instance to be gone")
			}
			// The host stays usable.
			if err := h.Synchronize(ctx); err != nil {
				t.Fatalf("Synchronize: %v", err)
			}
			again := loadOK(t, h, &panicMod{})
			if err := h.CallHooks(ctx, "ev", nil); err != nil {
				t.Fatalf("hooks of the reloaded module: %v", err)
			}
			unloadOK(t, h, again)
			if _, err := h.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// restartOnly panics in Start only when it runs again after a refused
// Exit, not on the first load.
type restartOnly struct{ *panicMod }

func (r *restartOnly) Start() {
	if r.exits.Load() > 0 {
		r.boom("restart")
	}
}
