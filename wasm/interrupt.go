package wasm

import (
	"errors"
	"fmt"

	"github.com/raceless/raceless/wasm/modinfo"
)

// interruptExport is the name of the global the loader adds to every
// module: a mutable i32, 0 while the instance may run. Setting it to 1
// makes the guest trap (unreachable) at its next loop back edge.
const interruptExport = "raceless_interrupt"

// yieldEvery is how many loop iterations a guest runs between two points
// at which Go can preempt it (see instrument): tens of microseconds.
const yieldEvery int32 = 1 << 16

// noMemory is the payload of the memory section given to a module that has
// none: one memory of 0 pages, at most 0.
var noMemory = []byte{0x01, 0x01, 0x00, 0x00}

// errInstrument is wrapped by the errors of instrument: the binary uses
// an instruction the rewriter does not know (wazero would reject it too).
var errInstrument = errors.New("cannot instrument")

// instrumentVersion names the output format of instrument in the Loader's
// cache of instrumented binaries: change it whenever instrument's output
// for a given input changes.
const instrumentVersion = 1

// instrument returns a copy of the module bin with an interrupt flag: a
// new mutable i32 global, exported as interruptExport, checked at the top
// of every loop:
//
//	loop bt
//	  global.get $interrupt
//	  if
//	    unreachable
//	  end
//	  ...
//
// This is what wazero's RuntimeConfig.WithCloseOnContextDone compiles in
// (a check of the module's closed state at each loop header), minus the
// goroutine wazero then starts for every call, and cheaper: a load and a
// branch instead of a trip from native code to Go per iteration. The
// loader sets the flag from any goroutine (the watchdog, a forced unload);
// a call in flight then fails with a trap, which the instance maps to
// ErrLimit or ErrGone. Like wazero's check, only loops are instrumented: a
// guest that cannot loop finishes (or overflows its stack) on its own.
//
// Native code cannot be preempted by Go's scheduler: a guest spinning in
// a loop would hold off a garbage collection's stop-the-world, which would
// in turn stop the watchdog that is to interrupt it, and the whole host
// would hang. So every yieldEvery loop iterations the check also runs
// "memory.grow 0", which wazero executes in Go (a no-op that returns the
// memory's size): a point at which the goroutine can be preempted. This is
// what WithCloseOnContextDone's per-iteration exit to Go gives, at a
// 65536th of the cost. A module without a memory gets an empty one
// (0 pages, at most 0) for this: it cannot have used memory instructions.
//
//	global.get $budget  i32.const 1  i32.sub  global.set $budget
//	global.get $budget  i32.eqz
//	if  i32.const yieldEvery  global.set $budget
//	    i32.const 0  memory.grow  drop  end
//
// Indices of existing globals do not change (the new ones are the last).
// Only the global, export and code sections are rewritten; everything
// else, custom sections included, is copied as is.
func instrument(bin []byte) ([]byte, error) {
	secs, err := modinfo.Sections(bin)
	if err != nil {
		return nil, err
	}
	var globalIdx uint32 // imported globals + defined globals = the new index
	var haveGlobal, haveExport, haveMemory bool
	for _, s := range secs {
		switch s.ID {
		case 2:
			n, mems, err := importedGlobals(s.Payload)
			if err != nil {
				return nil, fmt.Errorf("import section: %w", err)
			}
			globalIdx += n
			haveMemory = haveMemory || mems > 0
		case 5:
			n, _, err := modinfo.Uleb32(s.Payload)
			if err != nil {
				return nil, fmt.Errorf("memory section: %w", err)
			}
			haveMemory = haveMemory || n > 0
		case 6:
			n, _, err := modinfo.Uleb32(s.Payload)
			if err != nil {
				return nil, fmt.Errorf("global section: %w", err)
			}
			globalIdx += n
			haveGlobal = true
		case 7:
			haveExport = true
		}
	}
	names, err := exportNames(bin)
	if err != nil {
		return nil, err
	}
	if _, ok := names[interruptExport]; ok {
		return nil, fmt.Errorf("export %q is reserved for the host: %w", interruptExport, errInstrument)
	}

	out := make([]byte, 0, len(bin)+len(bin)/16+64)
	out = append(out, bin[:8]...) // header
	// The interrupt flag (mut i32) (i32.const 0), then the yield budget
	// (mut i32) (i32.const yieldEvery).
	newGlobal := []byte{0x7f, 0x01, 0x41, 0x00, 0x0b, 0x7f, 0x01, 0x41}
	newGlobal = appendSleb32(newGlobal, yieldEvery)
	newGlobal = append(newGlobal, 0x0b)
	newExport := append(modinfo.AppendUleb32(nil, uint32(len(interruptExport))), interruptExport...)
	newExport = append(newExport, 0x03)
	newExport = modinfo.AppendUleb32(newExport, globalIdx)
	emit := func(id byte, payload []byte) {
		out = append(out, id)
		out = modinfo.AppendUleb32(out, uint32(len(payload)))
		out = append(out, payload...)
	}
	// appendEntry returns the payload of a vector section with one more
	// entry: the count re-encoded, the old entries, then entry.
	appendEntry := func(payload, entry []byte, entries uint32) ([]byte, error) {
		n, k, err := modinfo.Uleb32(payload)
		if err != nil {
			return nil, err
		}
		p := modinfo.AppendUleb32(make([]byte, 0, len(payload)+len(entry)+5), n+entries)
		p = append(p, payload[k:]...)
		return append(p, entry...), nil
	}
	placed := map[byte]bool{}
	for _, s := range secs {
		// A missing global or export section goes before the first
		// section that must follow it.
		if s.ID != 0 {
			if !haveMemory && !placed[5] && sectionRank(s.ID) > sectionRank(5) {
				emit(5, noMemory)
				placed[5] = true
			}
			if !haveGlobal && !placed[6] && sectionRank(s.ID) > sectionRank(6) {
				emit(6, append([]byte{2}, newGlobal...))
				placed[6] = true
			}
			if !haveExport && !placed[7] && sectionRank(s.ID) > sectionRank(7) {
				emit(7, append([]byte{1}, newExport...))
				placed[7] = true
			}
		}
		switch s.ID {
		case 6:
			p, err := appendEntry(s.Payload, newGlobal, 2)
			if err != nil {
				return nil, fmt.Errorf("global section: %w", err)
			}
			emit(6, p)
			placed[6] = true
		case 7:
			p, err := appendEntry(s.Payload, newExport, 1)
			if err != nil {
				return nil, fmt.Errorf("export section: %w", err)
			}
			emit(7, p)
			placed[7] = true
		case 10:
			p, err := instrumentCode(s.Payload, globalIdx)
			if err != nil {
				return nil, fmt.Errorf("code section: %w", err)
			}
			emit(10, p)
		default:
			out = append(out, bin[s.Start:s.End]...)
		}
	}
	if !haveMemory && !placed[5] {
		emit(5, noMemory)
	}
	if !placed[6] {
		emit(6, append([]byte{2}, newGlobal...))
	}
	if !placed[7] {
		emit(7, append([]byte{1}, newExport...))
	}
	return out, nil
}

