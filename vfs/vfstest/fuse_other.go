//go:build !linux

package vfstest

import "testing"

// Main returns at once: the helper processes are the FUSE checks', which
// run on Linux only.
func Main() {}

func runFUSE(t *testing.T, typ Type) {
	t.Skip("the FUSE checks run on Linux only (go-fuse's DirectMount, the helpers' credentials)")
}
