//go:build !raceless_portable

package percpu

const portable = false
