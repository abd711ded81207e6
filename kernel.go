package raceless

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
)

// Kernel is a module's interface to its host, handed to Init. It stays valid
// for the instance's lifetime; registrations are accepted only while Init
// runs (they are staged, and published when the module goes live).
//
// Its methods are safe for concurrent use.
type Kernel struct {
	inst *Instance
	// log is the module's logger, made on the first Logger call: most
	// modules never log, and a logger with an attribute costs five
	// allocations, a third of a load's own.
	log     atomic.Pointer[slog.Logger]
	initing atomic.Bool // true while Init runs: registrations accepted
}

// Name returns the module's name.
func (k *Kernel) Name() string { return k.inst.name }

// Instance returns the host's record of this module.
func (k *Kernel) Instance() *Instance { return k.inst }

// Params returns the module's resolved parameters (validated against its
// Info, defaults filled in). The map must not be modified.
func (k *Kernel) Params() map[string]string { return k.inst.params }

// Logger returns a logger whose records carry the module's name.
func (k *Kernel) Logger() *slog.Logger {
	if l := k.log.Load(); l != nil {
		return l
	}
	k.log.CompareAndSwap(nil, k.inst.host.log.With("module", k.inst.name))
	return k.log.Load()
}

// Export stages a symbol: reserved now (a name another module holds fails
// with ErrExists), visible to Host.Acquire and Kernel.Import once the module
// is live. A value that is a Func (or a plain func of its signature) is
// callable through Handle.Call and Caller.Call, and from wasm modules.
func (k *Kernel) Export(name string, value any) error {
	return k.Register(KindSymbol, name, value)
}

// Register stages a registration of any kind (symbols, filesystem types,
// routes) with the same rules as Export, after the host's checks of its
// kind (Host.CheckRegistrations).
func (k *Kernel) Register(kind Kind, name string, value any) error {
	if name == "" || value == nil {
		return modErr("register", k.inst.name, fmt.Errorf("%s with empty name or nil value: %w", kind, ErrInvalid))
	}
	fn, recovering := asFunc(value)
	if recovering {
		value = fn // published as what it is to its callers: a Func
	}
	return k.stage(&registration{key: regKey{kind, name}, value: value, fn: fn, recovering: recovering, refs: k.inst.refs, owner: k.inst})
}

// Hook stages a subscription of fn to the named event chain. Hooks are
// called by Host.CallHooks inside a read section, without a reference;
// unloading unpublishes them and waits a grace period for calls in flight.
func (k *Kernel) Hook(event string, fn HookFunc) error {
	if event == "" || fn == nil {
		return modErr("hook", k.inst.name, fmt.Errorf("empty event or nil hook: %w", ErrInvalid))
	}
	return k.stage(&registration{key: regKey{"hook", event}, value: fn, hook: fn, owner: k.inst})
}

func (k *Kernel) stage(reg *registration) error {
	m := k.inst
	m.regMu.Lock()
	defer m.regMu.Unlock()
	if !k.initing.Load() {
		return modErr("register", m.name, fmt.Errorf("%s %q: registrations are accepted only during Init: %w", reg.key.kind, reg.key.name, ErrInvalid))
	}
	if reg.hook == nil {
		if err := m.host.check(m, reg); err != nil {
			return modErr("register", m.name, err)
		}
	}
	if m.host.hooks.beforeReserve != nil {
		m.host.hooks.beforeReserve(m, reg.key.name)
	}
	if err := m.host.reg.reserve(reg); err != nil {
		return modErr("register", m.name, err)
	}
	m.regs = append(m.regs, reg)
	return nil
}

// Import resolves a symbol exported by another live module and records a
// dependency on it: the exporter then lists this module among its holders
// and cannot be unloaded before it. The dependency (and its reference) is
// released when this module is gone, so the value may be kept until then.
//
// A function symbol comes as a Func that follows its exporter across a hot
// swap (Host.Replace moves importers to the replacement in the swap's
// step): each call holds a reference on the exporter for its length, as a
// Handle's does, and a panic in it taints the exporter and is returned as
// an error. Any other value is the exporter's own, which is why Replace
// refuses to swap a module whose non-function symbols are imported. While
// the exporter is being replaced, Import waits for the swap to finish
// (honouring ctx).
//
// An unknown symbol is demand-loaded through the host's resolver as
// "symbol:NAME" when one is configured.
func (k *Kernel) Import(ctx context.Context, name string) (any, error) {
	h := k.inst.host
	for {
		reg, err := h.acquire(KindSymbol, name)
		if err != nil && isNotFound(err) && h.resolver != nil {
			_, rerr := h.request(ctx, "symbol:"+name, k.inst)
			if rerr == nil {
				reg, err = h.acquire(KindSymbol, name)
			} else if !isNotFound(rerr) {
				// The demand load found a module and failed it (its
				// init, a rejected signature): that is the reason.
				err = rerr
			}
		}
		if err != nil {
			return nil, modErr("import", k.inst.name, err)
		}
		// acquire took a reference on the owner, dropped here: the
		// dependency edge takes its own.
		owner := reg.owner
		if owner != k.inst {
			err = h.addDep(k.inst, owner, name)
		}
		owner.put()
		if again, err := h.awaitSwap(ctx, err); again {
			continue
		} else if err != nil {
			return nil, modErr("import", k.inst.name, fmt.Errorf("%s: %w", name, err))
		}
		if reg.fn == nil || owner == k.inst {
			return reg.value, nil
		}
		hd := &Handle{h: h, name: name}
		hd.reg.Store(reg)
		return Func(hd.Call), nil
	}
}

// Load loads another module from this module's Init (or later). Loading a
// module whose Init is waiting, directly or through others, for this one is
// ErrCycle, never a hang.
func (k *Kernel) Load(ctx context.Context, src Source, params map[string]string) (*Instance, error) {
	return k.inst.host.load(ctx, src, params, loadOpts{waiter: k.inst})
}

// Request demand-loads a module by name or alias through the host's
// resolver (request_module).
func (k *Kernel) Request(ctx context.Context, nameOrAlias string) (*Instance, error) {
	return k.inst.host.request(ctx, nameOrAlias, k.inst)
}

// Get takes a reference on the module itself and reports whether it did.
// (__module_get: a module that hands work to a goroutine of its own pins
// itself for it.) Unlike a lookup it succeeds while the module is coming or
// going too; on a gone module it fails, taking nothing. Such references count
// like any other: one taken before an unload's final count (or before a
// failed Init's teardown waits for the module's own references) holds it
// until dropped with Put.
func (k *Kernel) Get() bool {
	m := k.inst
	if m.State() == StateGone {
		return false
	}
	m.refs.Get()
	if m.State() == StateGone {
		// It went gone meanwhile: take nothing.
		m.put()
		return false
	}
	return true
}

// Put drops a reference taken by Get.
func (k *Kernel) Put() { k.inst.put() }

// Taint marks the module as tainted with flag, saying why (see
// Instance.Taint).
func (k *Kernel) Taint(flag TaintFlag, reason string) { k.inst.Taint(flag, reason) }
