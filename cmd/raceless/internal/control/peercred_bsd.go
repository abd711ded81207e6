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
	return peerUIDVia(c, func(fd int) (int, error) {
		cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
		if err != nil {
			return -1, err
		}
		if cred.Version != 0 { // XUCRED_VERSION: a layout we do not know
			return -1, fmt.Errorf("LOCAL_PEERCRED: unknown xucred version %d", cred.Version)
		}
		return int(cred.Uid), nil
	})
}
