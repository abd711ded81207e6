module github.com/raceless/raceless

go 1.26.0

require (
	github.com/anishathalye/porcupine v1.3.1 // indirect
	github.com/hanwen/go-fuse/v2 v2.12.1 // indirect
	github.com/tetratelabs/wazero v1.12.0 // indirect
	go.uber.org/goleak v1.3.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
