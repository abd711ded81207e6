//go:build race

package torture

// raceEnabled: under the race detector a Go-built wasm module takes
// seconds to instantiate, too slow for a torture run.
const raceEnabled = true
