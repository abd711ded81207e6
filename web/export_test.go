package web

// SetTestHooks sets the hooks that park a request after its handler was
// answered (finished) and report an abort (aborted); nil clears them.
// Tests that set them run alone (not in parallel).
func SetTestHooks(finished, aborted func()) {
	testHookFinished, testHookAborted = finished, aborted
}
