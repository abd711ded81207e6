//go:build !race

package ref

const raceOn = false
