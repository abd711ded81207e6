package vfs

import (
	"context"
	"path"
	"sort"
)

// Unmount flags, as umount2(2) has them.
const (
	MNT_FORCE  = 1 // treated as a plain umount: nothing can be forced out of a running module
	MNT_DETACH = 2 // lazy: leave the tree now, shut down at the last close
	MNT_EXPIRE = 4 // first call marks (EAGAIN), a second without access in between unmounts
)

// Mount mounts a new instance of the filesystem type fstype at target.
// options are passed to the filesystem as given. Errors: ENODEV for an
// unknown type or a type whose module is going (wrapping the host's
// ErrNotFound / ErrNotLive), ENOENT for a missing target, ENOTDIR when the
// target is not a directory. Mounting on a mount point stacks the new mount
// on top. A NUL byte in any of the four strings is EINVAL, checked first.
func (p *Proc) Mount(ctx context.Context, source, target, fstype, options string) error {
	if hasNUL(source) || hasNUL(target) || hasNUL(fstype) || hasNUL(options) {
		return pathErr("mount", target, EINVAL)
	}
	t, err := p.walk(target, true)
	if err != nil {
		return pathErr("mount", target, err)
	}
	defer t.m.put()
	if !t.isDir() {
		return pathErr("mount", target, ENOTDIR)
	}
	m, err := mountType(ctx, p.ns.host, MountRequest{Source: source, Options: options, NS: p.ns, Cred: p.cred}, fstype, mountDetached)
	if err != nil {
		return pathErr("mount", target, err)
	}
	if err := p.graft(m, t); err != nil {
		m.put() // never attached: this shuts the new superblock down again
		return pathErr("mount", target, err)
	}
	return nil
}

// graft attaches an unattached mount holding one reference (which becomes
// the tree's) at the held loc t, or on top of whatever covers it now.
func (p *Proc) graft(m *Mount, t loc) error {
	mpMu.Lock()
	defer mpMu.Unlock()
	if a, err := t.m.sb.stat(t.n); err != nil || (a.Nlink == 0 && a.Mode.IsDir()) {
		return ENOENT // removed while we were mounting
	}
	treeMu.Lock()
	defer treeMu.Unlock()
	if t.m.state != mountAttached || t.m.ns != p.ns {
		return EINVAL // the target's mount left the tree meanwhile
	}
	top := t
	for {
		c := p.ns.mountedAt(top.m, top.ino)
		if c == nil {
			break
		}
		top = loc{m: c, n: c.root, ino: c.rootIno, rel: "/"}
	}
	entering := subtree(m)
	// A tree of new mounts (a recursive bind) enters in id order: the
	// order its mounts were made in.
	sort.Slice(entering, func(a, b int) bool { return entering[a].id < entering[b].id })
	for _, c := range entering {
		c.state = mountAttached
		c.ns = p.ns
		p.ns.link(c)
	}
	p.ns.attach(m, top.m, top.n, top.ino, top.rel)
	return nil
}

// mountRoot resolves name and checks it is the root of an attached,
// non-root mount of this namespace (EINVAL otherwise).
func (p *Proc) mountRoot(name string) (loc, error) {
	l, err := p.walk(name, true)
	if err != nil {
		return loc{}, err
	}
	treeMu.RLock()
	ok := l.ino == l.m.rootIno && l.m.state == mountAttached && l.m.parent != nil && l.m.ns == p.ns
	treeMu.RUnlock()
	if !ok {
		l.m.put()
		return loc{}, EINVAL
	}
	return l, nil
}

