// Package sdk is the guest side of the raceless WebAssembly module ABI for
// modules written in Go. It is built only for GOOS=wasip1 GOARCH=wasm (this
// file, without a build tag, exists so that tools on the host still see the
// package).
//
// A module is a package main built with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o m.wasm .
//
// whose init functions register the lifecycle callbacks:
//
//	func init() {
//		sdk.OnInit(func() error {
//			sdk.Log("hello, " + sdk.ParamOr("who", "world"))
//			return sdk.Export("add") // a //go:wasmexport function of package main
//		})
//		sdk.OnExit(func() (int, error) { return 0, nil })
//	}
//
//	//go:wasmexport add
//	func add(a, b int64) int64 { return a + b }
//
//	func main() {}
//
// The package itself carries the lifecycle exports the host calls
// (raceless_init, raceless_start, raceless_stop, raceless_exit and
// raceless_hook): Go accepts //go:wasmexport outside package main, so a
// module's main.go needs none of its own. Symbols, however, are exports of
// package main, since their names and signatures are the module's. The
// modinfo block (name, version, parameters, ...) is appended to the built
// file afterwards; see docs/module-authors.md and the wasm-modinfo tool.
//
// Invariants and caveats:
//   - The host serializes every call into one instance, so the callbacks
//     never run concurrently with each other; the package needs no locks.
//   - Callbacks must be registered from init functions: main is never called
//     in a c-shared (reactor) module.
//   - Export, Import, Request and Hook are only valid while OnInit's
//     callback runs (the host stages what a module registers during init
//     and publishes it when the module goes live); later they fail with
//     ErrInvalid.
//   - A panic in any callback or symbol aborts the instance: the host fails
//     that call with an error naming the module, taints the module and
//     refuses further calls into it; it can still be unloaded.
//   - The package imports neither fmt nor os: they would add about 0.8 MB
//     to every module (a Go module with the SDK alone is about 1.9 MB), and
//     the host validates every byte on each load, cached or not (about 10
//     ms more per load). A module may import them itself (the refuser
//     example does, to format its messages); it then pays that price.
package sdk
