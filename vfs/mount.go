package vfs

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/raceless/raceless"
)

// Host is what the VFS needs from the module host: *raceless.Host
// implements it. Acquire takes the owner module's reference (the counting
// interface); Request demand-loads "fs-<type>".
type Host interface {
	Acquire(kind raceless.Kind, name string) (raceless.Binding, error)
	Request(ctx context.Context, nameOrAlias string) (*raceless.Instance, error)
}

// The VFS's locks: what each guards, their order and which may be held
// while filesystem code runs are stated once, in the package doc
// ("Concurrency").
//
// Reference counts (Mount.refs, superblock.mounts) are atomic: an increment
// happens only by someone already holding a reference, under treeMu while
// the mount is attached (the tree holds one), or by Mount.tryGet, which
// raises a count only from above zero; so a count never rises from zero.
var (
	mpMu   sync.Mutex   // mount points against rmdir, unlink, rename; outermost; held across some filesystem calls
	treeMu sync.RWMutex // the mount trees; under mpMu; a leaf, never held across filesystem code
)

var (
	mountSeq atomic.Uint64
	sbSeq    atomic.Uint64
)

// mountState is a mount's place in its life; see the package doc.
type mountState int

const (
	mountAttached mountState = iota // in a namespace's tree; the tree holds a reference
	mountInternal                   // never in a tree (anonymous files); refs are its files
	mountDetached                   // left the tree (umount, lazy umount); refs are its users
	mountDead                       // last reference dropped; superblock reference dropped
)

func (s mountState) String() string {
	return [...]string{"attached", "internal", "detached", "dead"}[s]
}

// superblock is one filesystem instance. It holds the module reference
// until the last mount of it dies: the Binding of its filesystem type, or,
// for an AnonMount's internal mount, the reference its module took on
// itself (self).
type superblock struct {
	id      uint64
	fstype  string
	sb      Superblock
	binding raceless.Binding
	self    *raceless.Kernel // set instead of binding: Kernel.Get taken
	mounts  atomic.Int64     // mounts (attached, detached or internal) not yet dead
}

// owner is the module the superblock's reference is on (nil for none).
func (s *superblock) owner() *raceless.Instance {
	if s.self != nil {
		return s.self.Instance()
	}
	return s.binding.Owner()
}

// unpin drops the module reference, once.
func (s *superblock) unpin() {
	if k := s.self; k != nil {
		s.self = nil
		k.Put()
		return
	}
	s.binding.Release()
}

// put drops one mount's reference; the last one shuts the superblock down:
// the module's release operation first, then the module reference, outside
// module code.
func (s *superblock) put() {
	n := s.mounts.Add(-1)
	if n > 0 {
		return
	}
	if n < 0 {
		panic("vfs: superblock reference count below zero")
	}
	_ = guard0(s, "superblock release", func() error { s.sb.Release(); return nil })
	if hookBeforeModulePut != nil {
		hookBeforeModulePut(s.fstype)
	}
	s.unpin()
}

// hookBeforeModulePut, set only by tests, runs after the filesystem's
// release operation returned and before the module reference is dropped.
var hookBeforeModulePut func(fstype string)

// hookRbindCollected, set only by tests, runs in a recursive bind after it
// listed the mounts below its source and where they are attached, before
// it clones them.
var hookRbindCollected func()

// Mount is one mount: a superblock (or a directory of it, for bind mounts)
// attached somewhere. See the package doc for its states.
type Mount struct {
	id      uint64
	sb      *superblock
	root    Node
	rootIno uint64
	source  string
	options string

	refs   atomic.Int64 // tree (1 while attached) + open files + cwds + walks in progress
	expire atomic.Bool  // MNT_EXPIRE mark; cleared by mntput

	// guarded by treeMu
	state    mountState
	ns       *Namespace
	parent   *Mount
	mpNode   Node   // the node (in parent) this mount covers
	mpIno    uint64 // its Ino
	mpRel    string // its path within parent, from parent's root
	children map[*Mount]struct{}
	// prev and next link the namespace's attached mounts in the order
	// they entered it (Namespace.first), the order /proc/mounts lists
	// them in, as Linux's mount list does.
	prev, next *Mount
	// left is the namespace a detached mount left, until it dies (it
	// stays in left.byType meanwhile); leftAt its path there then.
	left   *Namespace
	leftAt string
}

type mpKey struct {
	m   *Mount
	ino uint64
}

func (m *Mount) get() { m.refs.Add(1) }