// Unmount unmounts the mount at target (the top one, when stacked).
// flags is 0 or MNT_DETACH, MNT_EXPIRE or MNT_FORCE (treated as 0).
// Without MNT_DETACH it fails EBUSY while a file is open in the mount, a
// Proc has its root or working directory in it, or a mount is below it.
// With MNT_DETACH the mount and everything below it leave the tree at once;
// each superblock shuts down when its last file closes. EINVAL: target is
// not a mount point, or bad flags.
func (p *Proc) Unmount(target string, flags int) error {
	if flags&^(MNT_FORCE|MNT_DETACH|MNT_EXPIRE) != 0 ||
		flags&MNT_EXPIRE != 0 && flags&(MNT_DETACH|MNT_FORCE) != 0 {
		return pathErr("umount", target, EINVAL)
	}
	l, err := p.mountRoot(target)
	if err != nil {
		return pathErr("umount", target, err)
	}
	m := l.m
	var gone []*Mount
	err = func() error {
		mpMu.Lock()
		defer mpMu.Unlock()
		treeMu.Lock()
		defer treeMu.Unlock()
		if m.state != mountAttached || m.parent == nil {
			return EINVAL // unmounted or moved by someone else meanwhile
		}
		if flags&MNT_DETACH != 0 {
			gone = subtree(m)
			paths := make([]string, len(gone))
			for i, c := range gone {
				paths[i] = pathOf(c) // before any unhook
			}
			for i, c := range gone {
				if c.parent != nil {
					p.ns.unhook(c)
				}
				p.ns.unlink(c, paths[i])
				c.children = map[*Mount]struct{}{}
				c.state = mountDetached
				c.ns = nil
			}
			return nil
		}
		// our own walk holds one reference, the tree another
		if m.refs.Load() > 2 || len(m.children) > 0 {
			return EBUSY
		}
		if flags&MNT_EXPIRE != 0 && !m.expire.Swap(true) {
			return EAGAIN
		}
		path := pathOf(m)
		p.ns.unhook(m)
		p.ns.unlink(m, path)
		m.state = mountDetached
		m.ns = nil
		gone = []*Mount{m}
		return nil
	}()
	m.putNoExpire() // the walk's reference, keeping a fresh expiry mark
	if err != nil {
		return pathErr("umount", target, err)
	}
	for _, c := range gone {
		c.put() // the tree's reference
	}
	return nil
}

// Bind mounts the directory (or file) source at target, sharing source's
// superblock. recursive (MS_BIND|MS_REC) also copies the mounts below
// source; a plain bind does not.
func (p *Proc) Bind(source, target string, recursive bool) error {
	if err := checkNUL("mount", source, target); err != nil {
		return err
	}
	s, err := p.walk(source, true)
	if err != nil {
		return pathErr("mount", source, err)
	}
	defer s.m.put()
	t, err := p.walk(target, true)
	if err != nil {
		return pathErr("mount", target, err)
	}
	defer t.m.put()
	if s.isDir() != t.isDir() {
		return pathErr("mount", target, ENOTDIR)
	}
	treeMu.RLock()
	attached := s.m.state == mountAttached && s.m.ns == p.ns
	var below []*Mount
	if recursive && attached {
		below = append(below, subtree(s.m)[1:]...)
		// Each is held until cloned: one unmounted meanwhile must not
		// die, for a clone of a dead mount would bring its released
		// superblock back (and release it twice).
		for _, c := range below {
			c.get()
		}
	}
	treeMu.RUnlock()
	defer func() {
		for _, c := range below {
			c.putNoExpire()
		}
	}()

	if !attached {
		return pathErr("mount", source, EINVAL)
	}
	// Which first-level children lie under the bound directory? That asks
	// the filesystem (".." walks), so it is done before taking the locks.
	include := map[*Mount]bool{}
	top := clone(s.m, s.n, s.ino)
	clones := map[*Mount]*Mount{s.m: top}
	treeMu.RLock()
	type edge struct {
		c, parent *Mount
		mp        Node
		mpIno     uint64
		mpRel     string
	}
	var edges []edge
	for _, c := range below {
		if c.parent != nil {
			edges = append(edges, edge{c, c.parent, c.mpNode, c.mpIno, c.mpRel})
		}
	}
	treeMu.RUnlock()
	if hookRbindCollected != nil && recursive {
		hookRbindCollected()
	}
	for _, e := range edges {
		if e.parent == s.m {
			rel, ok := under(e.mp, e.mpIno, s.ino, e.mpRel, s.rel)
			if !ok {
				continue
			}
			e.mpRel = rel
		} else if !include[e.parent] {
			continue
		}
		include[e.c] = true
		cc := clone(e.c, e.c.root, e.c.rootIno)
		clones[e.c] = cc
		par := clones[e.parent]
		cc.parent, cc.mpNode, cc.mpIno, cc.mpRel = par, e.mp, e.mpIno, e.mpRel
	}
	// wire the clones below the top one, then graft the top
	treeMu.Lock()
	for orig, cc := range clones {
		if orig == s.m {
			continue
		}
		par := cc.parent
		par.children[cc] = struct{}{}
		p.ns.points[mpKey{par, cc.mpIno}] = cc
	}
	treeMu.Unlock()
	if err := p.graft(top, t); err != nil {
		treeMu.Lock()
		all := subtree(top)
		for _, c := range all[1:] {
			p.ns.unhook(c)
		}
		treeMu.Unlock()
		for _, c := range all {
			c.put()
		}
		return pathErr("mount", target, err)
	}
	return nil
}

