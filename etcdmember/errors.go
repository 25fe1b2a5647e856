package etcdmember

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Callers branch on them with errors.Is; the errors that
// wrap them name the member concerned.
var (
	// ErrInvalidArgument: a call was given bad input (a nil client, an
	// empty name, a zero member ID, a malformed peer URL, a nil callback,
	// a bad option). No RPC was sent.
	ErrInvalidArgument = errors.New("invalid argument")

	// ErrMemberNotFound: the member list has no member with the ID asked
	// for. It is permanent: Promote and WaitStarted return it at once.
	ErrMemberNotFound = errors.New("member not found")

	// ErrConflict: AddLearner found a member that clashes with the
	// request. A *ConflictError wrapping it carries both sides.
	ErrConflict = errors.New("member conflict")

	// ErrLearnerStalled: a learner made no progress (its raft applied
	// index did not advance, or it never started) for the stall timeout. A
	// *StalledError wrapping it carries the indices.
	ErrLearnerStalled = errors.New("learner stalled")

	// ErrCallbackPanicked: a function the caller gave the Manager (Join's
	// start function, the WithBackoff factory or its policy, the
	// WithProgress callback, the logger) panicked. The panic was
	// recovered; a *CallbackError wrapping it names the callback.
	ErrCallbackPanicked = errors.New("callback panicked")

	// ErrClientClosed: the etcd client the Manager was made with has been
	// closed (clientv3.Client.Close). A Manager method called after that
	// returns an error wrapping it before sending any RPC; one running
	// when the client is closed sends no further RPC (each fails with
	// it, and so does a wait between attempts).
	ErrClientClosed = errors.New("etcd client is closed")

	// ErrWouldLoseQuorum: Remove refused to remove a voter because the
	// healthy voters left would be short of a quorum, or etcd's own
	// strict reconfiguration check refused it. A *QuorumError wrapping it
	// carries the counts.
	ErrWouldLoseQuorum = errors.New("removal would lose quorum")
)

// ConflictError is AddLearner's error when the member list already has a
// member that clashes with the request: the same peer URL under a different
// name, or the same name with other peer URLs (a stale member, e.g. a node
// that came back with a new address). errors.Is(err, ErrConflict) holds.
type ConflictError struct {
	// Name and PeerURLs are what AddLearner was asked for.
	Name     string
	PeerURLs []string
	// Existing is the member already in the cluster.
	Existing Member
	// SameURL is true when Existing has one of the requested peer URLs
	// (under another name), false when it has the requested name with
	// other peer URLs.
	SameURL bool
}

func (e *ConflictError) Error() string {
	if e.SameURL {
		return fmt.Sprintf("etcdmember: peer URLs %v requested for member %q already belong to member %x named %q",
			e.PeerURLs, e.Name, e.Existing.ID, e.Existing.Name)
	}
	return fmt.Sprintf("etcdmember: member %q already exists as %x with peer URLs %v, not the requested %v",
		e.Name, e.Existing.ID, e.Existing.PeerURLs, e.PeerURLs)
}

// Unwrap returns ErrConflict.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// StalledError is the error of Promote, WaitStarted and Join when a learner
// made no progress for the stall timeout (WithStallTimeout) — including a
// learner that did not answer a status request on its client URL
// (unreachable) for that long, and one that answered but is not receiving
// raft entries (its applied index stands still; the message says "not
// replicating" when the last reading's replication check showed it, see
// Progress.NotReplicating). errors.Is(err, ErrLearnerStalled) holds.
type StalledError struct {
	// Progress is the last reading: the learner's and the leader's raft
	// applied indices (each with whether it could be read at all) and how
	// long the learner's index has not moved.
	Progress Progress
	// Timeout is the stall timeout that passed.
	Timeout time.Duration
}

func (e *StalledError) Error() string {
	return fmt.Sprintf("etcdmember: learner stalled (stall timeout %s): %s", e.Timeout, e.Progress)
}

// Unwrap returns ErrLearnerStalled.
func (e *StalledError) Unwrap() error { return ErrLearnerStalled }

// QuorumError is Remove's error when removing a voter would leave the
// cluster without a quorum of healthy voters. errors.Is(err,
// ErrWouldLoseQuorum) holds, and so does errors.Is(err, Server) when etcd
// itself refused.
type QuorumError struct {
	// ID is the member that was not removed.
	ID uint64
	// Voters is the number of voting members before the removal, Healthy
	// how many of them answered a status request, HealthyAfter how many
	// healthy voters the removal would leave, and Needed the quorum of the
	// voters that would be left. All are zero when only the server refused
	// and this package's count found the removal safe.
	Voters, Healthy, HealthyAfter, Needed int
	// Server is etcd's refusal (its strict reconfiguration check), or nil
	// when this package refused before sending MemberRemove.
	Server error
}

func (e *QuorumError) Error() string {
	if e.Server != nil && e.Voters == 0 {
		return fmt.Sprintf("etcdmember: removing member %x: etcd refused, the cluster would lose quorum: %v", e.ID, e.Server)
	}
	if e.Server != nil {
		return fmt.Sprintf("etcdmember: removing voter %x would leave %d healthy of %d voters, short of a quorum of %d, and etcd refused: %v",
			e.ID, e.HealthyAfter, e.Voters-1, e.Needed, e.Server)
	}
	return fmt.Sprintf("etcdmember: removing voter %x would leave %d healthy of %d voters, short of a quorum of %d (%d of %d voters healthy now)",
		e.ID, e.HealthyAfter, e.Voters-1, e.Needed, e.Healthy, e.Voters)
}

// Unwrap returns ErrWouldLoseQuorum and, when set, Server.
func (e *QuorumError) Unwrap() []error {
	if e.Server != nil {
		return []error{ErrWouldLoseQuorum, e.Server}
	}
	return []error{ErrWouldLoseQuorum}
}

// CallbackError is the error of a call during which a function the caller
// gave (Callback names it) panicked; the panic was recovered.
// errors.Is(err, ErrCallbackPanicked) holds, and so does errors.Is(err,
// v) when the panic value v is an error.
type CallbackError struct {
	// Callback names the function: "start function", "WithBackoff
	// factory", "backoff policy", "WithProgress callback", "logger".
	Callback string
	// Value is what it panicked with; Stack the goroutine's stack then.
	Value any
	Stack []byte
}

func (e *CallbackError) Error() string {
	return fmt.Sprintf("etcdmember: %s panicked: %v", e.Callback, e.Value)
}

// Unwrap returns ErrCallbackPanicked and, when the panic value is an error,
// that error.
func (e *CallbackError) Unwrap() []error {
	if err, ok := e.Value.(error); ok {
		return []error{ErrCallbackPanicked, err}
	}
	return []error{ErrCallbackPanicked}
}

// invalid returns an error wrapping ErrInvalidArgument.
func invalid(format string, args ...any) error {
	return fmt.Errorf("etcdmember: %w: %s", ErrInvalidArgument, fmt.Sprintf(format, args...))
}
