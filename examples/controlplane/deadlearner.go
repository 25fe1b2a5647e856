package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kubeboot/kubeboot/etcdmember"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// deadLearnerStall is the stall timeout of the join under the dead-learner
// fault: short, so the demo does not wait etcdmember's default 5 minutes
// for a learner that will never answer again.
const deadLearnerStall = 3 * time.Second

// DeadLearner is the dead-learner fault's evidence, read from outside the
// injector (the join's own error and progress readings, and the cluster
// itself after the join).
type DeadLearner struct {
	// Node and ID name the learner whose etcd was killed.
	Node string
	ID   uint64
	// CaughtUp is the learner's raft applied index, read on its own client
	// URL, and Target the voter's, read first: the learner was killed once
	// CaughtUp reached Target.
	CaughtUp, Target uint64
	// JoinErr is what etcdmember.Join returned; CleanedUp whether it
	// removed the learner it added.
	JoinErr   error
	CleanedUp bool
	// Unreachable is true when etcdmember reported a reading of the
	// started learner that could not reach it.
	Unreachable bool
	// InList, IsLearner: the member list after the join, read through
	// node 1's client: whether the member is still there, and as what.
	InList, IsLearner bool
	// WriteErr is the result of a write through the remaining voters
	// after the join (nil: the cluster kept quorum).
	WriteErr error
}

// deadLearner kills a joining member's etcd right after it caught up.
type deadLearner struct {
	d    *demo
	node string

	mu          sync.Mutex
	unreachable bool
}

// options are the joining manager's extra options under the fault: a short
// stall timeout, and a progress callback noting a reading that found the
// started learner unreachable.
func (f *deadLearner) options() []etcdmember.Option {
	return []etcdmember.Option{
		etcdmember.WithStallTimeout(deadLearnerStall),
		etcdmember.WithProgress(func(p etcdmember.Progress) {
			if p.Started && !p.Reachable {
				f.mu.Lock()
				f.unreachable = true
				f.mu.Unlock()
			}
		}),
	}
}

// afterStart runs once the learner's etcd serves: it waits until the
// learner's applied index, read on its own client URL, has reached a
// voter's read just before, then kills the learner's etcd at once
// (killMember: no goodbye to its peers). The join's
// start function then returns success, as a node agent's would whose etcd
// died right after it reported up.
func (f *deadLearner) afterStart(ctx context.Context, m *testenv.Member) (caughtUp, target uint64, err error) {
	voter := f.d.etcd.Member(0).Endpoint()
	st, err := f.d.client.Status(ctx, voter)
	if err != nil {
		return 0, 0, fmt.Errorf("dead-learner: status of %s: %w", voter, err)
	}
	target = st.RaftAppliedIndex
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ls, err := f.d.client.Status(ctx, m.Endpoint())
		if err == nil && ls.RaftAppliedIndex >= target {
			caughtUp = ls.RaftAppliedIndex
			break
		}
		select {
		case <-ctx.Done():
			return 0, target, fmt.Errorf("dead-learner: waiting for %s to catch up to index %d: %w", f.node, target, ctx.Err())
		case <-tick.C:
		}
	}
	if err := killMember(m); err != nil {
		return caughtUp, target, fmt.Errorf("dead-learner: killing %s's etcd: %w", f.node, err)
	}
	f.d.tl.Record(f.node, "fault", "injected", fmt.Sprintf("learner caught up (applied %d ≥ voter's %d) and its etcd was killed", caughtUp, target))
	return caughtUp, target, nil
}

// observe checks the outcome of the join from outside the injector: the
// join failed reporting the learner stalled, having seen it unreachable;
// the member list shows it removed or still a learner, never a voter; and
// a write through the remaining voters succeeds. It returns the evidence,
// and an error if any of it is missing.
func (f *deadLearner) observe(ctx context.Context, res etcdmember.JoinResult, joinErr error, caughtUp, target uint64) (*DeadLearner, error) {
	f.mu.Lock()
	ev := &DeadLearner{Node: f.node, ID: res.Member.ID, CaughtUp: caughtUp, Target: target, JoinErr: joinErr,
		CleanedUp: res.CleanedUp, Unreachable: f.unreachable}
	f.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := f.d.client.MemberList(cctx)
	if err != nil {
		return ev, fmt.Errorf("dead-learner: member list after the join: %w", err)
	}
	for _, m := range list.Members {
		if m.ID == ev.ID {
			ev.InList, ev.IsLearner = true, m.IsLearner
		}
	}
	_, ev.WriteErr = f.d.client.Put(cctx, "/kubeboot/demo/dead-learner", fmt.Sprintf("quorum kept without %s", f.node))

	var stalled *etcdmember.StalledError
	switch {
	case joinErr == nil:
		return ev, fmt.Errorf("dead-learner: the join of %s succeeded with its etcd dead", f.node)
	case !errors.As(joinErr, &stalled):
		return ev, fmt.Errorf("dead-learner: the join of %s failed, but not reporting the learner stalled: %w", f.node, joinErr)
	case stalled.Progress.Reachable || !ev.Unreachable:
		return ev, fmt.Errorf("dead-learner: the join of %s did not report the learner unreachable (last reading reachable=%v): %w",
			f.node, stalled.Progress.Reachable, joinErr)
	case ev.InList && !ev.IsLearner:
		return ev, fmt.Errorf("dead-learner: member %x (%s) is a voter after the join, with its etcd dead", ev.ID, f.node)
	case ev.WriteErr != nil:
		return ev, fmt.Errorf("dead-learner: write through the remaining voters: %w", ev.WriteErr)
	}
	state := "removed by the join's cleanup"
	if ev.InList {
		state = "still a learner"
	}
	f.d.tl.Record(f.node, "fault", "observed", fmt.Sprintf("not promoted: the join failed with %v, its last reading unreachable; member %x %s; a write through the remaining voters succeeded",
		etcdmember.ErrLearnerStalled, ev.ID, state))
	return ev, nil
}
