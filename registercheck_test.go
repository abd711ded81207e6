package raceless

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
)

var errRefusedByCheck = errors.New("refused by the check")

// A RegisterCheck sees every registration of its kind as it is staged
// (the instance, name and value), and its refusal fails Register naming
// the module, before anything is reserved: the load fails and the name
// stays free. Other kinds are not checked; a removed check no longer
// runs. During Replace it sees the replacement, bearing the module's
// name while the old instance is live.
func TestCheckRegistrations(t *testing.T) {
	h := quietHost(t)
	type seen struct {
		inst  *Instance
		name  string
		value any
	}
	var got []seen
	var calls atomic.Int32
	remove := h.CheckRegistrations("widget", func(inst *Instance, name string, value any) error {
		calls.Add(1)
		got = append(got, seen{inst, name, value})
		if name == "bad" {
			return errRefusedByCheck
		}
		return nil
	})
	register := func(kind Kind, name string) *testModule {
		return &testModule{init: func(k *Kernel) error { return k.Register(kind, name, "v-"+name) }}
	}
	// A refused registration fails Init: the load fails, naming the
	// module, with the check's error; the name was never reserved.
	_, err := h.Load(deadline(t), src("m1", register("widget", "bad")), nil)
	if !errors.Is(err, errRefusedByCheck) || !strings.Contains(err.Error(), "m1") {
		t.Fatalf("load with a refused registration: %v", err)
	}
	if _, ok := h.Module("m1"); ok {
		t.Fatal("m1 is loaded")
	}
	// An accepted one is registered; the check saw the coming instance.
	m2 := mustLoad(t, h, src("m2", register("widget", "good")))
	if len(got) != 2 || got[1].inst != m2 || got[1].name != "good" || got[1].value != "v-good" {
		t.Fatalf("check saw %+v", got)
	}
	if _, err := h.Acquire("widget", "good"); err != nil {
		t.Fatal(err)
	}
	// Another kind is not checked.
	before := calls.Load()
	mustLoad(t, h, src("m3", register("other", "bad")))
	if calls.Load() != before {
		t.Fatal("a check of kind widget ran for kind other")
	}
	// Replace: the check sees the replacement (name m2, not the live
	// instance), and its refusal leaves the old instance live.
	_, err = h.Replace(deadline(t), "m2", src("m2", register("widget", "bad")), nil, ReplaceOptions{})
	if !errors.Is(err, errRefusedByCheck) {
		t.Fatalf("replace with a refused registration: %v", err)
	}
	last := got[len(got)-1]
	if last.inst == m2 || last.inst.Name() != "m2" {
		t.Fatalf("the check saw %v during Replace, want the replacement", last.inst)
	}
	if cur, _ := h.Module("m2"); cur != m2 || cur.State() != StateLive {
		t.Fatal("the old instance is not live after the refused replacement")
	}
	// Removed, it no longer runs.
	remove()
	before = calls.Load()
	mustLoad(t, h, src("m4", register("widget", "bad")))
	if calls.Load() != before {
		t.Fatal("a removed check ran")
	}
}