// under reports whether node (ino) lies below the directory ancestor of the
// same mount, and its path relative to it, computed from the paths within
// the mount (rel of node, arel of ancestor).
func under(node Node, ino, ancestor uint64, rel, arel string) (string, bool) {
	if ino == ancestor {
		return "/", true
	}
	if arel == "/" {
		return rel, true
	}
	if len(rel) > len(arel) && rel[:len(arel)] == arel && rel[len(arel)] == '/' {
		return path.Clean(rel[len(arel):]), true
	}
	return "", false
}

// clone makes an unattached mount of m's superblock rooted at n, holding
// one reference (the tree's, once grafted).
func clone(m *Mount, n Node, ino uint64) *Mount {
	m.sb.mounts.Add(1)
	c := &Mount{id: mountSeq.Add(1), sb: m.sb, root: n, rootIno: ino, source: m.source,
		options: m.options, state: mountDetached, children: map[*Mount]struct{}{}}
	c.refs.Store(1)
	return c
}

// Move moves the mount at source, with every mount below it, to target
// (MS_MOVE). Open files in it keep working; their paths change. Errors:
// EINVAL when source is not a mount point, ELOOP when target lies inside
// the moved subtree, ENOENT for a missing target, ENOTDIR when the target is
// not a directory.
func (p *Proc) Move(source, target string) error {
	if err := checkNUL("move", source, target); err != nil {
		return err
	}
	s, err := p.mountRoot(source)
	if err != nil {
		return pathErr("move", source, err)
	}
	defer s.m.put()
	t, err := p.walk(target, true)
	if err != nil {
		return pathErr("move", target, err)
	}
	defer t.m.put()
	if s.isDir() != t.isDir() {
		return pathErr("move", target, ENOTDIR)
	}
	mpMu.Lock()
	defer mpMu.Unlock()
	if a, err := t.m.sb.stat(t.n); err != nil || (a.Nlink == 0 && a.Mode.IsDir()) {
		return pathErr("move", target, ENOENT)
	}
	treeMu.Lock()
	defer treeMu.Unlock()
	if s.m.state != mountAttached || s.m.parent == nil || t.m.state != mountAttached {
		return pathErr("move", source, EINVAL)
	}
	for a := t.m; a != nil; a = a.parent {
		if a == s.m {
			return pathErr("move", target, ELOOP)
		}
	}
	top := t
	for {
		c := p.ns.mountedAt(top.m, top.ino)
		if c == nil {
			break
		}
		if c == s.m {
			return nil // already there
		}
		top = loc{m: c, n: c.root, ino: c.rootIno, rel: "/"}
	}
	p.ns.unhook(s.m)
	p.ns.attach(s.m, top.m, top.n, top.ino, top.rel)
	return nil
}
