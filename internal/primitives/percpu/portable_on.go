//go:build raceless_portable

package percpu

// portable: no platform-specific ordering tricks; readers use atomics and
// Heavy is a no-op (see the package comment).
const portable = true
