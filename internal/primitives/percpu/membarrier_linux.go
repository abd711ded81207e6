//go:build linux

package percpu

import (
	"golang.org/x/sys/unix"
)

// From <linux/membarrier.h>; golang.org/x/sys/unix has the system call
// number but not the commands.
const (
	membarrierCmdQuery                    = 0
	membarrierCmdPrivateExpedited         = 1 << 3
	membarrierCmdRegisterPrivateExpedited = 1 << 4
)

func membarrierRegister() bool {
	mask, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdQuery, 0, 0)
	if errno != 0 || mask&membarrierCmdPrivateExpedited == 0 {
		return false
	}
	_, _, errno = unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdRegisterPrivateExpedited, 0, 0)
	if errno != 0 {
		return false
	}
	// One real call, so a kernel that accepted registration but refuses the
	// command is found here and not in the middle of a grace period.
	_, _, errno = unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdPrivateExpedited, 0, 0)
	return errno == 0
}

func membarrier() {
	_, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdPrivateExpedited, 0, 0)
	if errno != 0 {
		// Registration succeeded at init, so this cannot fail; if it did,
		// readers would be unordered: refuse to continue.
		panic("percpu: membarrier failed after successful registration: " + errno.Error())
	}
}
