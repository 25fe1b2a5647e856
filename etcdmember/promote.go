package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// PromoteResult says how Promote ended.
type PromoteResult struct {
	// ID is the member.
	ID uint64
	// AlreadyVoter is true when the first member list already showed a
	// voter: no MemberPromote was sent.
	AlreadyVoter bool
	// Attempts is the number of MemberPromote RPCs sent.
	Attempts int
	// ConfirmedByList is true when the promotion was seen in the member
	// list after a MemberPromote whose reply was an error or was lost
	// (kubeadm #3317), or after someone else promoted the learner; false
	// when the MemberPromote reply itself said so.
	ConfirmedByList bool
	// Progress is the last reading of the learner's progress, if one was
	// taken (zero otherwise).
	Progress Progress
}

// Promote makes the learner id a voter and blocks until the member list
// shows it as one, the learner stalls, or ctx ends.
//
// Before every attempt it reads the member list (linearizable): a member
// that is not there is ErrMemberNotFound at once; a member that is no
// longer a learner is success (AlreadyVoter when that was the first list).
// Otherwise it reads the learner's progress, and sends MemberPromote only
// when, in that same attempt, the learner has shown that it receives raft
// entries now (Progress.CaughtUp): it answered a status request on its
// own client URL with a raft applied index close to the leader's (within
// etcd's readiness threshold, 90 %, or at most 1,000 entries behind),
// read from the leader then too; then
// Promote created a fresh raft entry (it grants a lease with a 5 s TTL
// through a voter and revokes it at once), read the leader's raft index
// after it, and the learner's applied index, read again on its own client
// URL, reached that index within the RPC timeout (WithRPCTimeout). A
// learner that has not started, is behind, does not answer, or answers
// but does not receive raft entries — one that died, or whose raft links
// to the leader are cut while its client URL answers (in an idle cluster
// such a learner sits at the leader's own index; etcd's own check, which
// compares raft indices only, would let it be promoted and the cluster
// lose its quorum) — is never promoted: Promote waits with backoff
// (WithProgress reports each reading), resets the backoff whenever the
// learner advances, and gives up with a *StalledError (ErrLearnerStalled)
// naming the learner when it made no progress for the stall timeout; the
// error says "unreachable" when the last reading got no answer, and "not
// replicating" when the learner answered but did not reach the index. An
// attempt whose learner does not replicate takes up to the RPC timeout
// for the check. A LeaseGrant refused for a permanent reason (e.g.
// permission denied) ends Promote with that error.
//
// An error reply to MemberPromote is never taken as the outcome: it reads
// the member list again and decides from that — so a promote that
// succeeded although its reply was lost, or that etcd answers with "can
// only promote a learner member" or "not in sync", ends in success. etcd
// drops a membership change proposed while another one is pending (a
// concurrent add, promote or remove) and never answers it; so when the
// reply has not come within 100 ms, Promote reads the member list every
// 50 ms while it waits, and stops waiting once a list shows the learner
// promoted (success) or shows another membership change applied and not
// this one (then, once it has read the member list again, it tries again
// without waiting, after a new progress reading).
// Transient errors (unavailable, timeouts, leader changes) are retried with
// backoff; permanent ones (permission denied, invalid argument) are
// returned at once. When ctx ends it returns an error wrapping ctx.Err()
// that says what it was waiting for. Safe for concurrent use; a zero id is
// an error wrapping ErrInvalidArgument.
func (m *Manager) Promote(ctx context.Context, id uint64) (_ PromoteResult, err error) {
	c, err := m.begin(ctx, "Promote")
	if err != nil {
		return PromoteResult{}, err
	}
	defer c.end(&err)
	return c.promote(ctx, id)
}

