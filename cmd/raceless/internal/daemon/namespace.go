package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/vfs/fusefs"
)

// namespace is the host's mount namespace: ramfs at / and, when the
// procfs module is built in, procfs at /proc; optionally exposed through
// FUSE.
type namespace struct {
	ns   *vfs.Namespace
	fuse *fusefs.Server // nil without --fuse
	log  *slog.Logger
}

// MountsResult is a "mounts" answer: the mounts, and the same as
// /proc/mounts text.
type MountsResult struct {
	Mounts []MountEntry  `json:"mounts"`
	Text   control.Bytes `json:"text"` // bytes, as /proc/mounts prints names: see control.Bytes
}

// MountEntry is vfs.MountInfo with its names as bytes on the wire
// (control.Bytes), under the same JSON names.
type MountEntry struct {
	ID      uint64
	Source  control.Bytes
	Target  control.Bytes
	FSType  control.Bytes
	Options control.Bytes
	Refs    int64
}

func mountEntries(ms []vfs.MountInfo) []MountEntry {
	out := make([]MountEntry, len(ms))
	for i, m := range ms {
		out[i] = MountEntry{ID: m.ID, Source: control.Bytes(m.Source), Target: control.Bytes(m.Target),
			FSType: control.Bytes(m.FSType), Options: control.Bytes(m.Options), Refs: m.Refs}
	}
	return out
}

func newNamespace(d *Daemon) (*namespace, error) {
	n := &namespace{ns: vfs.NewNamespace(d.host), log: d.log}
	ctx := context.Background()
	for _, m := range d.cfg.Mounts {
		if m.Mkdir {
			if err := n.ns.MkdirAll(m.Target, 0o755); err != nil {
				return nil, fmt.Errorf("mkdir %s: %w", m.Target, err)
			}
		}
		if err := n.ns.Mount(ctx, m.Source, m.Target, m.Type, m.Options); err != nil {
			n.close()
			return nil, fmt.Errorf("boot mount of %s at %s: %w", m.Type, m.Target, err)
		}
	}
	if d.cfg.FuseDir != "" {
		srv, err := fusefs.Mount(d.cfg.FuseDir, n.ns.Proc, &fusefs.Options{AllowOther: d.cfg.FuseAllowOther})
		if err != nil {
			n.close()
			return nil, fmt.Errorf("--fuse %s: %w", d.cfg.FuseDir, err)
		}
		n.fuse = srv
		d.log.Info("namespace exposed through FUSE", "dir", d.cfg.FuseDir)
	}
	return n, nil
}

// releaseWait bounds how long closing the namespace waits for the
// kernel's pending RELEASEs of files closed through FUSE.
const releaseWait = time.Second

// close unmounts everything, lazily (open files keep their mounts until
// closed), so that Host.Shutdown can unload the filesystems' modules.
func (n *namespace) close() {
	if n.fuse != nil {
		// Files open through FUSE pin their modules; a busy FUSE mount is
		// left to the kernel's lazy unmount (the host's umount -l). The
		// kernel sends a closed file's RELEASE after close returned: give
		// those of files already closed a moment to arrive, so that their
		// references are dropped before the unmount, not lost with it.
		ctx, cancel := context.WithTimeout(context.Background(), releaseWait)
		_ = n.fuse.WaitOpenFiles(ctx, 0)
		cancel()
		if err := n.fuse.Unmount(); err != nil {
			n.log.Warn("FUSE unmount", "err", err)
		}
		n.fuse = nil
	}
	mounts := n.ns.Mounts()
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i].Target == "/" && i == 0 {
			continue // the rootfs
		}
		_ = n.ns.Unmount(mounts[i].Target, vfs.MNT_DETACH)
	}
}

func (n *namespace) handle(ctx context.Context, req *control.Request) (any, error) {
	switch req.Op {
	case "mounts":
		return MountsResult{Mounts: mountEntries(n.ns.Mounts()), Text: control.Bytes(n.ns.FormatMounts())}, nil
	case "mount":
		// util-linux's X-mount.mkdir: create the mount point first.
		var opts []string
		mkdir := false
		for _, o := range strings.Split(req.Options, ",") {
			switch {
			case o == "X-mount.mkdir":
				mkdir = true
			case o != "":
				opts = append(opts, o)
			}
		}
		if mkdir {
			if err := n.ns.MkdirAll(req.Target, 0o755); err != nil {
				return nil, err
			}
		}
		req.Options = strings.Join(opts, ",")
		switch {
		case req.Move:
			return nil, n.ns.Move(req.Source, req.Target)
		case req.Bind:
			return nil, n.ns.Bind(req.Source, req.Target, req.Rec)
		}
		return nil, n.ns.Mount(ctx, req.Source, req.Target, req.Type, req.Options)
	case "read":
		return n.ns.ReadFile(req.Target)
	case "umount":
		flags := 0
		if req.Lazy {
			flags |= vfs.MNT_DETACH
		}
		return nil, n.ns.Unmount(req.Target, flags)
	}
	return nil, &control.Error{Code: control.CodeUsage, Message: "unknown op " + req.Op}
}
