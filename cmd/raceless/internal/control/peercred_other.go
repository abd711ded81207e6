//go:build !linux && !darwin && !freebsd

package control

import (
	"errors"
	"net"
)

// errNoPeerCred is PeerUID's answer where the platform offers no
// peer-credential call this package uses.
var errNoPeerCred = errors.New("peer credentials are not supported on this platform")

// PeerUID reports errNoPeerCred: this platform has no peer-credential call
// that this package uses (SO_PEERCRED on Linux, LOCAL_PEERCRED on darwin
// and FreeBSD), so the daemon cannot tell who connected. CheckPeer then
// refuses every connection rather than accept one unchecked: the daemon
// listens, but serves nobody.
func PeerUID(c *net.UnixConn) (int, error) {
	return -1, errNoPeerCred
}
