package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// Membership RPCs do not go through the client's shared, load-balanced
// connection: clientv3 sends every call with grpc.WaitForReady(true), so a
// call routed to a dead member waits for its whole timeout (Talos #14097),
// and a call routed to a learner's client URL is refused ("rpc not
// supported for learner"). Instead each Manager call dials the endpoints it
// needs on connections of its own (closed when it returns), sends each RPC
// with grpc.WaitForReady(false) to an endpoint that is connected, and tries
// the client's endpoints in order: those that answered first, those that
// failed to connect recently after them, learners' client URLs last.

// failFast makes an RPC fail at once, instead of waiting, when its
// connection is not ready.
var failFast = grpc.WaitForReady(false)

// failMemory is how long an endpoint that could not be connected to is
// tried after the others.
const failMemory = time.Minute

// endpointNote is what the Manager remembers of one endpoint (keyed by
// host:port) between calls.
type endpointNote struct {
	failedAt time.Time // last failure to connect; zero once it answered
	learner  bool      // a learner's client URL, per the last member list or its status
	known    bool      // learner is known (from a member list or a status)
}

// endpointKey is host:port of an endpoint or client URL, in lower case.
func endpointKey(ep string) string {
	if _, rest, ok := strings.Cut(ep, "://"); ok {
		ep = rest
	}
	return strings.ToLower(strings.TrimSuffix(ep, "/"))
}

// endpoints returns the client's endpoints in the order membership RPCs
// try them.
func (c *call) endpoints() []string {
	eps := c.m.cl.Endpoints()
	now := time.Now()
	c.m.mu.Lock()
	rank := make(map[string]int, len(eps))
	for _, ep := range eps {
		n := c.m.eps[endpointKey(ep)]
		r := 0
		if !n.failedAt.IsZero() && now.Sub(n.failedAt) < failMemory {
			r = 1
		}
		if n.learner {
			r = 2
		}
		rank[ep] = r
	}
	c.m.mu.Unlock()
	slices.SortStableFunc(eps, func(a, b string) int { return rank[a] - rank[b] })
	return eps
}

// note records the outcome of reaching an endpoint.
func (m *Manager) note(ep string, failed bool, learner *bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := endpointKey(ep)
	n := m.eps[k]
	if failed {
		n.failedAt = time.Now()
	} else {
		n.failedAt = time.Time{}
	}
	if learner != nil {
		n.learner, n.known = *learner, true
	}
	m.eps[k] = n
}

// role returns what the Manager knows of ep: whether it is a learner's,
// and whether that is known at all.
func (m *Manager) role(ep string) (learner, known bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.eps[endpointKey(ep)]
	return n.learner, n.known
}

// noteMembers records which client URLs are learners'.
func (m *Manager) noteMembers(members []Member) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, mem := range members {
		for _, u := range mem.ClientURLs {
			k := endpointKey(u)
			n := m.eps[k]
			n.learner, n.known = mem.IsLearner, true
			m.eps[k] = n
		}
	}
}

// errNotForLearner is etcd's refusal of an RPC sent to a learner.
var errNotForLearner = rpctypes.Error(rpctypes.ErrGRPCNotSupportedForLearner)

// cluster sends one Cluster RPC through the first endpoint that is
// connected and is not a learner: an endpoint that cannot be connected to
// (nothing was sent) or that refuses because it is a learner (nothing was
// applied) is skipped for the next. So is one that fails a read (readOnly)
// with a transient error (e.g. a removed member's "server stopped"); a
// change that fails that way returns its error, to be decided from the
// member list, and the endpoint is tried after the others next time. Any
// other outcome — success, an etcd error — is the RPC's. When no endpoint
// could take it, the error is a gRPC Unavailable status naming each
// endpoint's failure.
func (c *call) cluster(ctx context.Context, readOnly bool, rpc func(context.Context, pb.ClusterClient) error) error {
	return c.voter(ctx, readOnly, func(ctx context.Context, conn *grpc.ClientConn) error {
		return rpc(ctx, pb.NewClusterClient(conn))
	})
}

