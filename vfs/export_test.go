package vfs

import "sort"

// MountIDsByTree lists the ids of the mounts reachable from ns's root, in
// id order: what Mounts listed before the namespace kept its mount list,
// to check the list against.
func MountIDsByTree(ns *Namespace) []uint64 {
	treeMu.RLock()
	defer treeMu.RUnlock()
	var ids []uint64
	for _, m := range subtree(ns.root) {
		ids = append(ids, m.id)
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	return ids
}

// SetHooks sets the test hooks: beforeModulePut runs as a superblock of
// fstype is released (after the filesystem's release, before the module
// reference is dropped), rbindCollected in a recursive bind between
// listing the mounts below its source and cloning them. nil clears one.
func SetHooks(beforeModulePut func(fstype string), rbindCollected func()) {
	hookBeforeModulePut, hookRbindCollected = beforeModulePut, rbindCollected
}
