package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// StartFunc starts the joining member's etcd with
// --initial-cluster=initialCluster and --initial-cluster-state=existing.
// It may return as soon as the process is launched: Join then waits for
// the member to start. It should honour ctx.
//
// Join may call it again, with a string built from a new member list, when
// it returned an error while the member list still shows the member
// unstarted, and either the list changed meanwhile (another member joined
// or left at the same moment, so etcd refused the string as stale:
// "member count is unequal") or the string listed another member that had
// not started (its etcd may have been starting at the same moment, and a
// starting etcd answers with the member list it started from, which lacks
// the newest members). To benefit, a start function should return etcd's
// own failure (e.g. wait until the process serves or exits), and must have
// stopped a process that failed before returning its error.
type StartFunc func(ctx context.Context, initialCluster string) error

// maxStarts bounds how often Join calls start while the member list keeps
// changing under it.
const maxStarts = 5

// JoinOptions modify Join.
type JoinOptions struct {
	// Cleanup removes the learner this Join added when Join fails after
	// adding it (start fails, the learner stalls, promotion fails, ctx
	// ends), so a failed join does not leave a learner occupying the
	// cluster's learner slot (kubeadm #3208). Only a member this call
	// added is removed, and only while the member list still shows it as
	// a learner; a member that was already there is never touched.
	Cleanup bool
}

// JoinResult says how far Join got.
type JoinResult struct {
	// Member is the joining member (its Name and ClientURLs are empty
	// until it has started).
	Member Member
	// Added is true when this call added the learner, false when it was
	// already in the cluster.
	Added bool
	// InitialCluster is the initial-cluster string given to start (the
	// last one, when start was called more than once).
	InitialCluster string
	// Starts is how many times start was called.
	Starts int
	// Promote is the outcome of the promotion, when Join got that far.
	Promote PromoteResult
	// CleanedUp is true when Join failed and removed the learner it added.
	CleanedUp bool
}

// Join runs the whole flow a joining node runs: AddLearner(name,
// peerURLs), then start(ctx, initialCluster) with the initial-cluster
// string for the new member, then WaitStarted, then Promote. It blocks
// until the member is a voter or the flow fails; each step is idempotent,
// so Join can be re-run after a crash (an existing member is reused, and
// one that is already a voter ends in success). The promotion is
// Promote's: the learner is promoted only once, in the same attempt, it
// has answered on its own client URL and applied a raft entry created in
// that attempt (it is receiving raft entries now), never while it is
// unreachable or not replicating.
//
// Members that join at the same time start one after the other, in
// member ID order: before calling start, Join waits until every member
// with a lower ID than its own that has not started (no name or client
// URLs in the member list) has started or left the cluster. A member
// started with --initial-cluster-state=existing asks the members in its
// --initial-cluster, on their peer URLs, for the member list (in URL
// order, until one answers) and then each of them for its version and
// downgrade state, and a member whose etcd is starting answers only once
// its own start is done: two members starting at the same moment each
// wait out etcd's timeouts on the other (10 s for the member list, about
// 7 s for each of the others). Join re-reads the member list while it
// waits, after about 20 ms and then 1.5 times longer each time, up to
// 500 ms between reads (±20 % jitter). It waits for a member ahead of its
// own at most 10 s (or the stall timeout, WithStallTimeout, if that is
// shorter), counted from when that member came first in line; then it
// logs that it gave up on that member and goes on, so a member whose node
// died after adding it delays a join by at most that limit and never
// blocks it. Join does not wait when its own member has already started
// (a re-run after a crash).
//
// The initial-cluster string is built from the member list read just
// before start: it lists every member the cluster has, as etcd requires —
// started members by name, the new member under name, and members that
// have not started (other learners being joined at the same time) under
// unique placeholder names "unstarted-<id>" (etcd matches them by peer
// URL). So several members can join at once, each with its own Join,
// given a learner limit (etcd's --max-learners) of at least that many;
// with a lower limit the later AddLearner steps wait for a free slot. If
// start fails while the member list still shows the member unstarted, and
// the list has changed since the string was built or the string listed
// another member that had not started, start is called again with a
// string built from a new member list after a pause (about 20 ms, growing
// by half each time), up to five starts in all (see StartFunc).
//
// Errors are those of the step that failed, wrapped with the member's ID
// and name: *ConflictError, *StalledError (ErrLearnerStalled), the error
// of start, a *CallbackError (ErrCallbackPanicked) when start panicked,
// ErrMemberNotFound, or an error wrapping ctx.Err() that says what was
// pending (while Join waits for a member ahead of its own to start, that
// member's ID). With opts.Cleanup, a failure after this call added the
// learner removes it again, on a context that outlives ctx by at most
// three RPC timeouts; JoinResult.CleanedUp says so (a learner whose add
// was cut off by ctx before its ID was known cannot be cleaned up). A
// name that AddLearner refuses, bad peer URLs or a nil start are errors
// wrapping ErrInvalidArgument, before any RPC. Safe for concurrent use.
func (m *Manager) Join(ctx context.Context, name string, peerURLs []string, opts JoinOptions, start StartFunc) (_ JoinResult, err error) {
	c, err := m.begin(ctx, "Join")
	if err != nil {
		return JoinResult{}, err
	}
	defer c.end(&err)
	return c.join(ctx, name, peerURLs, opts, start)
}

