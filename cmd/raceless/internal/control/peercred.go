package control

import "net"

// peerUIDVia runs get, the platform's peer-credential call, on c's file
// descriptor (see PeerUID in peercred_*.go).
func peerUIDVia(c *net.UnixConn, get func(fd int) (uid int, err error)) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	uid, gerr := -1, error(nil)
	if err := raw.Control(func(fd uintptr) { uid, gerr = get(int(fd)) }); err != nil {
		return -1, err
	}
	if gerr != nil {
		return -1, gerr
	}
	return uid, nil
}
