//go:build darwin || freebsd

package control

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// PeerUID returns the effective uid of the process at the other end of c
// (LOCAL_PEERCRED, what getpeereid(3) reads: the credentials it had when it
// connected).
func PeerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Xucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if cerr != nil {
		return -1, cerr
	}
	if cred.Version != 0 { // XUCRED_VERSION: a layout we do not know
		return -1, fmt.Errorf("LOCAL_PEERCRED: unknown xucred version %d", cred.Version)
	}
	return int(cred.Uid), nil
}
