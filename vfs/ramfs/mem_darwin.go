package ramfs

import "golang.org/x/sys/unix"

// physicalMemory returns the machine's memory in bytes (sysctl
// hw.memsize), or 0 when unknown.
func physicalMemory() uint64 {
	n, err := unix.SysctlUint64("hw.memsize")
	if err != nil {
		return 0
	}
	return n
}