func (c *call) promote(ctx context.Context, id uint64) (PromoteResult, error) {
	if id == 0 {
		return PromoteResult{}, invalid("member ID 0")
	}
	b, err := c.newRetry()
	if err != nil {
		return PromoteResult{}, err
	}
	what := fmt.Sprintf("promote learner %x", id)
	log := &stateLog{log: c.log.WithValues("id", hex(id))}
	res := PromoteResult{ID: id}
	clock := newStallClock(time.Now())
	var (
		members []Member
		fresh   bool // members was read after the last MemberPromote error
		lists   int
		pending = "reading the member list"
	)
	for {
		if ctx.Err() != nil {
			return res, canceled(ctx, what, pending)
		}
		if !fresh {
			var ok bool
			members, ok, err = c.listOrWait(ctx, b, log, what, &pending)
			if err != nil {
				return res, err
			}
			if !ok {
				continue
			}
			lists++
		}
		fresh = false
		mem, ok := find(members, id)
		if !ok {
			return res, fmt.Errorf("etcdmember: %s: %w", what, ErrMemberNotFound)
		}
		if !mem.IsLearner {
			res.AlreadyVoter = res.Attempts == 0 && lists == 1
			res.ConfirmedByList = !res.AlreadyVoter
			log.info("voter", "member is a voter", "attempts", res.Attempts, "alreadyVoter", res.AlreadyVoter)
			return res, nil
		}

		// This attempt's own reading decides: no MemberPromote unless the
		// learner answered on its own client URL and applied a raft entry
		// created in this attempt.
		p, err := c.observe(ctx, members, mem, clock, b, &res)
		if err != nil {
			return res, err
		}
		if !p.CaughtUp() {
			pending = p.pending()
			log.info(progressState(p), "learner not ready yet", "started", p.Started, "reachable", p.Reachable,
				"learnerApplied", p.LearnerApplied, "leaderKnown", p.LeaderKnown, "leaderApplied", p.LeaderApplied,
				"replicationChecked", p.ReplicationChecked, "replicationIndex", p.ReplicationIndex, "err", p.Err)
			if err := c.wait(ctx, b, what, pending); err != nil {
				return res, err
			}
			continue
		}

		res.Attempts++
		perr := c.change(ctx, changeCheck, members, promoted(id), func(ctx context.Context, cc pb.ClusterClient) error {
			_, err := cc.MemberPromote(ctx, &pb.MemberPromoteRequest{ID: id}, failFast)
			return err
		})
		if perr == nil {
			log.info("promoted", "promoted learner", "attempts", res.Attempts)
			return res, nil
		}
		k := classify(ctx, perr)
		log.log.V(1).Info("MemberPromote failed; re-reading the member list", "err", perr, "kind", k.String())
		switch k {
		case kindPermanent:
			return res, fmt.Errorf("etcdmember: %s: %w", what, perr)
		case kindCanceled:
			return res, canceled(ctx, what, fmt.Sprintf("waiting for the reply to MemberPromote (attempt %d)", res.Attempts))
		}
		// The member list is the truth: read it now, before any wait.
		members, err = c.list(ctx)
		if err == nil {
			lists++
			fresh = true
			if now, ok := find(members, id); !ok || !now.IsLearner {
				continue // decided at the top, without waiting
			}
			if errors.Is(perr, errUnanswered) {
				// etcd dropped it for a concurrent membership change:
				// try again at once, from this list.
				log.log.V(1).Info("MemberPromote dropped by etcd; trying again", "err", perr)
				continue
			}
		}
		pending = fmt.Sprintf("promoting (attempt %d: %v)", res.Attempts, perr)
		if k == kindLearnerNotReady {
			log.info("not-in-sync", "learner not in sync with the leader yet (etcd's check)", "err", perr)
		} else {
			log.info("promote-error "+k.String(), "MemberPromote failed; retrying", "err", perr)
		}
		if err := c.wait(ctx, b, what, pending); err != nil {
			return res, err
		}
		fresh = false
	}
}

