// Package torture is raceless's torture test, in the spirit of the Linux
// kernel's rcutorture: it runs one Host and, from several goroutines at
// once, random loads and unloads (plain, waiting, forced), hot swaps
// (Host.Replace), demand requests,
// autoclean sweeps, symbol calls through Bindings, hook calls, registry
// lookups and lsmod-style inspection, and VFS operations (mount, umount,
// lazy umount, move, bind, open, read, stat, close on filesystem types the
// test modules register) and HTTP requests to the routes they register
// (package web's Router, called directly and from a loopback server),
// across a set of native test modules
// whose Init and Exit succeed, fail, refuse, panic or block at random
// points. It checks invariants continuously and at the end, and returns a
// Report naming every violation with the seed of the run.
//
// # Memory
//
// A run keeps only what it has yet to check, so it can run for any length
// (10⁸ operations and more) in flat memory. Each test module instance is
// checked as soon as it is gone and its references are all put (the
// count of a dead reference is exact, and nothing can take one any more),
// with the checks every instance got at the end before; then the run
// forgets it. The instances still alive, or still referenced, when the
// workers stop are checked at the end, after Shutdown. Everything else the
// run keeps is bounded: counters per operation kind and outcome, at most
// maxDetails messages, and the namespace's mounts (about maxMounts: see
// makeRoom). Report.RetainedPeak and RetainedEnd count the instances held,
// HeapStart, HeapEnd and HeapPeak the live heap. The host's own taint list
// (Host.Taints) still grows by a line per forced unload.
//
// # What is checked
//
// Every test module instance (a *tmod) keeps its own phase
// (new → initing → live ⇄ exiting → exited, or initing → init-failed),
// poisons itself when its Exit succeeds, and checks its phase on every entry
// into its code. The kinds of violation (Report.ByKind keys) are:
//
//   - call-after-exit: a symbol call entered module code while its Exit ran
//     or after it succeeded, with no forced unload of that instance;
//   - call-while-stopped: a symbol call entered between Stop and Exit (or
//     Start again) with no forced unload;
//   - route-after-exit, route-while-stopped: the same for a route's
//     handler, checked on entry and after its wait (http.go);
//   - http: an answer other than 200 "ok", 404 or 503, or a response cut
//     off with no Router.Abort begun while the request ran;
//   - hook-after-exit: a hook ran while or after Exit ran. Hooks are
//     non-counting: even a forced unload unpublishes them and waits a
//     grace period before Exit, so this holds with force too;
//   - unprotected-call: module code other than a call (Size) ran while
//     Exit ran or after;
//   - fs-after-exit: a filesystem method (Mount, a superblock's Root or
//     Release, a node's Lookup/Stat/ReadDir/Open, a handle's ReadAt or
//     Release) ran while or after Exit ran, with no forced unload: open
//     files and mounts pin the module through their superblock;
//   - fs: the VFS broke its own contract (a superblock or handle released
//     twice, a read returning foreign data, a mount left after every
//     mount point was detached, Close failing);
//   - visible-never-live: a registration of an instance whose Init failed,
//     or was still running, was seen (Acquire, Lookup, a call, a hook);
//   - stale-registration: Lookup returned a registration of an instance
//     whose Exit had begun before the lookup started and succeeded;
//   - exit-with-ref: a non-forced Stop or Exit ran while a torture worker
//     held a Binding on the instance, a call was inside it, or one of its
//     superblocks was alive;
//   - dep-on-going: an Init's Import succeeded, yet the exporter is not
//     live: a dependency (a holder, with its reference) taken on a module
//     that had already begun unloading, which then waits for it;
//   - reservation-leak: a Register in Init failed with ErrExists although
//     no other instance of that module can exist (a failed or unloaded
//     instance's reservation was not dropped);
//   - ref-underflow: Host.Underflows() is not zero (a Put without a Get);
//   - refs-at-end: after every worker released everything and every
//     mount was detached, a module has references beyond its dependency
//     edges, a superblock or handle is still alive, or Shutdown had to
//     force;
//   - exit-count: an instance that went live was not exited exactly as
//     often as it should (none at the end, or a second successful Exit), or
//     an instance whose Init failed saw Exit, or Init ran twice;
//   - hang: an operation waited until its watchdog deadline (a waiter that
//     was never woken); every wait has such a deadline (Options.OpTimeout),
//     distinct from the random cancellations the run injects;
//   - stuck: a worker did not come back at all (a wait that ignores its
//     context);
//   - goroutine-leak: goroutines started during the run are still there at
//     the end;
//   - panic: any panic that reached the torture code;
//   - api: an operation's result contradicts the API (Unload returned nil
//     and the instance is not gone, a stale instance's symbol was found,
//     Load returned an instance whose Init did not succeed, ...).
//
// # Forced unloads
//
// A forced unload legitimately lets holders of old Bindings call into an
// instance whose Exit has run (for native modules the code stays; only the
// state is torn down). Such calls are counted in Report.Events under
// "forced-stale-call" ("forced-stale-fs" for filesystem methods reached
// through a superblock that outlived the forced unload) and are not
// violations: the module learns it was
// forced from the "forced unload" taint the host sets on the instance
// before Stop and Exit.
//
// # Reproduction
//
// Worker i draws its operations from a math/rand/v2 PCG source seeded with
// (Seed, i), and each module instance draws its behaviour from (Seed,
// module, serial): the same seed replays the same operation streams. The
// interleaving is the scheduler's, so a seed reproduces a failure
// statistically, not exactly; run it again with a longer Duration.
package torture
