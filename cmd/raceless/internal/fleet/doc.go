// Package fleet runs a fleet of raceless hosts from one desired state kept
// in etcd: the operator's side (Set: upload the module files, write the
// desired state, drive the rollout; ReadStatus), the host's side (Agent:
// follow the fleet, fetch and verify module files, reconcile the daemon,
// report through a lease), and a single-node etcd for trying it
// (StartEtcd). docs/fleet.md argues every choice; this comment states the
// invariants the code keeps.
//
// Key layout, under Prefix + FLEET + "/":
//
//	desired               Document: the newest generation written (fleet set)
//	states/GEN            Document of generation GEN (immutable once written)
//	stable                GEN every host runs unless assigned another
//	node/HOST/assign      GEN the rollout assigns HOST (canary, batches)
//	node/HOST/drain       present: HOST drains (runs nothing, unloads with wait)
//	hosts/HOST            HostStatus, attached to HOST's lease
//	rollout               RolloutState of the last rollout
//	controller            present while a rollout's controller is alive (its lease)
//	blobs/sha256/HEX/N    chunk N (%06d) of the file whose sha256 is HEX
//	blobs/sha256/HEX/manifest  written after every chunk: size and chunk count
//
// Invariants:
//
//   - A generation's Document is written once, in the same transaction as
//     desired, and never changed: a host that reads states/GEN reads what
//     the operator wrote, whole, or nothing.
//   - desired is only written by a transaction that compares its mod
//     revision with the one its writer read and that finds no live
//     controller: of two operators writing at once, one wins and the other
//     gets ErrConflict (or ErrRolloutInProgress), with nothing written.
//   - A blob's manifest is written after all its chunks: a reader that
//     finds the manifest finds every chunk. Every reader checks the sha256
//     of the bytes it assembled against the key (ErrDigestMismatch), and
//     the daemon checks it again before loading.
//   - A host's target generation is node/HOST/assign if present, else
//     stable; with neither the host touches nothing. A host never acts on
//     a Document whose files it could not fetch and verify: it keeps what
//     it runs and reports why.
//   - A host's status lives and dies with its lease: a host that stops
//     renewing (killed, cut off) disappears from hosts/ within its TTL,
//     and the rollout stops waiting for it.
//   - While etcd cannot be reached a host changes nothing; when it can
//     again, the host reads the latest revision once and reconciles only
//     if its target generation changed (no flapping).
//   - stable only moves forward at the end of a successful rollout; a
//     failed rollout deletes the assignments it made, which returns every
//     host it touched to stable.
package fleet

import (
	"errors"

	"github.com/raceless/raceless"
)

// Prefix is where every fleet's keys live.
const Prefix = "/raceless/fleets/"

// fleetError is a sentinel that also belongs to one of the core's classes
// (control.Classes), so that the command line's exit status follows it.
type fleetError struct {
	msg   string
	class error
}

func (e *fleetError) Error() string        { return e.msg }
func (e *fleetError) Is(target error) bool { return target == e.class }

// Errors. Each is returned wrapped with the name at fault (the fleet, the
// host, the file, the digest).
var (
	// ErrInvalid is returned for a bad argument: a fleet or host name
	// that is not a name, a state whose module has neither name nor file.
	ErrInvalid error = &fleetError{"invalid", raceless.ErrInvalid}
	// ErrConflict is returned when another writer changed the desired
	// state between this writer's read and its write: nothing was
	// written; read the new state and write again.
	ErrConflict error = &fleetError{"the desired state was changed by another writer", raceless.ErrBusy}
	// ErrRolloutInProgress is returned when a rollout whose controller
	// is alive holds the fleet.
	ErrRolloutInProgress error = &fleetError{"a rollout is in progress", raceless.ErrBusy}
	// ErrDigestMismatch is returned when bytes do not hash to the digest
	// that names them.
	ErrDigestMismatch error = &fleetError{"digest mismatch", raceless.ErrInvalid}
	// ErrBlobMissing is returned when no complete blob has the digest.
	ErrBlobMissing error = &fleetError{"no such blob", raceless.ErrNotFound}
	// ErrNoHost is returned when a named host is not in the fleet.
	ErrNoHost error = &fleetError{"no such live host", raceless.ErrNotFound}
	// ErrRolloutFailed is returned when a rollout's check failed: the
	// hosts it had updated were returned to the previous generation.
	ErrRolloutFailed = errors.New("rollout failed")
	// ErrUnreachable is returned when etcd cannot be reached.
	ErrUnreachable = errors.New("etcd unreachable")
)
