// Package vfs is raceless's virtual filesystem: namespaces of mounts with
// Linux semantics (mount, umount with EBUSY, MNT_DETACH, MNT_EXPIRE, bind,
// recursive bind, move, stacked mounts), whose filesystems come from
// modules, and anonymous files of pseudo filesystems.
//
// # The reference chain
//
// "Filesystem shutdown is always garbage collection" (Al Viro). An open
// *File holds its *Mount; a Mount holds its superblock; a superblock holds
// the raceless.Binding of its filesystem type, which holds the owner
// module's reference. A module whose filesystem is mounted or has an open
// file therefore cannot be unloaded (the host's Unload returns ErrBusy with
// the reference count). Releases run in that order, in VFS code: the
// filesystem's Handle.Release, the mount reference, Superblock.Release (the
// module's release operation), and only then Binding.Release, so the last
// module reference is never dropped by module code (the thread's
// MOD_DEC_USE_COUNT race cannot happen; TestAnonReleaseRace parks a
// goroutine in that window).
//
// # Mount states
//
//		            Mount (graft)                umount / MNT_DETACH
//		(new) ─────────────────────▶ attached ───────────────────────▶ detached
//		  │                            │  ▲  move: re-parented,             │
//		  │ AnonMount.NewFile          └──┘  stays attached                 │ last reference
//		  ▼                                                                  ▼ dropped
//		internal ───────────────────────────────────────────────────────▶ dead
//		                         last anonymous file closed
//
//	  - attached: in a namespace's tree; the tree holds one reference;
//	    lookups reach it. Only attached mounts can be unmounted, moved or
//	    bound from.
//	  - internal: never in a tree (AnonMount); its references are its files.
//	  - detached: out of the tree (umount, lazy umount of it or an ancestor);
//	    no path reaches it, ".." stops at its root, open files and working
//	    directories in it keep working.
//	  - dead: the last reference went; the superblock lost one mount and,
//	    if it was the last, shut down (Superblock.Release, then the module
//	    reference). A dead mount never comes back.
//
// Superblocks: live while mounts > 0; the transition to zero runs Release
// then drops the Binding, exactly once.
//
// # Errors
//
// Every error is an *fs.PathError whose Err wraps an Errno (ENOENT, EBUSY,
// EXDEV, ELOOP, ...). Errno unwraps to syscall.Errno, so errors.Is works
// with fs.ErrNotExist, syscall.EBUSY and, for EBUSY and ENODEV,
// raceless.ErrBusy and raceless.ErrNotFound. A closed File or Proc reports
// fs.ErrClosed.
//
// # Names are bytes
//
// As on Linux, a path is a string of bytes split at '/'; nothing else in
// it is interpreted. Bytes that are not UTF-8 are kept as they are: two
// names that differ in one byte are two different entries and two
// different mount points, and Mounts, ReadDir, Readlink and FormatMounts
// give them back byte for byte. The one byte refused is NUL: a NUL in any
// path or symlink target given to a Proc (or Namespace) method, or in
// Mount's source, type or options, fails EINVAL (an *fs.PathError) before
// any lookup and changes nothing, as Go's
// syscall package refuses a string holding a NUL with EINVAL before a
// system call (a C path cannot hold one). The io/fs view (FS) keeps io/fs's
// own rules instead: it refuses what fs.ValidPath refuses, names that are
// not UTF-8 included, with fs.ErrInvalid.
//
// # Paths and Locs
//
// Every path operation has a Loc form, as Linux's system calls have *at
// forms: a Loc (a mount and a node, reached by a lookup) stands for the
// directory file descriptor a relative name starts from (MkdirAt, OpenAt,
// LookupAt, RenameAt, ...), or for the node itself (Loc.Stat, Loc.Open,
// Loc.ReadDir, ...). Both forms run one core per operation; the path form
// starts from the Proc's working directory. A Loc holds no reference: an
// operation on it takes one for its duration and fails ENOENT once the
// mount is dead. The FUSE view is built on Locs, so that it never rebuilds
// a path: Linux limits the length of the path a process passes (PathMax),
// not the depth of a tree.
//
// # Permissions
//
// New nodes are owned as Linux's inode_init_owner owns them: by the
// caller's credentials (a Proc's Cred, or the Cred given to an *At
// operation), with the group of a setgid directory, which a new directory
// also inherits the setgid bit of. The VFS itself checks no permission
// bits: a Proc acts as the process that made it, which is the namespace's
// owner (as a FUSE server acts on its own files), and creation modes are
// taken as given (no umask). Through FUSE the kernel checks every access
// (the mount's default_permissions: see vfs/fusefs), with the caller's
// groups and capabilities, which a FUSE request does not carry.
//
// # Panics in filesystems
//
// Every call into a filesystem's code (FileSystemType.Mount, the
// Superblock, Node and Handle methods and their optional interfaces) goes
// through one recovering path (guard, in guard.go). A panic there fails the
// operation with an error wrapping EIO (a *PanicError naming the filesystem
// type and the operation, inside the usual *fs.PathError; a FUSE client
// reads EIO), taints the module owning the filesystem type (the host logs
// "module tainted" with the module's name and the error), and leaves no
// VFS lock or reference behind: a panicking Handle.Release still closes the
// file, a panicking Superblock.Release still drops the module reference.
// The host, the namespace and the FUSE server go on.
//
// # Concurrency
//
// Namespace, Proc, File and AnonMount methods are safe for concurrent use.
// This section is the one statement of the VFS's lock rules; the lock
// declarations refer to it.
//
// The locks, outermost first (a lock may be taken while holding one above
// it, never the other way round):
//
//	mpMu          (mount.go) one for all namespaces: serializes changes of
//	              mount points (mount, bind, move, umount) against rmdir,
//	              unlink and rename, so that nothing is mounted on a name
//	              being removed (Linux: lock_mount and the inode lock).
//	treeMu        (mount.go) one RWMutex for all namespaces: guards the
//	              mount trees (Mount.ns, parent, mp*, children, state,
//	              left, leftAt, Namespace.points and byType); taken alone
//	              or under mpMu.
//	File.wmu      serializes the Writes of one File that share its offset.
//	File.mu       guards a File's offset, directory listing and closed flag;
//	              taken alone or under File.wmu.
//	Proc.mu       guards a Proc's working directory and closed flag.
//	AnonMount.mu  guards an AnonMount's count of open files and its
//	              internal mount.
//
// treeMu, File.mu and Proc.mu are leaves and are never held while
// filesystem (module) code runs. Three locks are, each only around the
// filesystem call that needs it: mpMu around the lookup, stat and the
// Rmdir, Unlink or Rename of a name that may be a mount point, and around
// the stat of a mount target (is it still there?); File.wmu around the
// filesystem calls of a Write (WriteAt or Append, and the stat that finds
// the end of an O_APPEND file without Append; Linux's f_pos_lock); and
// AnonMount.mu around the creation of the internal mount when the first
// anonymous file opens (the filesystem type's Acquire from the host,
// FileSystemType.Mount, Superblock.Root, a stat of the root and, if one
// fails, Superblock.Release and the Binding's release). Apart from that
// creation, no VFS lock is held when the VFS calls into the host (Acquire,
// Request) or drops the last reference of a superblock (Superblock.Release,
// then the module reference). Reference counts (Mount.refs,
// superblock.mounts) are atomic.
//
// Hence filesystem code must not, while serving one of those calls, make a
// mount, bind, move, umount, rmdir, unlink or rename in any namespace
// (mpMu is shared by all), Write to the File it is writing for, or open an
// anonymous file of the AnonMount whose internal mount it is creating; any
// other VFS call (lookups, reads, Namespace.Mounts) is fine.
//
// # Caveats
//
//   - In process there are no permission checks (see "Permissions").
//   - MNT_FORCE is a plain umount.
//   - Mount propagation (shared/slave mounts), pivot_root and mount
//     namespaces cloning are not implemented.
//   - Opening a named pipe, socket or device node in process is ENXIO
//     unless the filesystem opens it (ramfs does not); through FUSE the
//     kernel opens them itself.
//   - No extended attributes, fallocate, O_TMPFILE, file locks or rename
//     flags (RENAME_NOREPLACE, RENAME_EXCHANGE: EINVAL).
//   - docs/vfs.md lists every difference from Linux, with its reason.
package vfs
