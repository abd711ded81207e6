// Package linearize checks that raceless's registry is linearizable: that
// every history of concurrent loads, unloads, hot swaps (Host.Replace),
// reference takes (Acquire) and puts, lookups (Host.Module, Host.Lookup),
// and mounts and unmounts of
// the modules' filesystem types (package vfs) could have happened in some
// sequential order consistent with real time, against the sequential model
// below. The checker is porcupine.
//
// # The model
//
// The registry is partitioned by module name (operations on different
// names never constrain each other; module NAME's filesystem type is
// mounted only at /mnt/NAME). The state of one name is
//
//	Phase ∈ {absent, coming, live, going},  Refs ≥ 0,  Mounts ≥ 0,  Pending ≥ 0,  Owner (an operation id)
//
// Loads and unloads are not atomic in the host: they pass through coming
// and going, where other operations see intermediate results (Acquire
// returns ErrNotLive during an unload, Host.Module already finds a coming
// instance). A recorded Load or Unload is therefore two model operations,
// Begin and End, both spanning the call's whole interval; the checker
// places each at some point inside it, Begin first (End requires the state
// Begin left, owned by the same id). The transitions are:
//
//	LoadBegin(id)            absent → coming(id)                (the name is reserved)
//	LoadEnd(id, ok)          coming(id) → live, Refs 0          (registrations published)
//	LoadEnd(id, init failed) coming(id) → absent
//	Load = ErrExists         requires live
//	UnloadBegin(id, ok)      live → going(id)                   (new references refused)
//	UnloadEnd(id, ok)        going(id), Refs = 0 → absent       (never with a reference held)
//	UnloadBegin(id, busy: in use)     requires Refs > 0; no effect, or live → going(id)
//	                                  (a reference that slipped in before new ones were refused)
//	UnloadBegin(id, busy: exit refused)  live → going(id)
//	UnloadBegin(id, busy: not live)   requires coming or going; no effect
//	UnloadEnd(id, busy)      going(id) → live; else no effect
//	Unload = ErrNotFound     requires absent
//	Acquire ok               requires live; Refs+1
//	Acquire ErrNotFound      requires absent, coming or going   (unpublished while coming)
//	Acquire ErrNotLive       requires going                     (published, refs killed)
//	Put                      requires Refs > 0; Refs-1
//	Module(name) found       requires not absent; not found: requires absent
//	Lookup lists the symbol  requires live or going; omits it: absent, coming or going
//	MountBegin               requires live; Refs+1, Pending+1   (the type's owner is pinned)
//	MountEnd(ok)             Pending-1, Mounts+1                (attached; the superblock keeps the pin)
//	Mount ENODEV             requires absent, coming or going   (one step)
//	Umount ok                requires Mounts > 0; Refs-1, Mounts-1 (no file open: released at once)
//	Umount EINVAL            requires Mounts = 0
//	Umount EBUSY             requires Mounts ≥ 1; no effect (no file is ever open in these
//	                         histories, but a concurrent path walk's transient reference
//	                         on the mount counts, as in Linux)
//
// A hot swap gives the name to another instance, so references are
// counted per instance: Acquire and Put carry the instance they saw (Inst),
// the state the one the name resolves to (Cur, with Refs), and Drains the
// instances a Replace call still waits for (reachable by no lookup: their
// references can only be put). Replace is recorded as up to four steps of
// one call (histories with Replace have no mounts):
//
//	ReplaceBegin(id)         live → replacing(id)               (the old instance serves; Unload, Replace: busy not live)
//	ReplaceBegin(busy: not live)  requires coming, going or a replace phase; no effect
//	ReplaceSwap(id)          replacing(id) → swapped(id): Cur = the new instance, the old one drains
//	ReplaceUndo(id, busy: exit refused)  swapped(id) → live: Cur = the old one again, the new one drains
//	ReplaceEnd(id, ok)       swapped(id), its drain empty → live
//	ReplaceEnd(id, init failed)  replacing(id) → live
//	ReplaceEnd(id, busy: exit refused)  its drain empty; the name's phase is its own by then
//	Replace = ErrNotFound    requires absent
//
// Acquire ok requires Cur to be the instance seen (a swap's new instance
// is bound at its first sighting), and in every replace phase a lookup
// finds the name: no call fails for a swap.
//
// What the model forbids is what the host promises: an unload that
// succeeds while a reference (or a mount) is held; a busy unload with no
// reason (nothing held, Exit not refusing, nothing in progress); two loads
// of one name both live; a live module whose registrations are not
// visible; a reference taken on, or a filesystem mounted from, a module
// that is not live; a registration visible from a module that never went
// live; a name still found after its unload returned, or a registration
// still listed (the stale registration a publish racing an unload leaves);
// a superblock that still pins its module after its umount returned; a
// lookup that finds nothing, or the old instance, after a swap; a swap
// that returns while its old instance is still referenced; an unload that
// says "not found" while a swap holds the name.
package linearize

