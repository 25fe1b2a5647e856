package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"sync"

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

// Remove removes the member id and blocks until the member list no longer
// has it. It is idempotent: a member that is not (or no longer) in the
// list is success.
//
// Removing a voter is refused with a *QuorumError (ErrWouldLoseQuorum),
// before any MemberRemove is sent, when the healthy voters left — those
// that answer Maintenance.Status on their client URLs — would be short of
// a quorum of the voters left; opts.Force skips that check. If the member
// is the raft leader, leadership is first moved (MoveLeader) to the
// healthy voter with the highest applied index, so the cluster does not
// wait out an election; if that fails the removal goes ahead (etcd's
// leader steps down by itself). Learners are removed without a check.
//
// After an ambiguous error (timeout, lost reply) it reads the member list
// again and decides from that; transient errors are retried with backoff,
// permanent ones returned at once. When ctx ends it returns an error
// wrapping ctx.Err(). Safe for concurrent use; a zero id is an error
// wrapping ErrInvalidArgument.
func (m *Manager) Remove(ctx context.Context, id uint64, opts RemoveOptions) error {
	if id == 0 {
		return invalid("member ID 0")
	}
	b, err := m.newBackoff()
	if err != nil {
		return err
	}
	what := fmt.Sprintf("remove member %x", id)
	log := &stateLog{log: m.log(ctx).WithValues("id", hex(id))}
	pending := "reading the member list"
	triedMove := false
	for {
		if ctx.Err() != nil {
			return canceled(ctx, what, pending)
		}
		members, err := m.list(ctx)
		if err != nil {
			k := classify(ctx, err)
			if k == kindPermanent || k == kindCanceled {
				return m.stop(ctx, k, what, pending, err)
			}
			pending = fmt.Sprintf("reading the member list (last error: %v)", err)
			log.info("list-error", "cannot read the member list; retrying", "err", err)
			if err := m.wait(ctx, b, what, pending); err != nil {
				return err
			}
			continue
		}
		mem, ok := find(members, id)
		if !ok {
			log.info("absent", "member is not in the cluster")
			return nil
		}
		if !mem.IsLearner {
			vs := voters(members)
			health := m.voterStatus(ctx, vs)
			if !opts.Force {
				if qe := quorumCheck(id, vs, health); qe != nil {
					return qe
				}
			}
			if leader := leaderOf(health); leader == id && !triedMove {
				triedMove = true
				if err := m.moveLeaderAway(ctx, members, health, id); err != nil {
					log.info("move-leader-failed", "could not move leadership away before removing the leader; removing anyway", "err", err)
				}
			}
		}
		rctx, cancel := m.rpcCtx(ctx)
		_, err = m.cl.MemberRemove(rctx, id)
		cancel()
		if err == nil {
			log.info("removed", "removed member", "name", mem.Name, "learner", mem.IsLearner)
			return nil
		}
		k := classify(ctx, err)
		switch k {
		case kindMemberNotFound:
			return nil
		case kindPermanent, kindCanceled:
			return m.stop(ctx, k, what, "waiting for the reply to MemberRemove", err)
		case kindReconfigRefused:
			if !mem.IsLearner {
				return &QuorumError{ID: id, Server: err}
			}
		}
		pending = fmt.Sprintf("removing (last error: %v)", err)
		log.info("remove-error "+k.String(), "MemberRemove failed; re-reading the member list", "err", err)
		if err := m.wait(ctx, b, what, pending); err != nil {
			return err
		}
	}
}

// voterStatus asks every voter for its status, concurrently; a voter that
// does not answer maps to nil.
func (m *Manager) voterStatus(ctx context.Context, vs []Member) map[uint64]*clientv3.StatusResponse {
	out := make(map[uint64]*clientv3.StatusResponse, len(vs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, v := range vs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := m.status(ctx, v.ClientURLs)
			if err != nil {
				st = nil
			}
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
func quorumCheck(id uint64, vs []Member, health map[uint64]*clientv3.StatusResponse) *QuorumError {
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
func leaderOf(health map[uint64]*clientv3.StatusResponse) uint64 {
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
// voter with the highest applied index. MoveLeader must be sent to the
// leader itself, so it dials the leader's client URL.
func (m *Manager) moveLeaderAway(ctx context.Context, members []Member, health map[uint64]*clientv3.StatusResponse, id uint64) error {
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
		return errors.New("no healthy voter to take over")
	}
	leader, ok := find(members, id)
	if !ok {
		return fmt.Errorf("leader %x is not in the member list", id)
	}
	err := errors.New("leader has no client URLs")
	for _, u := range leader.ClientURLs {
		conn, derr := m.cl.Dial(u)
		if derr != nil {
			err = fmt.Errorf("dial %s: %w", u, derr)
			continue
		}
		rctx, cancel := m.rpcCtx(ctx)
		_, merr := clientv3.NewMaintenanceFromMaintenanceClient(pb.NewMaintenanceClient(conn), m.cl).MoveLeader(rctx, to)
		cancel()
		_ = conn.Close()
		if merr == nil {
			m.log(ctx).Info("moved leadership away before removing the leader", "from", hex(id), "to", hex(to))
			return nil
		}
		err = fmt.Errorf("MoveLeader to %x via %s: %w", to, u, merr)
	}
	return err
}
