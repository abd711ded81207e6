package ramfs

import "golang.org/x/sys/unix"

// physicalMemory returns the machine's memory in bytes (sysinfo(2), as
// tmpfs sizes its defaults from totalram_pages), or 0 when unknown.
func physicalMemory() uint64 {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil {
		return 0
	}
	return uint64(si.Totalram) * uint64(si.Unit)
}
