//go:build !linux && !darwin && !freebsd && !netbsd && !openbsd && !dragonfly

package main

// isTerminal is false where this command does not know how to ask: output
// is then formatted as for a pipe.
func isTerminal(fd int) bool { return false }