// voter is cluster for any RPC a learner refuses (a Cluster RPC, a
// LeaseGrant): rpc gets the connection to the endpoint chosen.
func (c *call) voter(ctx context.Context, readOnly bool, rpc func(context.Context, *grpc.ClientConn) error) error {
	if err := c.closed(); err != nil {
		return err
	}
	var errs []string
	eps := c.endpoints()
	for _, ep := range eps {
		conn, err := c.ready(ctx, ep)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, ErrClientClosed) {
				return err
			}
			c.m.note(ep, true, nil)
			errs = append(errs, err.Error())
			continue
		}
		if learner, known := c.m.role(ep); len(eps) > 1 && (!known || learner) {
			// A learner refuses Cluster RPCs, and clientv3's retry
			// interceptor retries that refusal on the same connection up
			// to 100 times when the client has several endpoints: ask an
			// endpoint of unknown role, or a learner's that may have been
			// promoted since, first (Status is served by learners too).
			rctx, cancel := context.WithTimeout(ctx, min(c.m.opt.rpcTimeout, statusTimeout))
			st, serr := pb.NewMaintenanceClient(conn).Status(rctx, &pb.StatusRequest{}, failFast)
			cancel()
			if serr == nil && st != nil {
				learner = st.IsLearner
				c.m.note(ep, false, &learner)
			}
			if learner {
				errs = append(errs, fmt.Sprintf("%s: a learner's endpoint", ep))
				continue
			}
		}
		rctx, cancel := c.m.rpcCtx(ctx)
		err = clientv3.ContextError(rctx, rpc(rctx, conn))
		cancel()
		switch {
		case err == nil:
			c.m.note(ep, false, nil)
			return nil
		case errors.Is(err, errNotForLearner):
			learner := true
			c.m.note(ep, false, &learner)
			errs = append(errs, fmt.Sprintf("%s: %v", ep, err))
			continue
		case classify(ctx, err) == kindTransient:
			c.m.note(ep, true, nil)
			if readOnly {
				errs = append(errs, fmt.Sprintf("%s: %v", ep, err))
				continue
			}
		default:
			c.m.note(ep, false, nil)
		}
		return err
	}
	return status.Errorf(codes.Unavailable, "no endpoint of the etcd client took the request: %s", strings.Join(errs, "; "))
}

// status asks one member for its status on each of its client URLs in
// turn, returning the first answer.
func (c *call) status(ctx context.Context, urls []string) (*pb.StatusResponse, error) {
	if err := c.closed(); err != nil {
		return nil, err
	}
	err := errors.New("no client URLs")
	timeout := min(c.m.opt.rpcTimeout, statusTimeout)
	for _, u := range urls {
		conn, cerr := c.ready(ctx, u)
		if cerr != nil {
			err = cerr
			if ctx.Err() != nil || errors.Is(cerr, ErrClientClosed) {
				break
			}
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		st, serr := pb.NewMaintenanceClient(conn).Status(rctx, &pb.StatusRequest{}, failFast)
		serr = clientv3.ContextError(rctx, serr)
		cancel()
		if serr == nil && st != nil {
			return st, nil
		}
		if serr == nil {
			serr = errors.New("empty status response")
		}
		err = fmt.Errorf("status of %s: %w", u, serr)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

// ready returns this call's connection to ep once it is connected, waiting
// at most the connect timeout. A connection that fails is closed, so the
// next attempt dials afresh instead of waiting out gRPC's reconnect
// backoff.
func (c *call) ready(ctx context.Context, ep string) (*grpc.ClientConn, error) {
	if err := c.closed(); err != nil {
		return nil, err
	}
	conn, err := c.conn(ep)
	if err != nil {
		return nil, err
	}
	timeout := min(c.m.opt.rpcTimeout, statusTimeout)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		s := conn.GetState()
		switch s {
		case connectivity.Ready:
			return conn, nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			c.drop(ep)
			return nil, fmt.Errorf("%s: cannot connect", ep)
		case connectivity.Idle:
			conn.Connect()
		}
		if !conn.WaitForStateChange(wctx, s) {
			c.drop(ep)
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s: connecting: %w", ep, ctx.Err())
			}
			return nil, fmt.Errorf("%s: not connected within %s", ep, timeout)
		}
	}
}

// conn returns this call's connection to ep, dialing it (with the
// client's TLS and credentials) the first time.
func (c *call) conn(ep string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conn, ok := c.conns[ep]; ok {
		return conn, nil
	}
	if err := c.closed(); err != nil {
		return nil, err
	}
	conn, err := c.m.cl.Dial(ep)
	if err != nil {
		return nil, fmt.Errorf("%s: dial: %w", ep, err)
	}
	c.conns[ep] = conn
	return conn, nil
}

// drop closes this call's connection to ep.
func (c *call) drop(ep string) {
	c.mu.Lock()
	conn := c.conns[ep]
	delete(c.conns, ep)
	c.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
}

// closeConns closes every connection this call dialed.
func (c *call) closeConns() {
	c.mu.Lock()
	conns := c.conns
	c.conns = map[string]*grpc.ClientConn{}
	c.mu.Unlock()
	for _, conn := range conns {
		_ = conn.Close()
	}
}

// closed returns an error wrapping ErrClientClosed once the Manager's
// client has been closed: the call sends no further RPC and dials nothing
// (the client's Dial still works after Close).
func (c *call) closed() error {
	if c.m.cl.Ctx().Err() != nil {
		return fmt.Errorf("etcdmember: %w", ErrClientClosed)
	}
	return nil
}
