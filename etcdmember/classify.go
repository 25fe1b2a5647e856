package etcdmember

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// kind is what an RPC error means for the caller's next step. Every etcd
// error this package acts on is classified here, and only here. No kind is
// ever taken as the outcome of a membership change: after any error the
// member list is read again and decides.
type kind int

const (
	// kindTransient: retry after re-reading the member list (unavailable,
	// timed out, no leader, leader changed, connection lost, ...).
	kindTransient kind = iota
	// kindPermanent: stop at once and return the error (permission
	// denied, invalid argument, authentication, cluster ID mismatch, ...).
	kindPermanent
	// kindCanceled: the caller's context ended.
	kindCanceled
	// kindMemberNotFound: etcd says the member does not exist.
	kindMemberNotFound
	// kindNotLearner: "can only promote a learner member". Ambiguous: the
	// member may have been promoted a moment ago.
	kindNotLearner
	// kindLearnerNotReady: "can only promote a learner member which is in
	// sync with leader". Also ambiguous: some etcd versions answer it for a
	// member that was promoted a moment ago.
	kindLearnerNotReady
	// kindTooManyLearners: the cluster's learner limit is reached.
	kindTooManyLearners
	// kindPeerURLExists: a member with that peer URL exists already.
	kindPeerURLExists
	// kindReconfigRefused: etcd's strict reconfiguration check refused
	// (not enough started members; unhealthy cluster). For a remove this
	// means quorum would be lost; for an add or promote it is transient.
	kindReconfigRefused
)

func (k kind) String() string {
	switch k {
	case kindTransient:
		return "transient"
	case kindPermanent:
		return "permanent"
	case kindCanceled:
		return "canceled"
	case kindMemberNotFound:
		return "member not found"
	case kindNotLearner:
		return "not a learner"
	case kindLearnerNotReady:
		return "learner not ready"
	case kindTooManyLearners:
		return "too many learners"
	case kindPeerURLExists:
		return "peer URL exists"
	case kindReconfigRefused:
		return "reconfiguration refused"
	}
	return "unknown"
}

// classify says what err, returned by an RPC made under ctx (the caller's
// context, not the per-RPC one), means. etcd's errors arrive as gRPC
// statuses or as the client's rpctypes.EtcdError values; rpctypes.Error
// maps both (and etcd's bare error strings) to the exported rpctypes
// values compared here. An error that is none of these, nor a context
// error, was raised by the client library before anything was sent (a
// request it rejects locally, a bad configuration): permanent, because
// sending it again would fail again.
func classify(ctx context.Context, err error) kind {
	if err == nil {
		return kindTransient // not called with nil; harmless
	}
	if ctx.Err() != nil {
		return kindCanceled
	}
	if errors.Is(err, ErrClientClosed) {
		return kindPermanent
	}
	e := etcdError(err)
	switch {
	case errors.Is(e, rpctypes.ErrMemberNotFound):
		return kindMemberNotFound
	case errors.Is(e, rpctypes.ErrMemberNotLearner):
		return kindNotLearner
	case errors.Is(e, rpctypes.ErrMemberLearnerNotReady):
		return kindLearnerNotReady
	case errors.Is(e, rpctypes.ErrTooManyLearners):
		return kindTooManyLearners
	case errors.Is(e, rpctypes.ErrPeerURLExist):
		return kindPeerURLExists
	case errors.Is(e, rpctypes.ErrMemberNotEnoughStarted), errors.Is(e, rpctypes.ErrUnhealthy):
		return kindReconfigRefused
	case errors.Is(e, errNotForLearner):
		// Sent to a learner's client URL, which refused it before doing
		// anything; another endpoint may take it.
		return kindTransient
	case errors.Is(e, rpctypes.ErrNotLeader), errors.Is(e, rpctypes.ErrNoLeader),
		errors.Is(e, rpctypes.ErrLeaderChanged), errors.Is(e, rpctypes.ErrStopped),
		errors.Is(e, rpctypes.ErrTimeout), errors.Is(e, rpctypes.ErrTimeoutDueToLeaderFail),
		errors.Is(e, rpctypes.ErrTimeoutDueToConnectionLost), errors.Is(e, rpctypes.ErrTooManyRequests):
		return kindTransient
	case errors.Is(e, rpctypes.ErrPermissionDenied), errors.Is(e, rpctypes.ErrAuthFailed),
		errors.Is(e, rpctypes.ErrInvalidAuthToken), errors.Is(e, rpctypes.ErrMemberBadURLs),
		errors.Is(e, rpctypes.ErrMemberExist), errors.Is(e, rpctypes.ErrClusterIDMismatch),
		errors.Is(e, rpctypes.ErrBadLeaderTransferee), errors.Is(e, rpctypes.ErrNotCapable):
		return kindPermanent
	}
	// The per-RPC timeout (the caller's ctx is still live).
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return kindTransient
	}
	c, ok := code(e)
	if !ok {
		return kindPermanent // raised by the client library: nothing was sent
	}
	switch c {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted,
		codes.ResourceExhausted, codes.Internal, codes.Unknown:
		// Canceled with a live caller context: the connection was closed
		// under the call. Unknown/Internal: a transport hiccup or a server
		// error without a code; the member list will tell.
		return kindTransient
	}
	// PermissionDenied, Unauthenticated, InvalidArgument, NotFound,
	// AlreadyExists, OutOfRange, Unimplemented, FailedPrecondition,
	// DataLoss, OK (a status error with OK makes no sense).
	return kindPermanent
}

// etcdError returns the innermost etcd or gRPC error of err as an
// rpctypes value where etcd has one, else err.
func etcdError(err error) error {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee
	}
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		if inner, ok := gs.(error); ok {
			return rpctypes.Error(inner)
		}
	}
	return rpctypes.Error(err)
}

// code returns the gRPC code of an etcd or gRPC error, and false for an
// error that is neither.
func code(err error) (codes.Code, bool) {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code(), true
	}
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) && gs.GRPCStatus() != nil {
		return gs.GRPCStatus().Code(), true
	}
	return codes.Unknown, false
}
