package wasm

// Exports for the external tests.

// SetCompileHook makes l call f, with the binary's sha256, as each
// compilation starts. Set it before the first load.
func SetCompileHook(l *Loader, f func(sum string)) { l.compileHook = f }

// InstrumentedPath is where l caches the instrumented binary of src.
func InstrumentedPath(l *Loader, src *Source) string { return l.instrumentedPath(src) }

// Instrument is instrument.
var Instrument = instrument

// Tick is l's watchdog tick.
func Tick(l *Loader) int64 { return l.tick.Load() }
