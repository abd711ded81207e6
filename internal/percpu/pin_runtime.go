//go:build !raceless_portable

package percpu

import _ "unsafe" // for go:linkname

// runtime.procPin and runtime.procUnpin are on Go's list of symbols that may
// be pulled with go:linkname (the "hall of shame" exemption in
// runtime/proc.go, kept because widely used packages rely on them). If a
// future Go drops them, build with -tags raceless_portable.

//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()

const pinExclusive = true

// Pin pins the calling goroutine to its P and returns the P's index in
// [0, GOMAXPROCS). Until Unpin the goroutine is not preempted; the code in
// between must be short and must not block, allocate much, or call Pin again.
func Pin() int { return procPin() }

// Unpin undoes Pin.
func Unpin() { procUnpin() }
