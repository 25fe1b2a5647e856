package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The replication check. A learner that answers a status request on its
// client URL may still be cut off from the leader: its raft peer links
// down while its client URL answers. Its applied index then stands still
// — at the leader's own index in an idle cluster, or within 90 % of a
// large one — and etcd's own readiness check, which compares indices,
// would let it be promoted: a cluster of one voter is then left with two
// voters, one of which receives nothing, and loses its quorum. So before
// a promotion the learner must show that it receives raft entries now: a
// fresh entry is created, the leader's index read after it, and the
// learner must apply up to that index, read on its own client URL, within
// the RPC timeout.

// replicationLeaseTTL is the TTL of the lease the check grants (and then
// revokes) to create its raft entry, in seconds. A lease whose revoke
// failed expires by itself that soon (etcd raises a TTL below its minimum,
// about 1.5 election timeouts, to that minimum).
const replicationLeaseTTL = 5

// Pauses between the check's status requests to the learner: the first
// after replicationPollFirst, doubling up to replicationPollMax.
const (
	replicationPollFirst = time.Millisecond
	replicationPollMax   = 100 * time.Millisecond
)

// checkReplication runs the replication check for learner on p, a reading
// in which learner answered on its client URL close to the leader's
// index: it creates a raft entry (LeaseGrant to a voter; the lease is
// revoked while the check goes on), reads the leader's status after it,
// and reads the learner's status until its applied index reaches the
// leader's raft index, for at most the RPC timeout. It returns once the
// revoke has ended too. It records the outcome in p (ReplicationChecked,
// ReplicationIndex, Replicating, the leader's and the learner's latest
// indices, Reachable, Err). It returns an error only when the entry cannot
// be created for a permanent reason (e.g. permission denied); what is
// transient, or ctx ending, leaves p not replicating and is the caller's
// to handle.
func (c *call) checkReplication(ctx context.Context, members []Member, learner Member, p *Progress) error {
	log := c.log.WithValues("id", hex(learner.ID))
	lease, err := c.grantLease(ctx)
	if err == nil {
		// Revoked while the check goes on: the revoke is best effort and
		// need not be in the index the learner must reach.
		revoked := make(chan struct{})
		go func() {
			defer close(revoked)
			c.revokeLease(ctx, log, lease)
		}()
		defer func() { <-revoked }()
	}
	if err != nil {
		if classify(ctx, err) == kindPermanent {
			return fmt.Errorf("etcdmember: promote learner %x: creating a raft entry to check that it replicates: %w", learner.ID, err)
		}
		p.Err = errors.Join(p.Err, fmt.Errorf("replication check: creating a raft entry: %w", err))
		return nil
	}
	id, st, err := c.leader(ctx, members, p.LeaderID)
	if err != nil {
		p.Err = errors.Join(p.Err, fmt.Errorf("replication check: %w", err))
		return nil
	}
	p.LeaderID, p.LeaderApplied, p.LeaderKnown = id, st.RaftAppliedIndex, true
	p.ReplicationIndex, p.ReplicationChecked = max(st.RaftIndex, st.RaftAppliedIndex), true

	deadline := time.Now().Add(c.m.opt.rpcTimeout)
	pause := replicationPollFirst
	for {
		ls, err := c.status(ctx, learner.ClientURLs)
		if err != nil {
			p.Reachable, p.LearnerApplied = false, 0
			p.Err = errors.Join(p.Err, fmt.Errorf("learner %x unreachable: %w", learner.ID, err))
			return nil
		}
		p.LearnerApplied = ls.RaftAppliedIndex
		if ls.RaftAppliedIndex >= p.ReplicationIndex {
			p.Replicating = true
			return nil
		}
		if time.Until(deadline) < pause {
			log.V(1).Info("learner did not apply a fresh raft entry within the RPC timeout: not receiving raft entries",
				"learnerApplied", ls.RaftAppliedIndex, "target", p.ReplicationIndex, "timeout", c.m.opt.rpcTimeout)
			return nil
		}
		if !c.pause(ctx, pause) {
			return nil
		}
		pause = min(2*pause, replicationPollMax)
	}
}

// grantLease creates a raft entry that needs no keyspace permission: it
// grants a short-lived lease through a voter and returns its ID.
func (c *call) grantLease(ctx context.Context) (int64, error) {
	var lease int64
	err := c.voter(ctx, false, func(ctx context.Context, conn *grpc.ClientConn) error {
		resp, err := pb.NewLeaseClient(conn).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: replicationLeaseTTL}, failFast)
		switch {
		case err != nil:
			return err
		case resp == nil:
			return status.Error(codes.Internal, "empty LeaseGrant response")
		case resp.Error != "":
			return status.Error(codes.Unavailable, resp.Error)
		}
		lease = resp.ID
		return nil
	})
	return lease, err
}

// revokeLease revokes the check's lease, best effort: a lease whose revoke
// fails expires within replicationLeaseTTL. It runs in a goroutine of its
// own, so a panic in the client's interceptors (the caller's code) is
// recovered and logged as a failed revoke.
func (c *call) revokeLease(ctx context.Context, log logr.Logger, lease int64) {
	var err error
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("recovered panic in the etcd client's interceptors: %v", r)
		}
		if err != nil {
			log.V(1).Info("could not revoke the replication check's lease; it expires by itself", "lease", fmt.Sprintf("%x", lease), "ttl", replicationLeaseTTL, "err", err)
		}
	}()
	err = c.voter(ctx, false, func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := pb.NewLeaseClient(conn).LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: lease}, failFast)
		return err
	})
}

// pause waits d; it returns false when ctx ends or the client is closed
// first.
func (c *call) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-c.m.cl.Ctx().Done():
		return false
	}
}
