package raceless

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// TestNameTableAgainstAMap runs random adds and removes against a Go map,
// through growth, shrinking and deleted cells; a reader probing while the
// writer works never misses a name that stays in the table throughout.
func TestNameTableAgainstAMap(t *testing.T) {
	tab := newNameTable()
	model := map[string]*nameSlot{}
	// Names 0..9 stay in the table the whole time: the reader checks them.
	for i := range 10 {
		n := fmt.Sprintf("stay%d", i)
		model[n] = tab.slot(n)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var missed atomic.Value
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			for i := range 10 {
				if n := fmt.Sprintf("stay%d", i); tab.find(n) == nil {
					missed.Store(n)
				}
			}
		}
	}()
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 20000 {
		n := fmt.Sprintf("k%d", rng.IntN(3000))
		if s, ok := model[n]; ok && rng.IntN(2) == 0 {
			tab.remove(s)
			delete(model, n)
		} else {
			s := tab.slot(n)
			if ok && s != model[n] {
				t.Fatalf("slot(%q) made a second slot", n)
			}
			model[n] = s
		}
		if round%1000 == 0 || round > 19900 {
			for n, s := range model {
				if tab.find(n) != s {
					t.Fatalf("round %d: find(%q) lost its slot", round, n)
				}
			}
			if tab.live != len(model) {
				t.Fatalf("round %d: %d live, model %d", round, tab.live, len(model))
			}
		}
	}
	// Empty it but for the stayers: it shrinks.
	for n, s := range model {
		if len(n) < 4 || n[:4] != "stay" {
			tab.remove(s)
			delete(model, n)
		}
	}
	stop.Store(true)
	wg.Wait()
	if n, _ := missed.Load().(string); n != "" {
		t.Fatalf("a concurrent probe missed %q", n)
	}
	if size := len(tab.cells.Load().cells); size > 64 {
		t.Fatalf("%d cells for %d names: the table did not shrink", size, tab.live)
	}
	count := 0
	tab.all(func(*nameSlot) { count++ })
	if count != 10 {
		t.Fatalf("all visits %d slots, want 10", count)
	}
}

// symReg is a symbol registration for registry-level tests, given its
// name's slot as a reservation would (these tests do without owners).
func symReg(r *registry, name string) *registration {
	r.mu.Lock()
	defer r.mu.Unlock()
	reg := &registration{key: regKey{KindSymbol, name}, value: name}
	reg.slot = r.tableFor(KindSymbol).slot(name)
	if reg.slot.reserved == nil {
		reg.slot.reserved = reg
	}
	return reg
}

// TestRegistryAlwaysOneVisible drives the registry through the sequences
// a module lineage goes through (a refused unload; then, while readers look
// the shared name up, hot swaps, their undoing, a second swap before the
// undone instance is dropped, drops): the name is never missing, and a
// name only one generation has is visible exactly with it. At the end
// every slot is gone.
func TestRegistryAlwaysOneVisible(t *testing.T) {
	r := newRegistry()
	gen := func(tag string, extra bool) []*registration {
		regs := []*registration{symReg(r, "x")}
		regs[0].value = tag
		if extra {
			regs = append(regs, symReg(r, "only-"+tag))
		}
		return regs
	}
	// A refused unload hides the module, then shows it again.
	a := gen("a", false)
	r.publish(a)
	r.unpublish(a)
	if r.lookup(KindSymbol, "x") != nil {
		t.Fatal("x visible while unpublished")
	}
	r.publish(a)
	if r.lookup(KindSymbol, "x") != a[0] {
		t.Fatal("x hidden after republish")
	}
	var stop atomic.Bool
	var bad atomic.Value
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if r.lookup(KindSymbol, "x") == nil {
					bad.Store("x not visible")
				}
			}
		}()
	}
	for i := range 2000 {
		b := gen(fmt.Sprint("b", i), true)
		r.swap(a, b) // a hot swap
		if got := r.lookup(KindSymbol, "x"); got != b[0] {
			t.Fatalf("after the swap: %v", got)
		}
		if r.lookup(KindSymbol, b[1].key.name) == nil {
			t.Fatal("the replacement's own name is not visible")
		}
		r.swap(b, a) // undone
		if r.lookup(KindSymbol, b[1].key.name) != nil {
			t.Fatal("the undone replacement's own name is still visible")
		}
		c := gen(fmt.Sprint("c", i), false)
		if i%2 == 0 {
			r.swap(a, c) // a second swap before b is dropped
			r.drop(b)
			r.drop(a)
			a = c
		} else {
			r.drop(b)
		}
	}
	stop.Store(true)
	wg.Wait()
	if msg, _ := bad.Load().(string); msg != "" {
		t.Fatal(msg)
	}
	r.unpublish(a)
	r.drop(a)
	if tab := r.table(KindSymbol); tab.live != 0 {
		n := 0
		tab.all(func(s *nameSlot) { n++; t.Logf("left: %q", s.name) })
		t.Fatalf("%d slots left after every registration was dropped", tab.live)
	}
}

// TestHookListOneMoment: while a module's hook is swapped for its
// replacement's and back, a reader of the event's list gets exactly one of
// the two every time (with a second module's hook beside them).
func TestHookListOneMoment(t *testing.T) {
	r := newRegistry()
	hook := func(tag string) []*registration {
		return []*registration{{key: regKey{"hook", "ev"}, value: tag, hook: func(context.Context, any) error { return nil }}}
	}
	other := hook("other")
	r.publish(other)
	a := hook("a")
	r.publish(a)
	var stop atomic.Bool
	var bad atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var buf [8]*registration
		for !stop.Load() {
			if list := r.hookList("ev", buf[:0]); len(list) != 2 {
				bad.Store(fmt.Sprintf("%d hooks visible, want 2", len(list)))
			}
		}
	}()
	for i := range 3000 {
		b := hook(fmt.Sprint("b", i))
		r.swap(a, b)
		if i%2 == 0 {
			r.swap(b, a) // undone
			r.drop(b)
		} else {
			r.drop(a)
			a = b
		}
	}
	stop.Store(true)
	wg.Wait()
	if msg, _ := bad.Load().(string); msg != "" {
		t.Fatal(msg)
	}
	if s := r.hooks.find("ev"); s == nil || len(*s.hooks.Load()) != 2 {
		t.Fatal("dropped hooks left in the list")
	}
}

// TestHalfChangedSlot: a lookup between the two stores of an install (a
// hot swap) and of an uninstall (dropping an undone replacement) finds the
// registration visible before and after: each store keeps it in the slot.
func TestHalfChangedSlot(t *testing.T) {
	r := newRegistry()
	old, next := symReg(r, "x"), symReg(r, "x")
	r.publish([]*registration{old})
	want := old
	calls := 0
	r.betweenStores = func() {
		calls++
		if got := r.lookup(KindSymbol, "x"); got != want {
			t.Errorf("between the stores: %v, want %v", got, want)
		}
	}
	r.swap([]*registration{old}, []*registration{next}) // install next over old
	r.swap([]*registration{next}, []*registration{old}) // undone: old visible again
	r.drop([]*registration{next})                       // uninstall the undone one
	if calls != 2 {
		t.Fatalf("the hook ran %d times, want 2", calls)
	}
	if got := r.lookup(KindSymbol, "x"); got != old {
		t.Fatalf("after the drop: %v", got)
	}
}
