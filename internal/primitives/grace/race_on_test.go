//go:build race

package grace

const raceOn = true
