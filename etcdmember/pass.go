package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// PassReport is what one PromoteReady pass saw and did.
type PassReport struct {
	// Learners has one progress reading per learner in the member list,
	// by ID.
	Learners []Progress
	// Promoted lists the learners this pass promoted.
	Promoted []uint64
	// Unreachable lists the started learners that did not answer a
	// status request on their own client URLs in this pass; they were not
	// promoted (their Progress in Learners says why).
	Unreachable []uint64
	// NotReplicating lists the started learners that answered on their
	// own client URLs but did not apply a raft entry created in this pass
	// within the RPC timeout (Progress.NotReplicating): they are not
	// receiving raft entries from the leader, and were not promoted.
	NotReplicating []uint64
	// Stalled lists the learners that made no progress for the stall
	// timeout (WithStallTimeout) and have not caught up, unreachable and
	// not replicating ones included.
	Stalled []uint64
	// Removed lists the stalled learners this pass removed
	// (WithEvictStalledAfter).
	Removed []uint64
}

// PromoteReady is one leader-side pass, the way k3s and k0s promote
// learners: it reads the member list, reads the leader's progress and
// every learner's on its own client URL, and promotes the learners that
// have started and shown in this pass that they receive raft entries now
// (Progress.CaughtUp) — at most one per pass by default
// (WithMaxPromotionsPerPass). A learner whose applied index is close to
// the leader's (within etcd's readiness threshold, 90 %, or at most 1,000
// entries behind), while the pass may still promote, goes through the
// replication check: the pass creates a fresh raft entry (it grants a
// lease with a 5 s TTL through a voter and revokes it at once), reads the
// leader's raft index after it, and reads the learner's status on its own
// client URL until its applied index reaches that index, for at most the
// RPC timeout (WithRPCTimeout). A
// learner that does not answer is never promoted, however far it had got
// before (a dead learner promoted would cost the cluster a voter's worth
// of fault tolerance, or its quorum): it is listed in
// PassReport.Unreachable. Nor is one that answers but does not reach the
// index (its raft links to the leader cut while its client URL answers;
// in an idle cluster it sits at the leader's own index): it is listed in
// PassReport.NotReplicating. Either is listed in Stalled too after the
// stall timeout. It reports learners that made no progress for the stall
// timeout and, with WithEvictStalledAfter, removes those stalled for
// longer than that. It never decides from an RPC error: a promote that
// failed ambiguously is decided by the next pass's member list. A
// MemberPromote not answered within 100 ms is checked against the member
// list every 50 ms while the pass waits: a list that shows the learner
// promoted ends the wait with the learner in Promoted; one that shows
// another membership change applied and not this one (etcd drops a change
// proposed while another is pending, and never answers it) ends the wait
// and leaves the learner to the next pass.
//
// Callers run it periodically (a ticker) or on membership events, from one
// place (e.g. the leader-elected controller). The Manager remembers, across
// passes, when each learner last made progress. It blocks for one pass.
// The returned error is non-nil when the member list could not be read
// (then the report is empty) or when some learner's promotion or removal
// failed, or its replication check's LeaseGrant was refused for a
// permanent reason such as permission denied (the report still holds the
// rest, and the error names each learner); when ctx ends it wraps
// ctx.Err(). A panic in an observer
// (logger, WithProgress callback) is reported as WithLogger says. Safe
// for concurrent use.
func (m *Manager) PromoteReady(ctx context.Context) (_ PassReport, err error) {
	c, err := m.begin(ctx, "PromoteReady")
	if err != nil {
		return PassReport{}, err
	}
	defer c.end(&err)
	return c.promoteReady(ctx)
}

