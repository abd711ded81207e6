package raceless

// State is where an instance is in its lifecycle. The only transitions are
//
//	coming ──Init ok──▶ live ──Unload──▶ going ──Exit ok──▶ gone
//	   │                  ▲                │
//	   │                  └──refused───────┘   (busy, Exit refused, cancelled wait)
//	   └──Init failed──▶ going ──grace, own refs drained──▶ gone
//
// checked by (*Host).setState.
type State int32

// The lifecycle states.
const (
	StateComing State = iota // Init running; no reference from outside; registrations staged
	StateLive                // registrations published; references taken
	StateGoing               // unloading (or failed init): no new reference, nothing new enters
	StateGone                // torn down; the instance is a tombstone, every op fails with ErrGone
)

func (s State) String() string {
	switch s {
	case StateComing:
		return "coming"
	case StateLive:
		return "live"
	case StateGoing:
		return "going"
	case StateGone:
		return "gone"
	}
	return "invalid"
}

// validTransition is the state machine above.
func validTransition(from, to State) bool {
	switch from {
	case StateComing:
		return to == StateLive || to == StateGoing
	case StateLive:
		return to == StateGoing
	case StateGoing:
		return to == StateLive || to == StateGone
	}
	return false
}