// sectionRank is the position of a known section in the order the binary
// format requires (custom sections, 0, may come anywhere).
func sectionRank(id byte) int {
	switch id {
	case 13: // tag: between memory and global
		return 55
	case 12: // data count: between element and code
		return 95
	case 10:
		return 100
	case 11:
		return 110
	}
	return int(id) * 10
}

// importedGlobals counts the global imports of an import section.
func importedGlobals(p []byte) (globals, memories uint32, err error) {
	r := reader{b: p}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		r.skip(int(r.u32())) // module
		r.skip(int(r.u32())) // name
		switch r.byte() {
		case 0x00: // function: type index
			r.u32()
		case 0x01: // table: reftype, limits
			r.byte()
			r.limits()
		case 0x02: // memory: limits
			r.limits()
			memories++
		case 0x03: // global: valtype, mutability
			r.byte()
			r.byte()
			globals++
		case 0x04: // tag: attribute, type index
			r.byte()
			r.u32()
		default:
			r.fail()
		}
	}
	return globals, memories, r.err
}

// instrumentCode rewrites the code section's function bodies, adding the
// interrupt check after each loop's block type.
func instrumentCode(p []byte, global uint32) ([]byte, error) {
	check := modinfo.AppendUleb32([]byte{0x23}, global) // global.get $interrupt
	check = append(check, 0x04, 0x40, 0x00, 0x0b)       // if unreachable end
	{
		budget := global + 1
		check = modinfo.AppendUleb32(append(check, 0x23), budget) // global.get $budget
		check = append(check, 0x41, 0x01, 0x6b)                   // i32.const 1, i32.sub
		check = modinfo.AppendUleb32(append(check, 0x24), budget) // global.set $budget
		check = modinfo.AppendUleb32(append(check, 0x23), budget) // global.get $budget
		check = append(check, 0x45, 0x04, 0x40, 0x41)             // i32.eqz, if, i32.const
		check = appendSleb32(check, yieldEvery)                   //   yieldEvery
		check = modinfo.AppendUleb32(append(check, 0x24), budget) //   global.set $budget
		check = append(check, 0x41, 0x00, 0x40, 0x00)             //   i32.const 0, memory.grow 0
		check = append(check, 0x1a, 0x0b)                         //   drop, end
	}
	r := reader{b: p}
	n := r.u32()
	out := modinfo.AppendUleb32(make([]byte, 0, len(p)+len(p)/16), n)
	var body []byte
	for i := uint32(0); i < n && r.err == nil; i++ {
		size := int(r.u32())
		if r.err != nil || size > len(r.b)-r.i {
			return nil, modinfo.ErrTruncated
		}
		start, end := r.i, r.i+size
		f := reader{b: r.b[:end], i: start}
		r.i = end
		// Locals: a vector of (count, valtype).
		for nl := f.u32(); nl > 0 && f.err == nil; nl-- {
			f.u32()
			f.byte()
		}
		body = body[:0]
		from := start // body bytes copied to out up to here
		for f.i < end && f.err == nil {
			if f.instr() {
				body = append(body, f.b[from:f.i]...)
				body = append(body, check...)
				from = f.i
			}
		}
		if f.err != nil {
			return nil, fmt.Errorf("function %d: %w", i, f.err)
		}
		body = append(body, f.b[from:end]...)
		out = modinfo.AppendUleb32(out, uint32(len(body)))
		out = append(out, body...)
	}
	if r.err != nil {
		return nil, r.err
	}
	if r.i != len(r.b) {
		return nil, fmt.Errorf("%d bytes after the last body: %w", len(r.b)-r.i, modinfo.ErrTruncated)
	}
	return out, nil
}

