package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// RemoveOptions modify Remove.
type RemoveOptions struct {
	// Force skips this package's quorum check. etcd's own strict
	// reconfiguration check (on by default) still applies: when it
	// refuses, Remove returns a *QuorumError wrapping etcd's error.
	Force bool
}

// RemoveResult says what Remove did.
type RemoveResult struct {
	// ID is the member.
	ID uint64
	// AlreadyAbsent is true when the first member list did not have the
	// member: nothing was sent.
	AlreadyAbsent bool
	// WasLearner is true when the member list showed a learner (false
	// when it showed a voter, or AlreadyAbsent).
	WasLearner bool
	// WasLeader is true when the member was the raft leader (as most
	// voters reported) when Remove checked, and LeaderMoved when
	// MoveLeader then handed leadership to MovedTo before the removal.
	WasLeader   bool
	LeaderMoved bool
	MovedTo     uint64
	// Attempts is the number of MemberRemove RPCs sent.
	Attempts int
	// ConfirmedByList is true when the removal was seen in the member
	// list after a MemberRemove whose reply was an error or was lost
	// (or after someone else removed it), false when the reply said so.
	ConfirmedByList bool
}

// Remove removes the member id and blocks until the member list no longer
// has it. It is idempotent: a member that is not (or no longer) in the
// list is success, and the result says which (AlreadyAbsent).
//
// Removing a voter is refused with a *QuorumError (ErrWouldLoseQuorum),
// before any MemberRemove is sent, when the healthy voters left — those
// that answer Maintenance.Status on their client URLs — would be short of
// a quorum of the voters left; opts.Force skips that check. etcd's own
// strict reconfiguration check may still refuse: when it agrees with this
// package's count, or keeps refusing for ten seconds, that is a
// *QuorumError wrapping etcd's error; shorter refusals (etcd trusts a peer
// only after five seconds of connection, e.g. right after a promotion) are
// waited out. If the member is the raft leader, leadership is first moved
// (MoveLeader) to the healthy voter with the highest applied index, so the
// cluster does not wait out an election (RemoveResult.LeaderMoved); if
// that fails the removal goes ahead (etcd's leader steps down by itself).
// Learners are removed without a check.
//
// After an ambiguous error (timeout, lost reply) it reads the member list
// again and decides from that. etcd drops a membership change proposed
// while another one is pending (a concurrent add, promote or remove) and
// never answers it; so when the reply has not come within 100 ms, Remove
// reads the member list every 50 ms while it waits, and once a list shows
// the member gone, or another membership change applied and not this one,
// it stops waiting and decides from the member list at once (removing
// again if the removal was dropped). Transient errors are retried with
// backoff, permanent ones returned at once. When ctx ends it returns an error
// wrapping ctx.Err(). Safe for concurrent use; a zero id is an error
// wrapping ErrInvalidArgument.
func (m *Manager) Remove(ctx context.Context, id uint64, opts RemoveOptions) (_ RemoveResult, err error) {
	c, err := m.begin(ctx, "Remove")
	if err != nil {
		return RemoveResult{}, err
	}
	defer c.end(&err)
	return c.remove(ctx, id, opts)
}

func (c *call) remove(ctx context.Context, id uint64, opts RemoveOptions) (RemoveResult, error) {
	res := RemoveResult{ID: id}
	if id == 0 {
		return res, invalid("member ID 0")
	}
	b, err := c.newRetry()
	if err != nil {
		return res, err
	}
	what := fmt.Sprintf("remove member %x", id)
	log := &stateLog{log: c.log.WithValues("id", hex(id))}
	pending := "reading the member list"
	triedMove := false
	lists := 0
	var refusedSince time.Time // when etcd first refused a removal we found safe
	for {
		if ctx.Err() != nil {
			return res, canceled(ctx, what, pending)
		}
		members, ok, err := c.listOrWait(ctx, b, log, what, &pending)
		if err != nil {
			return res, err
		}
		if !ok {
			continue
		}
		lists++
		mem, ok := find(members, id)
		if !ok {
			res.AlreadyAbsent = lists == 1 && res.Attempts == 0
			res.ConfirmedByList = !res.AlreadyAbsent
			log.info("absent", "member is not in the cluster", "alreadyAbsent", res.AlreadyAbsent)
			return res, nil
		}
		res.WasLearner = mem.IsLearner
		var qe *QuorumError // this package's verdict, for a voter
		if !mem.IsLearner {
			vs := voters(members)
			health := c.voterStatus(ctx, vs)
			qe = quorumCheck(id, vs, health)
			if qe != nil && !opts.Force {
				return res, qe
			}
			if leader := leaderOf(health); leader == id && !triedMove {
				triedMove = true
				res.WasLeader = true
				to, err := c.moveLeaderAway(ctx, members, health, id)
				if err != nil {
					log.info("move-leader-failed", "could not move leadership away before removing the leader; removing anyway", "err", err)
				} else {
					res.LeaderMoved, res.MovedTo = true, to
				}
			}
		}
		res.Attempts++
		err = c.removeRPC(ctx, members, id)
		if err == nil {
			log.info("removed", "removed member", "name", mem.Name, "learner", mem.IsLearner)
			return res, nil
		}
		k := classify(ctx, err)
		switch k {
		case kindMemberNotFound:
			res.ConfirmedByList = true
			return res, nil
		case kindPermanent, kindCanceled:
			return res, stop(ctx, k, what, "waiting for the reply to MemberRemove", err)
		case kindReconfigRefused:
			if mem.IsLearner {
				break // not a quorum matter; retry
			}
			// etcd counts a peer as healthy only once it has been
			// connected for five seconds, so it refuses for a while after
			// a member (re)joined although the healthy voters we counted
			// suffice. Retry such a refusal for reconfigGrace; one that
			// agrees with our own count (Force) is final.
			if refusedSince.IsZero() {
				refusedSince = time.Now()
			}
			if qe != nil || time.Since(refusedSince) >= reconfigGrace {
				if qe == nil {
					qe = &QuorumError{ID: id}
				}
				qe.Server = err
				return res, qe
			}
		}
		pending = fmt.Sprintf("removing (last error: %v)", err)
		if errors.Is(err, errUnanswered) {
			// The member list decided (made, or dropped by etcd for a
			// concurrent change): read it again at once.
			log.log.V(1).Info("no reply to MemberRemove; re-reading the member list", "err", err)
			continue
		}
		log.info("remove-error "+k.String(), "MemberRemove failed; re-reading the member list", "err", err)
		if err := c.wait(ctx, b, what, pending); err != nil {
			return res, err
		}
	}
}