// tryGet takes a reference unless the mount is dead (its count at zero):
// for a Loc, which holds none. A dead mount's superblock may be released
// and its module gone, so nothing may reach its nodes.
func (m *Mount) tryGet() bool {
	for {
		n := m.refs.Load()
		if n <= 0 {
			return false
		}
		if m.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// put drops a reference and clears the expiry mark (any access does).
func (m *Mount) put() {
	m.expire.Store(false)
	m.putNoExpire()
}

func (m *Mount) putNoExpire() {
	n := m.refs.Add(-1)
	if n > 0 {
		return
	}
	if n < 0 {
		panic("vfs: mount reference count below zero")
	}
	treeMu.Lock()
	if m.state == mountAttached {
		treeMu.Unlock()
		panic("vfs: last reference of an attached mount dropped")
	}
	m.state = mountDead
	if ns := m.left; ns != nil {
		ns.untype(m)
		m.left = nil
	}
	treeMu.Unlock()
	m.sb.put()
}

// ID is the mount's number, unique in the process and never reused (as
// /proc/self/mountinfo's mount ID, but never reused).
func (m *Mount) ID() uint64 { return m.id }

// Refs reports the mount's reference count (for tests and /proc views).
func (m *Mount) Refs() int64 { return m.refs.Load() }

// FSType reports the filesystem type name.
func (m *Mount) FSType() string { return m.sb.fstype }

// State reports the mount's state: "attached", "internal", "detached" or "dead".
func (m *Mount) State() string {
	treeMu.RLock()
	defer treeMu.RUnlock()
	return m.state.String()
}

// Namespace is a tree of mounts with path lookup across mount points. Its
// embedded *Proc is the namespace's own context (root and working directory
// at "/"), so the path operations are methods of the namespace too. All
// methods are safe for concurrent use.
type Namespace struct {
	*Proc
	host Host
	root *Mount // the rootfs mount; never unmounted

	points map[mpKey]*Mount // guarded by treeMu: what covers (mount, ino)
	// first and last end the list of the attached mounts, in the order
	// they entered the namespace (Mount.next; guarded by treeMu): Mounts
	// walks it, O(mounts), where a walk of the tree would sort.
	first, last *Mount
	// byType holds, by filesystem type, the attached mounts and those
	// that left the namespace and are not dead yet (guarded by treeMu):
	// MountsOfType reads it, O(mounts of the type).
	byType map[string]map[*Mount]struct{}
}

// link appends m, a mount entering the namespace, to its list. treeMu
// held.
func (ns *Namespace) link(m *Mount) {
	m.prev, m.next = ns.last, nil
	if ns.last != nil {
		ns.last.next = m
	} else {
		ns.first = m
	}
	ns.last = m
	set := ns.byType[m.sb.fstype]
	if set == nil {
		set = map[*Mount]struct{}{}
		ns.byType[m.sb.fstype] = set
	}
	set[m] = struct{}{}
}

// unlink takes m, a mount leaving the namespace, off its list; it stays
// in byType, as having left at path, until it dies. treeMu held.
func (ns *Namespace) unlink(m *Mount, path string) {
	m.left, m.leftAt = ns, path
	if m.prev != nil {
		m.prev.next = m.next
	} else {
		ns.first = m.next
	}
	if m.next != nil {
		m.next.prev = m.prev
	} else {
		ns.last = m.prev
	}
	m.prev, m.next = nil, nil
}

// untype takes m, a dead mount, out of byType. treeMu held.
func (ns *Namespace) untype(m *Mount) {
	set := ns.byType[m.sb.fstype]
	delete(set, m)
	if len(set) == 0 {
		delete(ns.byType, m.sb.fstype)
	}
}

// pathOf returns the path of m, an attached mount. treeMu held.
func pathOf(m *Mount) string {
	if m.parent == nil {
		return "/"
	}
	return joinPath(pathOf(m.parent), m.mpRel)
}

// NewNamespace returns a namespace whose root is an empty in-memory rootfs
// (no module owns it: like Linux's rootfs it is always there). Mount a
// filesystem at "/" to stack it over the rootfs:
//
//	ns := vfs.NewNamespace(host)
//	ns.Mount(ctx, "none", "/", "ramfs", "")
func NewNamespace(h Host) *Namespace {
	ns := &Namespace{host: h, points: make(map[mpKey]*Mount), byType: map[string]map[*Mount]struct{}{}}
	sb := &superblock{id: sbSeq.Add(1), fstype: "rootfs", sb: newRootfs()}
	sb.mounts.Store(1)
	root := sb.sb.Root()
	a, _ := root.Stat()
	m := &Mount{id: mountSeq.Add(1), sb: sb, root: root, rootIno: a.Ino, source: "rootfs",
		state: mountAttached, ns: ns, children: map[*Mount]struct{}{}}
	m.refs.Store(1)
	ns.root = m
	ns.link(m)
	l := loc{m: m, n: root, ino: a.Ino, rel: "/"}
	m.refs.Add(2)
	ns.Proc = &Proc{ns: ns, root: l, cwd: l, cred: processCred()}
	return ns
}

// mountedAt returns the top mount covering (m, ino), or nil. treeMu held.
func (ns *Namespace) mountedAt(m *Mount, ino uint64) *Mount {
	return ns.points[mpKey{m, ino}]
}

// attach puts c under parent at node. treeMu held (write).
func (ns *Namespace) attach(c, parent *Mount, node Node, ino uint64, rel string) {
	c.ns, c.parent, c.mpNode, c.mpIno, c.mpRel = ns, parent, node, ino, rel
	c.state = mountAttached
	parent.children[c] = struct{}{}
	ns.points[mpKey{parent, ino}] = c
}

// unhook removes c from its parent (the subtree stays below c). treeMu held.
func (ns *Namespace) unhook(c *Mount) {
	delete(c.parent.children, c)
	if ns.points[mpKey{c.parent, c.mpIno}] == c {
		delete(ns.points, mpKey{c.parent, c.mpIno})
	}
	c.parent, c.mpNode = nil, nil
}

// subtree lists c and every mount below it, parents first. treeMu held.
func subtree(c *Mount) []*Mount {
	out := []*Mount{c}
	for i := 0; i < len(out); i++ {
		kids := make([]*Mount, 0, len(out[i].children))
		for k := range out[i].children {
			kids = append(kids, k)
		}
		sort.Slice(kids, func(a, b int) bool { return kids[a].id < kids[b].id })
		out = append(out, kids...)
	}
	return out
}

// joinPath joins a mount's path and a path relative to its root.
func joinPath(dir, rel string) string {
	if rel == "/" || rel == "" {
		return dir
	}
	if dir == "/" {
		return rel
	}
	return dir + rel
}

// MountInfo describes one attached mount, as /proc/mounts shows it.
type MountInfo struct {
	ID      uint64
	Source  string
	Target  string
	FSType  string
	Options string // "rw" plus the options given at mount time
	Refs    int64
}

// Mounts lists the namespace's mounts in mount order (the rootfs first).
func (ns *Namespace) Mounts() []MountInfo {
	treeMu.RLock()
	defer treeMu.RUnlock()
	var out []MountInfo
	paths := map[*Mount]string{} // each mount's path, found once
	var path func(m *Mount) string
	path = func(m *Mount) string {
		if m.parent == nil {
			return "/"
		}
		p, ok := paths[m]
		if !ok {
			p = joinPath(path(m.parent), m.mpRel)
			paths[m] = p
		}
		return p
	}
	for m := ns.first; m != nil; m = m.next {
		opts := "rw"
		if m.options != "" {
			opts += "," + m.options
		}
		out = append(out, MountInfo{ID: m.id, Source: m.source, Target: path(m),
			FSType: m.sb.fstype, Options: opts, Refs: m.refs.Load()})
	}
	return out
}

// TypeMount is a mount of a filesystem type (Namespace.MountsOfType).
type TypeMount struct {
	ID uint64
	// Target is where the mount is attached or, Detached, where it was
	// when it left the namespace.
	Target string
	// Detached: unmounted (umount -l; or a plain umount finishing), kept
	// alive by its users.
	Detached bool
	// Users are the references besides the tree's: open files, working
	// directories, walks in progress.
	Users int64
}

// MountsOfType lists, by ID, the mounts of filesystem type fstype that
// are in the namespace, and those that left it (umount -l) and are not
// dead yet because files are still open on them: what keeps the type's
// superblocks, and so the module that provides it, in use. It costs
// O(mounts of the type), not O(mounts).
func (ns *Namespace) MountsOfType(fstype string) []TypeMount {
	treeMu.RLock()
	defer treeMu.RUnlock()
	set := ns.byType[fstype]
	out := make([]TypeMount, 0, len(set))
	for m := range set {
		if m.state == mountAttached {
			out = append(out, TypeMount{ID: m.id, Target: pathOf(m), Users: m.refs.Load() - 1})
		} else {
			out = append(out, TypeMount{ID: m.id, Target: m.leftAt, Detached: true, Users: max(m.refs.Load(), 0)})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// FormatMounts renders the namespace as /proc/mounts does:
// "src target fstype opts 0 0" per line. Each field is escaped as Linux's
// mangle() does (fs/proc_namespace.c: seq_escape with " \t\n\\"): space,
// tab, newline and backslash become \040, \011, \012 and \134; every other
// byte, '#' and bytes that are not UTF-8 included, is written as it is.
// (No field can hold a NUL: the VFS refuses one with EINVAL.)
func (ns *Namespace) FormatMounts() string {
	var b strings.Builder
	for _, m := range ns.Mounts() {
		for i, f := range [...]string{m.Source, m.Target, m.FSType, m.Options} {
			if i > 0 {
				b.WriteByte(' ')
			}
			mangle(&b, f)
		}
		b.WriteString(" 0 0\n")
	}
	return b.String()
}

// mangle writes s to b escaped as Linux's mangle() does: the bytes ' ',
// '\t', '\n' and '\\' as a backslash and three octal digits, every other
// byte unchanged. It works on bytes: s need not be UTF-8.
func mangle(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n', '\\':
			b.WriteByte('\\')
			b.WriteByte('0' + c>>6)
			b.WriteByte('0' + c>>3&7)
			b.WriteByte('0' + c&7)
		default:
			b.WriteByte(c)
		}
	}
}

// acquireType finds a filesystem type, demand-loading "fs-<name>" once when
// it is unknown, and stores the Binding holding the owner module's
// reference in *b, a zero Binding (which holds no reference after an
// error).
func acquireType(ctx context.Context, h Host, name string, b *raceless.Binding) (FileSystemType, error) {
	if h == nil {
		return nil, fmt.Errorf("filesystem type %q: %w", name, ENODEV)
	}
	var err error
	*b, err = h.Acquire(raceless.KindFilesystem, name)
	if errors.Is(err, raceless.ErrNotFound) {
		if _, rerr := h.Request(ctx, "fs-"+name); rerr == nil {
			*b, err = h.Acquire(raceless.KindFilesystem, name)
		}
	}
	if err != nil {
		if errors.Is(err, raceless.ErrNotFound) {
			return nil, fmt.Errorf("unknown filesystem type %q: %w: %w", name, ENODEV, err)
		}
		return nil, fmt.Errorf("filesystem type %q: %w: %w", name, ENODEV, err)
	}
	t, ok := b.Value().(FileSystemType)
	if !ok {
		b.Release()
		return nil, fmt.Errorf("filesystem type %q registered a %T, not a vfs.FileSystemType: %w", name, b.Value(), ENODEV)
	}
	return t, nil
}

// mountType mounts a new instance of the filesystem type fstype, found
// through h (acquireType). On success the returned mount holds one
// reference (its creator's) and is not attached.
func mountType(ctx context.Context, h Host, req MountRequest, fstype string, state mountState) (*Mount, error) {
	sb := &superblock{fstype: fstype}
	t, err := acquireType(ctx, h, fstype, &sb.binding)
	if err != nil {
		return nil, err
	}
	return newMount(ctx, sb, t, req, state)
}

// newMount mounts a new instance of t as sb, which holds a module
// reference (its binding or self) that passes to the superblock, or is
// dropped on an error. On success the returned mount holds one reference
// (its creator's) and is not attached.
func newMount(ctx context.Context, sb *superblock, t FileSystemType, req MountRequest, state mountState) (*Mount, error) {
	fstype := sb.fstype
	if req.Source == "" {
		req.Source = "none"
	}
	source, options := req.Source, req.Options
	sbi, err := guard(sb, "mount", func() (Superblock, error) {
		return t.Mount(ctx, req)
	})
	if err == nil && sbi == nil {
		err = fmt.Errorf("%s mount returned no superblock: %w", fstype, EIO)
	}
	if err != nil {
		sb.unpin()
		return nil, err
	}
	sb.id, sb.sb = sbSeq.Add(1), sbi
	sb.mounts.Store(1)
	root, err := guard(sb, "root", func() (Node, error) { return sbi.Root(), nil })
	var a Attr
	if err == nil {
		a, err = sb.stat(root)
	}
	if err == nil && !a.Mode.IsDir() {
		err = fmt.Errorf("root of %s is not a directory: %w", fstype, ENOTDIR)
	}
	if err != nil {
		sb.put()
		return nil, err
	}
	m := &Mount{id: mountSeq.Add(1), sb: sb, root: root, rootIno: a.Ino, source: source,
		options: options, state: state, children: map[*Mount]struct{}{}}
	m.refs.Store(1)
	return m, nil
}
