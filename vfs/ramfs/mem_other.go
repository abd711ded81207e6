//go:build !linux && !darwin

package ramfs

// physicalMemory returns 0: the machine's memory is not known here, and
// the defaults fall back to fixed limits (see the package doc).
func physicalMemory() uint64 { return 0 }
