//go:build linux

package control

import (
	"net"

	"golang.org/x/sys/unix"
)

// PeerUID returns the uid of the process at the other end of c
// (SO_PEERCRED: the credentials it had when it connected).
func PeerUID(c *net.UnixConn) (int, error) {
	return peerUIDVia(c, func(fd int) (int, error) {
		cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			return -1, err
		}
		return int(cred.Uid), nil
	})
}