// reader decodes wasm binary values; the first error sticks, and reads
// after it return zero.
type reader struct {
	b   []byte
	i   int
	err error
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = modinfo.ErrTruncated
	}
	r.i = len(r.b)
}

func (r *reader) byte() byte {
	if r.i >= len(r.b) {
		r.fail()
		return 0
	}
	c := r.b[r.i]
	r.i++
	return c
}

func (r *reader) skip(n int) {
	if n < 0 || n > len(r.b)-r.i {
		r.fail()
		return
	}
	r.i += n
}

// u32 reads an unsigned LEB128 of at most 32 bits.
func (r *reader) u32() uint32 {
	v, k, err := modinfo.Uleb32(r.b[min(r.i, len(r.b)):])
	if err != nil {
		r.fail()
		return 0
	}
	r.i += k
	return v
}

// leb skips a LEB128 number (signed or not) of at most max bytes.
func (r *reader) leb(max int) {
	for k := 0; k < max; k++ {
		if r.byte()&0x80 == 0 {
			return
		}
	}
	r.fail()
}

// limits skips the limits of a table or memory type.
func (r *reader) limits() {
	flags := r.byte()
	r.leb(10)
	if flags&1 != 0 {
		r.leb(10)
	}
}

// memarg skips a memory instruction's alignment (with the multi-memory
// index flag) and offset.
func (r *reader) memarg() {
	if r.u32()&0x40 != 0 {
		r.u32()
	}
	r.leb(10)
}

// instr skips one instruction and reports whether it was a loop (the
// reader is then just past its block type).
func (r *reader) instr() bool {
	op := r.byte()
	switch {
	case op == 0x03: // loop bt
		r.leb(5)
		return true
	case op == 0x02, op == 0x04: // block bt, if bt
		r.leb(5)
	case op <= 0x01, op == 0x05, op == 0x0b, op == 0x0f, op == 0x1a, op == 0x1b,
		op >= 0x45 && op <= 0xc4, op == 0xd1:
		// no immediates
	case op == 0x0c, op == 0x0d, op == 0x10, op == 0x12, op >= 0x20 && op <= 0x26,
		op == 0x3f, op == 0x40, op == 0xd2:
		r.u32()
	case op == 0x11, op == 0x13: // call_indirect, return_call_indirect
		r.u32()
		r.u32()
	case op == 0x0e: // br_table
		for n := r.u32(); n > 0 && r.err == nil; n-- {
			r.u32()
		}
		r.u32()
	case op == 0x1c: // select t*
		r.skip(int(r.u32()))
	case op >= 0x28 && op <= 0x3e:
		r.memarg()
	case op == 0x41:
		r.leb(5)
	case op == 0x42:
		r.leb(10)
	case op == 0x43:
		r.skip(4)
	case op == 0x44:
		r.skip(8)
	case op == 0xd0: // ref.null ht
		r.leb(5)
	case op == 0xfc:
		switch sub := r.u32(); {
		case sub <= 7:
		case sub == 8, sub == 10, sub == 12, sub == 14: // memory.init, memory.copy, table.init, table.copy
			r.u32()
			r.u32()
		case sub == 9, sub == 11, sub == 13, sub >= 15 && sub <= 17:
			r.u32()
		default:
			r.unknown(op, sub)
		}
	case op == 0xfd:
		switch sub := r.u32(); {
		case sub <= 11, sub == 92, sub == 93: // loads, store, load_zero
			r.memarg()
		case sub == 12, sub == 13: // v128.const, i8x16.shuffle
			r.skip(16)
		case sub >= 21 && sub <= 34: // extract/replace lane
			r.skip(1)
		case sub >= 84 && sub <= 91: // load/store lane
			r.memarg()
			r.skip(1)
		}
	case op == 0xfe:
		if r.u32() == 3 { // atomic.fence
			r.skip(1)
		} else {
			r.memarg()
		}
	default:
		r.unknown(op, 0)
	}
	return false
}

func (r *reader) unknown(op byte, sub uint32) {
	if r.err == nil {
		r.err = fmt.Errorf("opcode 0x%02x %d at offset %d: %w", op, sub, r.i, errInstrument)
	}
	r.i = len(r.b)
}

// appendSleb32 appends v as a signed LEB128.
func appendSleb32(b []byte, v int32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 && c&0x40 == 0 || v == -1 && c&0x40 != 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
