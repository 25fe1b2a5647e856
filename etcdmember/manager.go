package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Manager changes etcd cluster membership through one client, deciding
// every step from the member list rather than from RPC errors. Its methods
// are safe for concurrent use; it runs nothing in the background, and
// every method returns only when the RPCs, connections and goroutines it
// started have ended. It does not close the client.
//
// A nil or zero Manager (not made by New) is not usable: its methods
// return an error wrapping ErrInvalidArgument, as does every method given
// a nil ctx. Once the client has been closed, every method returns an
// error wrapping ErrClientClosed before sending any RPC, and a call that
// is running then sends no further RPC (each fails with ErrClientClosed,
// and so does a wait between attempts).
type Manager struct {
	cl  *clientv3.Client
	opt options

	mu sync.Mutex
	// stalls tracks, across PromoteReady passes, when each learner's
	// applied index last advanced.
	stalls map[uint64]*stallClock
	// eps is what the Manager learned about the client's endpoints (by
	// host:port): which failed to connect recently, which are learners.
	eps map[string]endpointNote
}

// New returns a Manager that uses cl for every RPC. Membership RPCs go to
// cl's endpoints, which should include voting members (a learner serves
// no member list); the Manager tries them in turn, skipping one it cannot
// connect to within a second and one that is a learner, each on a
// connection of its own with cl's TLS and credentials, so that a dead
// endpoint does not hold up a call. It reads members' status on their
// advertised client URLs the same way. A nil cl (typed or not), a client
// not made by clientv3.New, or a bad option is an error wrapping
// ErrInvalidArgument; a client already closed is an error wrapping
// ErrClientClosed. New sends no RPC.
func New(cl *clientv3.Client, opts ...Option) (*Manager, error) {
	if cl == nil {
		return nil, invalid("nil etcd client")
	}
	if cl.Ctx() == nil || cl.ActiveConnection() == nil || len(cl.Endpoints()) == 0 {
		return nil, invalid("New: etcd client cl was not made by clientv3.New (no context, connection or endpoints)")
	}
	if cl.Ctx().Err() != nil {
		return nil, fmt.Errorf("etcdmember: New: %w", ErrClientClosed)
	}
	o := defaultOptions()
	for i, opt := range opts {
		if opt == nil {
			return nil, invalid("New: option %d (opts[%d]) is nil", i, i)
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	return &Manager{cl: cl, opt: o, stalls: map[uint64]*stallClock{}, eps: map[string]endpointNote{}}, nil
}

// rpcCtx bounds one RPC.
func (m *Manager) rpcCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, m.opt.rpcTimeout)
}

// list reads the member list (linearizable: served through the leader).
func (c *call) list(ctx context.Context) ([]Member, error) {
	var resp *pb.MemberListResponse
	err := c.cluster(ctx, true, func(ctx context.Context, cc pb.ClusterClient) error {
		var err error
		resp, err = cc.MemberList(ctx, &pb.MemberListRequest{Linearizable: true}, failFast)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	if resp == nil {
		return nil, fmt.Errorf("list members: %w", status.Error(codes.Internal, "empty response"))
	}
	members := fromPB(resp.Members)
	c.m.noteMembers(members)
	return members, nil
}

// listOrWait reads the member list. On a transient error it logs it and
// waits for b's next interval, returning ok=false so that the caller's
// loop starts over; a permanent error, a closed client or the end of ctx
// is returned, naming what and the pending state.
func (c *call) listOrWait(ctx context.Context, b *retry, log *stateLog, what string, pending *string) (members []Member, ok bool, err error) {
	members, err = c.list(ctx)
	if err == nil {
		return members, true, nil
	}
	if k := classify(ctx, err); k == kindPermanent || k == kindCanceled {
		return nil, false, stop(ctx, k, what, *pending, err)
	}
	*pending = fmt.Sprintf("reading the member list (last error: %v)", err)
	log.info("list-error", "cannot read the member list; retrying", "err", err)
	return nil, false, c.wait(ctx, b, what, *pending)
}

// stop turns a permanent or canceled error into the call's error.
func stop(ctx context.Context, k kind, what, pending string, err error) error {
	if k == kindCanceled {
		return canceled(ctx, what, pending)
	}
	return fmt.Errorf("etcdmember: %s: %w", what, err)
}

// wait sleeps for b's next interval (at least MinRetryInterval). It
// returns an error naming what (the operation) and pending (what was still
// outstanding) when ctx ends, when the client is closed, when b gives up,
// or when b panics.
func (c *call) wait(ctx context.Context, b *retry, what, pending string) error {
	d, err := b.next()
	if err != nil {
		return fmt.Errorf("etcdmember: %s: still %s: %w", what, pending, err)
	}
	if d == backoff.Stop {
		return fmt.Errorf("etcdmember: %s: the backoff policy gave up; still %s", what, pending)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return canceled(ctx, what, pending)
	case <-c.m.cl.Ctx().Done():
		return fmt.Errorf("etcdmember: %s: %w; still %s", what, ErrClientClosed, pending)
	}
	return nil
}

// canceled is the error for a call whose context ended: it names the
// operation and what was still pending, and wraps ctx.Err() (and the
// cause, when one was given).
func canceled(ctx context.Context, what, pending string) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, err) {
		return fmt.Errorf("etcdmember: %s: still %s: %w (%w)", what, pending, err, cause)
	}
	return fmt.Errorf("etcdmember: %s: still %s: %w", what, pending, err)
}

// stateLog logs a message only when the state it describes changes, so a
// wait that repeats the same state logs it once.
type stateLog struct {
	log  logr.Logger
	last string
}

func (s *stateLog) info(state, msg string, kv ...any) {
	if state == s.last {
		s.log.V(1).Info(msg, kv...)
		return
	}
	s.last = state
	s.log.Info(msg, kv...)
}
