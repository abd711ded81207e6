// Package linearize checks that raceless's registry is linearizable: that
// every history of concurrent loads, unloads, reference takes (Acquire)
// and puts, lookups (Host.Module, Host.Lookup), and mounts and unmounts of
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
// What the model forbids is what the host promises: an unload that
// succeeds while a reference (or a mount) is held; a busy unload with no
// reason (nothing held, Exit not refusing, nothing in progress); two loads
// of one name both live; a live module whose registrations are not
// visible; a reference taken on, or a filesystem mounted from, a module
// that is not live; a registration visible from a module that never went
// live; a name still found after its unload returned, or a registration
// still listed (the stale registration a publish racing an unload leaves);
// a superblock that still pins its module after its umount returned.
package linearize

import (
	"fmt"
	"sort"

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
)

var kindNames = [...]string{"LoadBegin", "LoadEnd", "Load", "UnloadBegin", "UnloadEnd", "Unload", "Acquire", "Put", "Module", "Lookup", "Mount", "Umount", "MountBegin"}

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
}

// Phase of a name in the model.
type Phase uint8

// Phases.
const (
	Absent Phase = iota
	Coming
	Live
	Going
)

var phaseNames = [...]string{"absent", "coming", "live", "going"}

func (p Phase) String() string { return phaseNames[p] }

// State is the model state of one name (the model is partitioned by name).
type State struct {
	Phase   Phase
	Refs    int // references: Bindings and superblocks
	Mounts  int // superblocks mounted at /mnt/NAME
	Pending int // mounts begun (owner pinned), not yet attached
	Owner   int // id of the Begin that left coming or going
}

// with returns s in another phase, owned by id.
func (s State) with(p Phase, id int) State {
	s.Phase, s.Owner = p, id
	return s
}

func (s State) String() string {
	if s.Phase == Coming || s.Phase == Going {
		return fmt.Sprintf("%s(op %d) refs=%d mounts=%d+%d", s.Phase, s.Owner, s.Refs, s.Mounts, s.Pending)
	}
	return fmt.Sprintf("%s refs=%d mounts=%d+%d", s.Phase, s.Refs, s.Mounts, s.Pending)
}

// step returns every state the model may be in after op, none when op is
// impossible in s.
func step(s State, in Input) []State {
	one := func(t State) []State { return []State{t} }
	switch in.Kind {
	case LoadBegin:
		if s.Phase == Absent {
			return one(State{Phase: Coming, Owner: in.ID})
		}
	case LoadEnd:
		if s.Phase == Coming && s.Owner == in.ID {
			if in.Result == OK {
				return one(State{Phase: Live})
			}
			return one(State{Phase: Absent})
		}
	case LoadExists:
		if s.Phase == Live {
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
			if s.Phase == Coming || s.Phase == Going {
				out = append(out, s)
			}
		}
		return out
	case UnloadEnd:
		mine := s.Phase == Going && s.Owner == in.ID
		switch {
		case in.Result == OK && mine && s.Refs == 0:
			return one(State{Phase: Absent})
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
		case in.Result == OK && s.Phase == Live:
			t := s
			t.Refs++
			return one(t)
		case in.Result == NotFound && s.Phase != Live:
			return one(s)
		case in.Result == NotLive && s.Phase == Going:
			return one(s)
		}
	case Put:
		if s.Refs > 0 {
			t := s
			t.Refs--
			return one(t)
		}
	case ModuleLookup:
		if (in.Result == Found) == (s.Phase != Absent) {
			return one(s)
		}
	case SymbolLookup:
		switch {
		case in.Result == Found && (s.Phase == Live || s.Phase == Going):
			return one(s)
		case in.Result == Missing && s.Phase != Live:
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
		case in.Result == NoDev && s.Phase != Live:
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
		case LoadBegin, UnloadBegin:
			return fmt.Sprintf("%s(%s) #%d", in.Kind, in.Name, in.ID)
		case MountBegin:
			return fmt.Sprintf("MountBegin(/mnt/%s) #%d", in.Name, in.ID)
		case LoadEnd, UnloadEnd:
			return fmt.Sprintf("%s(%s) #%d -> %s", in.Kind, in.Name, in.ID, in.Result)
		case Put:
			return fmt.Sprintf("Put(%s)", in.Name)
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