import (
	"fmt"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"
)

// Kind is the kind of a model operation.
type Kind uint8

// Model operations.
const (
	LoadBegin Kind = iota
	LoadEnd
	LoadExists
	UnloadBegin
	UnloadEnd
	UnloadNotFound
	Acquire
	Put
	ModuleLookup
	SymbolLookup
	MountOp // a failed mount (one step), or the end of a successful one
	UmountOp
	MountBegin
	ReplaceBegin
	ReplaceSwap
	ReplaceUndo
	ReplaceEnd
	ReplaceNotFound
)

var kindNames = [...]string{"LoadBegin", "LoadEnd", "Load", "UnloadBegin", "UnloadEnd", "Unload", "Acquire", "Put", "Module", "Lookup", "Mount", "Umount", "MountBegin",
	"ReplaceBegin", "ReplaceSwap", "ReplaceUndo", "ReplaceEnd", "Replace"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Result is the outcome of an operation, as the model sees it.
type Result uint8

// Results.
const (
	OK Result = iota
	InitFailed
	Exists
	Busy        // *BusyError "in use": references held
	BusyExit    // *BusyError "exit refused"
	BusyNotLive // *BusyError "not live (coming|going)"
	NotFound
	NotLive // ErrNotLive from Acquire (by name, never ErrGone)
	Found   // Module: found; Lookup: listed
	Missing // Module: not found; Lookup: not listed
	NoDev   // Mount: ENODEV
	Invalid // Umount: EINVAL (not a mount point)
)

var resultNames = [...]string{"ok", "init-failed", "exists", "busy", "busy-exit", "busy-not-live", "not-found", "not-live", "found", "missing", "ENODEV", "EINVAL"}

func (r Result) String() string {
	if int(r) < len(resultNames) {
		return resultNames[r]
	}
	return fmt.Sprintf("Result(%d)", r)
}

// Input is a model operation's input: what was called, on which name, and
// for Begin/End pairs the id that ties them.
type Input struct {
	Kind Kind
	Name string
	ID   int
	// Result is the outcome of the whole call, known to Begin too: an
	// UnloadBegin of a call that returned ErrBusy may have had no effect.
	Result Result
	// Inst identifies the instance an operation saw (Acquire, Put, a
	// LoadEnd or ReplaceEnd that returned one); 0 when none.
	Inst int
}

// Phase of a name in the model.
type Phase uint8

// Phases.
const (
	Absent Phase = iota
	Coming
	Live
	Going
	Replacing // Replace: the old instance serves, the new one is coming
	Swapped   // Replace: the new instance serves, the old one drains
)

var phaseNames = [...]string{"absent", "coming", "live", "going", "replacing", "swapped"}

func (p Phase) String() string { return phaseNames[p] }

// State is the model state of one name (the model is partitioned by name).
type State struct {
	Phase   Phase
	Refs    int // references on Cur: Bindings and superblocks
	Mounts  int // superblocks mounted at /mnt/NAME
	Pending int // mounts begun (owner pinned), not yet attached
	Owner   int // id of the Begin that left coming, going or a replace phase
	Cur     int // the instance the name resolves to (Input.Inst); < 0: a replacement not yet seen
	// Drains are the instances a Replace call still waits for, no longer
	// reachable by name: the old one after a swap, the new one after an
	// undo (the name is then live again, and its life goes on meanwhile).
	Drains [maxDrains]Drain
}

// A Drain is an instance a Replace call (Op) waits for: its references
// can only be put.
type Drain struct{ Op, Inst, Refs int }

const maxDrains = 4

// fresh returns the state of a name in phase p with nothing but s's
// drains (which outlive the name's own transitions).
func (s State) fresh(p Phase) State { return State{Phase: p, Drains: s.Drains} }

// drain returns the index of the drain of op (op > 0) or of inst (op 0),
// or -1.
func (s State) drain(op, inst int) int {
	for i, d := range s.Drains {
		if d.Op != 0 && (op != 0 && d.Op == op || op == 0 && d.Inst == inst) {
			return i
		}
	}
	return -1
}

// addDrain returns s with a drain added, false if there is no room.
func (s State) addDrain(d Drain) (State, bool) {
	for i := range s.Drains {
		if s.Drains[i].Op == 0 {
			s.Drains[i] = d
			return s, true
		}
	}
	return s, false
}

// with returns s in another phase, owned by id.
func (s State) with(p Phase, id int) State {
	s.Phase, s.Owner = p, id
	return s
}

func (s State) String() string {
	var b strings.Builder
	switch s.Phase {
	case Coming, Going, Replacing, Swapped:
		fmt.Fprintf(&b, "%s(op %d)", s.Phase, s.Owner)
	default:
		b.WriteString(s.Phase.String())
	}
	fmt.Fprintf(&b, " inst %d refs=%d mounts=%d+%d", s.Cur, s.Refs, s.Mounts, s.Pending)
	for _, d := range s.Drains {
		if d.Op != 0 {
			fmt.Fprintf(&b, "; op %d drains inst %d refs=%d", d.Op, d.Inst, d.Refs)
		}
	}
	return b.String()
}

// serving reports whether the name resolves to a live instance: live, or
// in any phase of a hot swap.
func (s State) serving() bool {
	return s.Phase == Live || s.Phase == Replacing || s.Phase == Swapped
}

// replacing reports whether a Replace call owns the name.
func (s State) replacing() bool { return s.Phase == Replacing || s.Phase == Swapped }

// is reports whether inst is Cur, binding a replacement not yet seen to
// the first instance an operation reports in its place.
func (s *State) is(inst int) bool {
	if s.Cur < 0 && inst > 0 {
		s.Cur = inst
	}
	return s.Cur == inst
}

// step returns every state the model may be in after op, none when op is
// impossible in s.
func step(s State, in Input) []State {
	one := func(t State) []State { return []State{t} }
	switch in.Kind {
	case LoadBegin:
		if s.Phase == Absent {
			return one(s.fresh(Coming).with(Coming, in.ID))
		}
	case LoadEnd:
		if s.Phase == Coming && s.Owner == in.ID {
			if in.Result == OK {
				t := s.fresh(Live)
				t.Cur = in.Inst
				return one(t)
			}
			return one(s.fresh(Absent))
		}
	case LoadExists:
		if s.serving() {
			return one(s)
		}
	case UnloadBegin:
		var out []State
		switch in.Result {
		case OK, BusyExit:
			if s.Phase == Live {
				out = append(out, s.with(Going, in.ID))
			}
		case Busy:
			if s.Phase == Live && s.Refs > 0 {
				out = append(out, s, s.with(Going, in.ID))
			}
		case BusyNotLive:
			if s.Phase == Coming || s.Phase == Going || s.replacing() {
				out = append(out, s)
			}
		}
		return out
	case UnloadEnd:
		mine := s.Phase == Going && s.Owner == in.ID
		switch {
		case in.Result == OK && mine && s.Refs == 0:
			return one(s.fresh(Absent))
		case in.Result != OK && mine:
			return one(s.with(Live, 0))
		case in.Result != OK:
			return one(s)
		}
	case UnloadNotFound:
		if s.Phase == Absent {
			return one(s)
		}
	case Acquire:
		switch {
		case in.Result == OK && s.serving():
			t := s
			if t.is(in.Inst) {
				t.Refs++
				return one(t)
			}
		case in.Result == NotFound && !s.serving():
			return one(s)
		case in.Result == NotLive && s.Phase == Going:
			return one(s)
		}
	case Put:
		t := s
		if i := s.drain(0, in.Inst); i >= 0 && s.Drains[i].Refs > 0 {
			t.Drains[i].Refs--
			return one(t)
		}
		if s.Cur == in.Inst && s.Refs > 0 {
			t.Refs--
			return one(t)
		}
	case ModuleLookup:
		if (in.Result == Found) == (s.Phase != Absent) {
			return one(s)
		}
	case SymbolLookup:
		switch {
		case in.Result == Found && (s.serving() || s.Phase == Going):
			return one(s)
		case in.Result == Missing && !s.serving():
			return one(s)
		}
	case MountBegin:
		if s.Phase == Live {
			t := s
			t.Refs++
			t.Pending++
			return one(t)
		}
	case MountOp:
		switch {
		case in.Result == OK && s.Pending > 0:
			t := s
			t.Pending--
			t.Mounts++
			return one(t)
		case in.Result == NoDev && !s.serving():
			return one(s)
		}
	case UmountOp:
		switch {
		case in.Result == OK && s.Mounts > 0 && s.Refs > 0:
			t := s
			t.Refs--
			t.Mounts--
			return one(t)
		case in.Result == Invalid && s.Mounts == 0:
			return one(s)
		case in.Result == Busy && s.Mounts >= 1:
			// Transient references count, as in Linux: a concurrent
			// path walk through the mount (another umount's, a mount
			// stacking on it) makes it busy for that instant.
			return one(s)
		}
	case ReplaceNotFound:
		if s.Phase == Absent {
			return one(s)
		}
	case ReplaceBegin:
		switch {
		case in.Result == BusyNotLive && (s.Phase == Coming || s.Phase == Going || s.replacing()):
			return one(s)
		case in.Result != BusyNotLive && s.Phase == Live && s.Mounts == 0 && s.Pending == 0:
			return one(s.with(Replacing, in.ID))
		}
	case ReplaceSwap:
		// The new instance takes the name; the old one drains.
		if s.Phase == Replacing && s.Owner == in.ID && in.Result != InitFailed {
			if t, ok := s.addDrain(Drain{in.ID, s.Cur, s.Refs}); ok {
				t = t.with(Swapped, in.ID)
				t.Cur, t.Refs = -in.ID, 0
				return one(t)
			}
		}
	case ReplaceUndo:
		// Swapped back: the old instance is live, an ordinary module
		// again; the new one drains.
		i := s.drain(in.ID, 0)
		if s.Phase == Swapped && s.Owner == in.ID && in.Result == BusyExit && i >= 0 {
			t := s.with(Live, 0)
			old := s.Drains[i]
			t.Drains[i] = Drain{in.ID, s.Cur, s.Refs}
			t.Cur, t.Refs = old.Inst, old.Refs
			return one(t)
		}
	case ReplaceEnd:
		i := s.drain(in.ID, 0)
		if i < 0 || s.Drains[i].Refs != 0 {
			switch {
			case in.Result == InitFailed && s.Phase == Replacing && s.Owner == in.ID:
				return one(s.with(Live, 0))
			}
			break
		}
		t := s
		t.Drains[i] = Drain{}
		switch {
		case in.Result == OK && s.Phase == Swapped && s.Owner == in.ID:
			t = t.with(Live, 0)
			if t.is(in.Inst) {
				return one(t)
			}
		case in.Result == BusyExit:
			return one(t)
		}
	}
	return nil
}

// Model is the porcupine model of the registry, partitioned by name.
var Model = (&porcupine.NondeterministicModel{
	Partition: partition,
	Init:      func() []any { return []any{State{}} },
	Step: func(state, input, output any) []any {
		next := step(state.(State), input.(Input))
		out := make([]any, len(next))
		for i, s := range next {
			out[i] = s
		}
		return out
	},
	Equal: func(a, b any) bool { return a.(State) == b.(State) },
	DescribeOperation: func(input, output any) string {
		in := input.(Input)
		switch in.Kind {
		case LoadBegin, UnloadBegin, ReplaceBegin, ReplaceSwap, ReplaceUndo:
			return fmt.Sprintf("%s(%s) #%d", in.Kind, in.Name, in.ID)
		case MountBegin:
			return fmt.Sprintf("MountBegin(/mnt/%s) #%d", in.Name, in.ID)
		case LoadEnd, UnloadEnd, ReplaceEnd:
			return fmt.Sprintf("%s(%s) #%d -> %s inst %d", in.Kind, in.Name, in.ID, in.Result, in.Inst)
		case Put:
			return fmt.Sprintf("Put(%s) inst %d", in.Name, in.Inst)
		case Acquire:
			return fmt.Sprintf("Acquire(%s) -> %s inst %d", in.Name, in.Result, in.Inst)
		case MountOp:
			if in.Result == OK {
				return fmt.Sprintf("MountEnd(/mnt/%s) #%d -> ok", in.Name, in.ID)
			}
			return fmt.Sprintf("Mount(/mnt/%s) -> %s", in.Name, in.Result)
		case UmountOp:
			return fmt.Sprintf("Umount(/mnt/%s) -> %s", in.Name, in.Result)
		}
		return fmt.Sprintf("%s(%s) -> %s", in.Kind, in.Name, in.Result)
	},
	DescribeState: func(state any) string { return state.(State).String() },
}).ToModel()

func partition(history []porcupine.Operation) [][]porcupine.Operation {
	by := map[string][]porcupine.Operation{}
	for _, op := range history {
		n := op.Input.(Input).Name
		by[n] = append(by[n], op)
	}
	names := make([]string, 0, len(by))
	for n := range by {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([][]porcupine.Operation, 0, len(names))
	for _, n := range names {
		out = append(out, by[n])
	}
	return out
}
