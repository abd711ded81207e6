package raceless

import (
	"fmt"
	"sync"
)

// A TaintFlag is one of the Linux kernel's taint letters (its
// Documentation/admin-guide/tainted-kernels.rst), with the kernel's
// meaning carried over to a host and its modules. An instance shows its
// flags in the /proc/modules-style line (Instance.TaintFlags), a host its
// mask as /proc/sys/kernel/tainted does (Host.TaintMask).
type TaintFlag byte

// The taint flags raceless sets.
const (
	// TaintForcedUnload: a module was unloaded, or its teardown finished,
	// while references to it were held (rmmod -f: TAINT_FORCED_RMMOD).
	TaintForcedUnload TaintFlag = 'R'
	// TaintDied: module code panicked, or a wasm guest trapped or hit a
	// limit (the kernel's oops: TAINT_DIE).
	TaintDied TaintFlag = 'D'
	// TaintWarn: anything else a module or the host reports, such as an
	// exit refused where it cannot be (TAINT_WARN).
	TaintWarn TaintFlag = 'W'
	// TaintUnsignedModule: a module was loaded whose signature could not
	// be checked against a trusted key, because it has none or because
	// its key is not in the host's keyring (TAINT_UNSIGNED_MODULE). A
	// module whose signature does not verify is never loaded.
	TaintUnsignedModule TaintFlag = 'E'
)

// taintBit is each flag's bit in the kernel's taint mask.
func (f TaintFlag) bit() (uint, bool) {
	switch f {
	case TaintForcedUnload:
		return 3, true
	case TaintDied:
		return 7, true
	case TaintWarn:
		return 9, true
	case TaintUnsignedModule:
		return 13, true
	}
	return 0, false
}

// taintOrder is the order in which the kernel prints its letters (bit
// order), restricted to the flags raceless sets.
var taintOrder = []TaintFlag{TaintForcedUnload, TaintDied, TaintWarn, TaintUnsignedModule}

// taintsKept is how many taint reasons a host or an instance keeps. The
// kernel keeps only flags; we keep reasons, because "why" is what an
// operator asks, but a daemon that force-unloads for months (or a module
// whose hook panics on every call) must not grow without bound. The first
// reasons are kept: they say how the taint began.
const taintsKept = 32

// taintLog records why something was tainted: the first taintsKept
// reasons and how many more there were.
type taintLog struct {
	mu      sync.Mutex // guards reasons, dropped and mask; a leaf
	reasons []string
	dropped int
	mask    uint64 // the kernel's taint bits of the flags recorded
}

// add records reason under flag (an unknown flag counts as TaintWarn).
func (t *taintLog) add(flag TaintFlag, reason string) {
	b, ok := flag.bit()
	if !ok {
		b, _ = TaintWarn.bit()
	}
	t.mu.Lock()
	t.mask |= 1 << b
	if len(t.reasons) < taintsKept {
		t.reasons = append(t.reasons, reason)
	} else {
		t.dropped++
	}
	t.mu.Unlock()
}

// list returns the kept reasons, oldest first, followed, if any were not
// kept, by one line "and N more".
func (t *taintLog) list() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := append([]string(nil), t.reasons...)
	if t.dropped > 0 {
		out = append(out, fmt.Sprintf(TaintsMoreFormat, t.dropped))
	}
	return out
}

// TaintsMoreFormat is the format of the last line of Host.Taints and
// Instance.Taints when more reasons were recorded than kept (32): the
// number is how many more.
const TaintsMoreFormat = "and %d more"

// taintMask returns the kernel's taint bits of the flags recorded.
func (t *taintLog) taintMask() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mask
}

// flags returns the letters of the flags recorded, in the kernel's order
// ("" when untainted).
func (t *taintLog) flags() string {
	mask := t.taintMask()
	var out []byte
	for _, f := range taintOrder {
		if b, _ := f.bit(); mask&(1<<b) != 0 {
			out = append(out, byte(f))
		}
	}
	return string(out)
}