// removeRPC sends one MemberRemove, decided from before (see change).
func (c *call) removeRPC(ctx context.Context, before []Member, id uint64) error {
	gone := func(ms []Member) bool { _, ok := find(ms, id); return !ok }
	return c.change(ctx, changeCheck, before, gone, func(ctx context.Context, cc pb.ClusterClient) error {
		_, err := cc.MemberRemove(ctx, &pb.MemberRemoveRequest{ID: id}, failFast)
		return err
	})
}

// reconfigGrace is how long Remove retries etcd's strict reconfiguration
// refusal of a removal that this package's own count found safe: twice
// etcd's five-second peer health interval.
const reconfigGrace = 10 * time.Second

// voterStatus asks every voter for its status, concurrently; a voter that
// does not answer maps to nil.
func (c *call) voterStatus(ctx context.Context, vs []Member) map[uint64]*pb.StatusResponse {
	out := make(map[uint64]*pb.StatusResponse, len(vs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, v := range vs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var st *pb.StatusResponse
			func() {
				// The client's interceptors (the caller's code) run here:
				// a panic in them is this voter's failure, not the
				// process's.
				defer func() {
					if r := recover(); r != nil {
						st = nil
					}
				}()
				var err error
				if st, err = c.status(ctx, v.ClientURLs); err != nil {
					st = nil
				}
			}()
			mu.Lock()
			out[v.ID] = st
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// quorumCheck returns a *QuorumError when removing voter id would leave
// the healthy voters short of a quorum of the voters left.
func quorumCheck(id uint64, vs []Member, health map[uint64]*pb.StatusResponse) *QuorumError {
	healthy := 0
	for _, v := range vs {
		if health[v.ID] != nil {
			healthy++
		}
	}
	after := healthy
	if health[id] != nil {
		after--
	}
	left := len(vs) - 1
	needed := left/2 + 1
	if after >= needed {
		return nil
	}
	return &QuorumError{ID: id, Voters: len(vs), Healthy: healthy, HealthyAfter: after, Needed: needed}
}

// leaderOf returns the leader most voters report, or 0.
func leaderOf(health map[uint64]*pb.StatusResponse) uint64 {
	votes := map[uint64]int{}
	var best uint64
	for _, st := range health {
		if st == nil || st.Leader == 0 {
			continue
		}
		votes[st.Leader]++
		if votes[st.Leader] > votes[best] || (votes[st.Leader] == votes[best] && st.Leader < best) {
			best = st.Leader
		}
	}
	return best
}

// moveLeaderAway asks the leader (id) to hand leadership to the healthy
// voter with the highest applied index, and returns that voter. MoveLeader
// must be sent to the leader itself, so it goes to the leader's client
// URL.
func (c *call) moveLeaderAway(ctx context.Context, members []Member, health map[uint64]*pb.StatusResponse, id uint64) (uint64, error) {
	var to uint64
	var best uint64
	for vid, st := range health {
		if vid == id || st == nil {
			continue
		}
		if to == 0 || st.RaftAppliedIndex > best || (st.RaftAppliedIndex == best && vid < to) {
			to, best = vid, st.RaftAppliedIndex
		}
	}
	if to == 0 {
		return 0, errors.New("no healthy voter to take over")
	}
	leader, ok := find(members, id)
	if !ok {
		return 0, fmt.Errorf("leader %x is not in the member list", id)
	}
	err := errors.New("leader has no client URLs")
	for _, u := range leader.ClientURLs {
		conn, cerr := c.ready(ctx, u)
		if cerr != nil {
			err = cerr
			continue
		}
		rctx, cancel := c.m.rpcCtx(ctx)
		_, merr := pb.NewMaintenanceClient(conn).MoveLeader(rctx, &pb.MoveLeaderRequest{TargetID: to}, failFast)
		merr = clientv3.ContextError(rctx, merr)
		cancel()
		if merr == nil {
			c.log.Info("moved leadership away before removing the leader", "from", hex(id), "to", hex(to))
			return to, nil
		}
		err = fmt.Errorf("MoveLeader to %x via %s: %w", to, u, merr)
	}
	return 0, err
}
