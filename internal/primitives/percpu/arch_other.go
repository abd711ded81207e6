//go:build !amd64

package percpu

const tsoArch = false
