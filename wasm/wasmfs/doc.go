// Package wasmfs holds the tests of the filesystem ABI of WebAssembly
// modules: the host side is in package wasm (fsabi.go: the fs_register
// import and the vfs.FileSystemType it registers), the guest side in
// package wasm/sdk (fs.go), and the ABI is documented under
// "Filesystems" in docs/module-authors.md. The tests hold the examples
// examples/wasm/memfs and examples/wasm/statusfs to the conformance
// suite (vfs/vfstest) and check pinning, forced unloads and faults; the
// same scenarios through the command line, a `serve --fuse` daemon and
// real processes are cmd/raceless's TestWasmfs* (wasmfs_linux_test.go).
package wasmfs