func (c *call) promoteReady(ctx context.Context) (PassReport, error) {
	m := c.m
	var rep PassReport
	what := "promote-ready pass"
	members, err := c.list(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return rep, canceled(ctx, what, "reading the member list")
		}
		return rep, fmt.Errorf("etcdmember: %s: %w", what, err)
	}
	var learners []Member
	for _, mem := range members {
		if mem.IsLearner {
			learners = append(learners, mem)
		}
	}
	sort.Slice(learners, func(i, j int) bool { return learners[i].ID < learners[j].ID })
	m.pruneStalls(learners)
	if len(learners) == 0 {
		return rep, nil
	}
	log := c.log
	leaderID, leaderApplied, leaderErr := c.leaderStatus(ctx, members, 0)
	var errs []error
	for _, l := range learners {
		if ctx.Err() != nil {
			return rep, errors.Join(append(errs, canceled(ctx, what, fmt.Sprintf("checking learner %x", l.ID)))...)
		}
		p, _ := c.learnerStatus(ctx, l)
		p.setLeader(leaderID, leaderApplied, leaderErr)
		if len(rep.Promoted) < m.opt.maxPerPass && p.nearLeader() {
			// A candidate: it must show that it receives raft entries now.
			if err := c.checkReplication(ctx, members, l, &p); err != nil {
				errs = append(errs, err) // names the learner
			}
		}
		m.observeStall(&p, time.Now())
		c.report(p)
		rep.Learners = append(rep.Learners, p)
		if p.Unreachable() {
			rep.Unreachable = append(rep.Unreachable, l.ID)
			log.Info("learner unreachable; not promoting it", "id", hex(l.ID), "name", l.Name, "err", p.Err)
		}
		if p.NotReplicating() {
			rep.NotReplicating = append(rep.NotReplicating, l.ID)
			log.Info("learner answers but is not receiving raft entries; not promoting it", "id", hex(l.ID), "name", l.Name,
				"learnerApplied", p.LearnerApplied, "replicationIndex", p.ReplicationIndex)
		}

		if stalled(p, m.opt.stallTimeout) {
			rep.Stalled = append(rep.Stalled, l.ID)
			if m.opt.evictAfter > 0 && p.NoProgressFor >= m.opt.evictAfter && evictionEvidence(p) {
				log.Info("removing stalled learner", "id", hex(l.ID), "name", l.Name, "noProgressFor", p.NoProgressFor, "learnerApplied", p.LearnerApplied, "leaderApplied", p.LeaderApplied)
				if err := c.removeLearner(ctx, members, l.ID); err != nil {
					errs = append(errs, err)
				} else {
					rep.Removed = append(rep.Removed, l.ID)
					members = slices.DeleteFunc(members, func(m Member) bool { return m.ID == l.ID })
				}
				continue
			}
		}
		// Only this pass's own reading of the learner decides.
		if len(rep.Promoted) >= m.opt.maxPerPass || !p.CaughtUp() {
			continue
		}
		err := c.change(ctx, changeCheck, members, promoted(l.ID), func(ctx context.Context, cc pb.ClusterClient) error {
			_, err := cc.MemberPromote(ctx, &pb.MemberPromoteRequest{ID: l.ID}, failFast)
			return err
		})
		if err == nil || errors.Is(err, errChangeMade) {
			log.Info("promoted learner", "id", hex(l.ID), "name", l.Name, "seenInList", err != nil)
			rep.Promoted = append(rep.Promoted, l.ID)
			// Later changes in this pass are judged against this list.
			members = slices.Clone(members)
			for i := range members {
				if members[i].ID == l.ID {
					members[i].IsLearner = false
				}
			}
			continue
		}
		if errors.Is(err, errChangeDropped) {
			// etcd dropped it for a concurrent membership change: the
			// next pass decides.
			log.V(1).Info("MemberPromote dropped by etcd; the next pass decides", "id", hex(l.ID), "err", err)
			continue
		}
		switch classify(ctx, err) {
		case kindLearnerNotReady, kindNotLearner, kindMemberNotFound:
			// The next pass's member list decides.
			log.V(1).Info("learner not promoted this pass", "id", hex(l.ID), "err", err)
		default:
			errs = append(errs, fmt.Errorf("etcdmember: %s: promote learner %x: %w", what, l.ID, err))
		}
	}
	return rep, errors.Join(errs...)
}

// evictionEvidence reports whether a stalled reading is evidence enough to
// remove the learner: it never started, or both indices were read and the
// learner is behind the leader. A learner that cannot be reached from
// here may be fine, and one whose leader could not be read may simply sit
// in an idle cluster with nothing to apply: neither is evicted.
func evictionEvidence(p Progress) bool {
	if !p.Started {
		return true
	}
	return p.Reachable && p.LeaderKnown && p.LeaderApplied > p.LearnerApplied
}

// removeLearner sends one MemberRemove for a learner; not found is success.
func (c *call) removeLearner(ctx context.Context, before []Member, id uint64) error {
	err := c.removeRPC(ctx, before, id)
	if err != nil && classify(ctx, err) != kindMemberNotFound {
		return fmt.Errorf("etcdmember: remove stalled learner %x: %w", id, err)
	}
	return nil
}

// observeStall updates the pass-to-pass stall clock of p's learner.
func (m *Manager) observeStall(p *Progress, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.stalls[p.ID]
	if !ok {
		c = newStallClock(now)
		m.stalls[p.ID] = c
	}
	c.observe(p, now)
}

// pruneStalls forgets learners that are no longer learners.
func (m *Manager) pruneStalls(learners []Member) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := range m.stalls {
		if _, ok := find(learners, id); !ok {
			delete(m.stalls, id)
		}
	}
}
