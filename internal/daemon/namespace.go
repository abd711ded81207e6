package daemon

import (
	"context"

	"github.com/raceless/raceless/internal/control"
)

// namespace is the host's mount namespace (package vfs), with ramfs at /
// and procfs at /proc, optionally exposed through FUSE.
type namespace struct{}

func newNamespace(d *Daemon) (*namespace, error) {
	if d.cfg.FuseDir != "" {
		return nil, control.Unsupportedf("--fuse: the VFS is not built in this version")
	}
	return &namespace{}, nil
}

func (n *namespace) close() {}

func (n *namespace) handle(ctx context.Context, req *control.Request) (any, error) {
	return nil, control.Unsupportedf("%s: the VFS is not built in this version", req.Op)
}

func (d *Daemon) procModules() (any, error) {
	return nil, control.Unsupportedf("/proc/modules: procfs is not built in this version")
}