func (c *call) join(ctx context.Context, name string, peerURLs []string, opts JoinOptions, start StartFunc) (JoinResult, error) {
	var res JoinResult
	if start == nil {
		return res, invalid("Join: nil start function (start)")
	}
	mem, added, members, err := c.addLearner(ctx, name, peerURLs)
	if err != nil {
		return res, err
	}
	res.Member, res.Added = mem, added
	what := fmt.Sprintf("join member %x (%s)", mem.ID, name)
	log := c.log.WithValues("id", hex(mem.ID), "name", name)

	fail := func(step string, err error) (JoinResult, error) {
		err = fmt.Errorf("etcdmember: %s: %s: %w", what, step, err)
		if opts.Cleanup && res.Added {
			cerr := c.cleanup(ctx, mem.ID)
			if cerr != nil {
				log.Error(cerr, "could not remove the learner this join added")
				return res, errors.Join(err, cerr)
			}
			res.CleanedUp = true
			log.Info("removed the learner this join added", "step", step)
		}
		return res, err
	}

	// The string is built from a member list read just before start (the
	// one the add decided from if that read fails), so that it lists the
	// learners other joins added meanwhile.
	if fresh, lerr := c.list(ctx); lerr == nil {
		members = fresh
	} else if ctx.Err() != nil {
		return fail("start", canceled(ctx, what, "reading the member list for the initial-cluster string"))
	}
	var pause backoff.BackOff
	for {
		if now, ok := find(members, mem.ID); !ok || !now.Started() {
			members, err = c.awaitStartTurn(ctx, members, mem.ID, what, min(startWaitLimit, c.m.opt.stallTimeout))
			if err != nil {
				return fail("start", err)
			}
		}
		res.InitialCluster = initialCluster(members, mem.ID, name)
		res.Starts++
		log.Info("starting member", "initialCluster", res.InitialCluster, "added", added, "attempt", res.Starts)
		serr := c.start(ctx, start, res.InitialCluster)
		if serr == nil {
			break
		}
		if res.Starts >= maxStarts || ctx.Err() != nil {
			return fail("start", serr)
		}
		// A string made stale by a member added or removed meanwhile, or
		// one that listed a member that had not started (its etcd may
		// have been starting at the same moment, answering with a member
		// list it had not caught up on yet), is a reason to try again;
		// otherwise start's error is the answer.
		fresh, lerr := c.list(ctx)
		if lerr != nil {
			return fail("start", serr)
		}
		if now, ok := find(fresh, mem.ID); !ok || now.Started() {
			return fail("start", serr) // removed, or started after all
		}
		if initialCluster(fresh, mem.ID, name) == res.InitialCluster && !othersUnstarted(members, mem.ID) {
			return fail("start", serr)
		}
		log.Info("start failed while the member list was changing or another member was starting; starting again", "err", serr)
		if pause == nil {
			pause = startWaitPoll()
		}
		if werr := c.sleep(ctx, pause.NextBackOff(), what, fmt.Sprintf("pausing before starting the member again (start failed: %v)", serr)); werr != nil {
			return fail("start", werr)
		}
		if members, lerr = c.list(ctx); lerr != nil {
			members = fresh
		}
	}
	started, err := c.waitStarted(ctx, mem.ID)
	if err != nil {
		return fail("wait for start", err)
	}
	res.Member = started
	res.Promote, err = c.promote(ctx, mem.ID)
	if err != nil {
		return fail("promote", err)
	}
	res.Member.IsLearner = false
	return res, nil
}

// cleanup removes learner id if the member list still shows it as a
// learner. It runs on a context that ignores the caller's cancellation
// (the caller's ctx may be why Join failed), bounded by three RPC
// timeouts, and decides from the member list after any error.
func (c *call) cleanup(ctx context.Context, id uint64) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*c.m.opt.rpcTimeout)
	defer cancel()
	what := fmt.Sprintf("cleanup of learner %x", id)
	b, err := c.newRetry()
	if err != nil {
		return fmt.Errorf("etcdmember: %s: %w", what, err)
	}
	pending := "reading the member list"
	for {
		members, err := c.list(cctx)
		if err == nil {
			mem, ok := find(members, id)
			if !ok {
				return nil
			}
			if !mem.IsLearner {
				// A promotion whose reply was lost may have gone
				// through: a voter is not this cleanup's to remove.
				return fmt.Errorf("etcdmember: %s: it is a voter now; not removing it", what)
			}
			err = c.removeRPC(cctx, members, id)
			if err == nil {
				return nil
			}
			pending = "removing it"
		}
		switch classify(cctx, err) {
		case kindMemberNotFound:
			return nil
		case kindPermanent, kindCanceled:
			return fmt.Errorf("etcdmember: %s: %s: %w", what, pending, err)
		}
		if werr := c.wait(cctx, b, what, fmt.Sprintf("%s (last error: %v)", pending, err)); werr != nil {
			return werr
		}
	}
}

// othersUnstarted reports whether members lists a member other than id
// that has not started.
func othersUnstarted(members []Member, id uint64) bool {
	for _, m := range members {
		if m.ID != id && !m.Started() {
			return true
		}
	}
	return false
}

// sleep waits d. When ctx ends or the client is closed first, it returns
// an error naming what (the operation) and pending.
func (c *call) sleep(ctx context.Context, d time.Duration, what, pending string) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return canceled(ctx, what, pending)
	case <-c.m.cl.Ctx().Done():
		return fmt.Errorf("etcdmember: %s: %w; still %s", what, ErrClientClosed, pending)
	}
}