// observe reads the learner's progress, reports it, resets b when the
// learner advanced (or has just started), and returns a *StalledError when
// it stalled. For a learner that has not started, the member list says all
// there is: no status is read until it has, or until it stalls (then the
// leader's index goes into the error).
func (c *call) observe(ctx context.Context, members []Member, learner Member, clock *stallClock, b *retry, res *PromoteResult) (Progress, error) {
	var p Progress
	if learner.Started() {
		p = c.progress(ctx, members, learner)
		if p.nearLeader() {
			if err := c.checkReplication(ctx, members, learner, &p); err != nil {
				return p, err
			}
		}
	} else {
		p = Progress{ID: learner.ID, Name: learner.Name}
	}
	if clock.observe(&p, time.Now()) || (p.Started && !res.Progress.Started) {
		if err := b.reset(); err != nil {
			return p, err
		}
	}
	res.Progress = p
	if stalled(p, c.m.opt.stallTimeout) {
		if !p.Started {
			p.setLeader(c.leaderStatus(ctx, members, 0))
			res.Progress = p
		}
		c.report(p)
		return p, &StalledError{Progress: p, Timeout: c.m.opt.stallTimeout}
	}
	c.report(p)
	return p, nil
}

// progressState is a log state key: it changes when the learner starts,
// catches up, or its status becomes readable or unreadable — not with
// every index.
func progressState(p Progress) string {
	return fmt.Sprintf("progress started=%t reachable=%t leader=%t checked=%t caughtUp=%t", p.Started, p.Reachable, p.LeaderKnown, p.ReplicationChecked, p.CaughtUp())
}

// WaitStarted blocks until the member id has started and joined — its
// etcd process published its name and client URLs — and returns it. It
// polls the member list with backoff (etcd offers no membership watch). A
// member that is not in the list is ErrMemberNotFound at once; one that
// has not started within the stall timeout is a *StalledError
// (ErrLearnerStalled). When ctx ends it returns an error wrapping
// ctx.Err(). Safe for concurrent use; a zero id is an error wrapping
// ErrInvalidArgument.
func (m *Manager) WaitStarted(ctx context.Context, id uint64) (_ Member, err error) {
	c, err := m.begin(ctx, "WaitStarted")
	if err != nil {
		return Member{}, err
	}
	defer c.end(&err)
	return c.waitStarted(ctx, id)
}

func (c *call) waitStarted(ctx context.Context, id uint64) (Member, error) {
	if id == 0 {
		return Member{}, invalid("member ID 0")
	}
	b, err := c.newRetry()
	if err != nil {
		return Member{}, err
	}
	what := fmt.Sprintf("wait for member %x to start", id)
	log := &stateLog{log: c.log.WithValues("id", hex(id))}
	start := time.Now()
	pending := "reading the member list"
	for {
		if ctx.Err() != nil {
			return Member{}, canceled(ctx, what, pending)
		}
		members, ok, err := c.listOrWait(ctx, b, log, what, &pending)
		if err != nil {
			return Member{}, err
		}
		if !ok {
			continue
		}
		mem, ok := find(members, id)
		if !ok {
			return Member{}, fmt.Errorf("etcdmember: %s: %w", what, ErrMemberNotFound)
		}
		if mem.Started() {
			log.info("started", "member started", "name", mem.Name, "clientURLs", mem.ClientURLs)
			return mem, nil
		}
		pending = fmt.Sprintf("waiting for member %x to publish its name and client URLs", id)
		log.info("not-started", "member has not started yet")
		if time.Since(start) >= c.m.opt.stallTimeout {
			p := c.progress(ctx, members, mem)
			p.NoProgressFor = time.Since(start)
			c.report(p)
			return Member{}, &StalledError{Progress: p, Timeout: c.m.opt.stallTimeout}
		}
		if err := c.wait(ctx, b, what, pending); err != nil {
			return Member{}, err
		}
	}
}

// promoted reports whether a member list shows id promoted (or gone).
func promoted(id uint64) func([]Member) bool {
	return func(ms []Member) bool {
		m, ok := find(ms, id)
		return !ok || !m.IsLearner
	}
}
