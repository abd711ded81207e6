package grace

import "runtime"

// runtimeProcs is the number of Ps to size the anonymous slots for
// (percpu.Slots allocates several per P; a section picks one by stack
// address, not by P): enough for the
// current GOMAXPROCS and for the machine's CPUs, so that the common
// "GOMAXPROCS raised to NumCPU later" stays on the fast path.
func runtimeProcs() int {
	return max(runtime.GOMAXPROCS(0), runtime.NumCPU())
}
