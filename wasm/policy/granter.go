package policy

import (
	"fmt"
	"sync/atomic"

	"github.com/raceless/raceless/vfs"
	"github.com/raceless/raceless/wasm"
	"github.com/raceless/raceless/wasm/modinfo"
)

// Granter grants a Policy's capabilities over a VFS namespace: it is a
// wasm.Granter. For modinfo.CapFSRead it opens a process context rooted at
// the granted directory (vfs.Proc.NewProc: a chroot), whose io/fs view
// (vfs.Proc.FS) the module sees as its WASI root. Like the directory a
// WASI runtime preopens, that root pins its mount while the module is
// loaded (an umount is EBUSY; umount -l detaches it), and each file the
// module opens pins its mount until closed, as any open file does. Paths
// cannot leave it: ".." stops at the root, and a symbolic link, absolute
// or relative, resolves inside it.
type Granter struct {
	p    *Policy
	root atomic.Pointer[vfs.Proc]
}

var _ wasm.Granter = (*Granter)(nil)

// NewGranter returns a Granter of p. Directories are resolved in the
// namespace SetRoot gives it; until then a grant of one fails.
func NewGranter(p *Policy) *Granter { return &Granter{p: p} }

// SetRoot sets the process context in which the granted directories are
// resolved (a daemon's namespace, once it is mounted).
func (g *Granter) SetRoot(root *vfs.Proc) { g.root.Store(root) }

// Grant implements wasm.Granter.
func (g *Granter) Grant(module, capability string) (wasm.Grant, error) {
	gr, ok := g.p.Lookup(module, capability)
	if !ok {
		return wasm.Grant{}, fmt.Errorf("the policy does not grant it to %s: %w", module, wasm.ErrCapability)
	}
	switch capability {
	case modinfo.CapFSRead:
		root := g.root.Load()
		if root == nil {
			return wasm.Grant{}, fmt.Errorf("directory %s: no namespace to find it in yet", gr.Arg)
		}
		p, err := root.NewProc(gr.Arg)
		if err != nil {
			return wasm.Grant{}, fmt.Errorf("the granted directory: %w", err)
		}
		return wasm.Grant{FS: p.FS(), Release: func() { _ = p.Close() }}, nil
	}
	return wasm.Grant{}, fmt.Errorf("capability %s has no grant here: %w", capability, wasm.ErrCapability)
}
