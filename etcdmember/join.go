package etcdmember

import (
	"context"
	"errors"
	"fmt"
)

// StartFunc starts the joining member's etcd with
// --initial-cluster=initialCluster and --initial-cluster-state=existing.
// It may return as soon as the process is launched: Join then waits for
// the member to start. It should honour ctx.
//
// Join may call it again, with a newer string, when it returned an error
// and the member list changed meanwhile (another member joined or left at
// the same moment, so etcd refused the string as stale: "member count is
// unequal"). To benefit, a start function should return etcd's own
// failure (e.g. wait until the process serves or exits), and must have
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
// Promote's: the learner is promoted only once it has answered on its own
// client URL and caught up in the same attempt, never while it is
// unreachable.
//
// The initial-cluster string is built from the member list read just
// before start: it lists every member the cluster has, as etcd requires —
// started members by name, the new member under name, and members that
// have not started (other learners being joined at the same time) under
// unique placeholder names "unstarted-<id>" (etcd matches them by peer
// URL). So several members can join at once, each with its own Join,
// given a learner limit (etcd's --max-learners) of at least that many;
// with a lower limit the later AddLearner steps wait for a free slot. If
// start fails and the member list has changed since the string was built,
// start is called again with a new string (see StartFunc), up to five
// times.
//
// Errors are those of the step that failed, wrapped with the member's ID
// and name: *ConflictError, *StalledError (ErrLearnerStalled), the error
// of start, a *CallbackError (ErrCallbackPanicked) when start panicked,
// ErrMemberNotFound, or an error wrapping ctx.Err(). With opts.Cleanup, a
// failure after this call added the learner removes it again, on a
// context that outlives ctx by at most three RPC timeouts;
// JoinResult.CleanedUp says so (a learner whose add was cut off by ctx
// before its ID was known cannot be cleaned up). A name that AddLearner
// refuses, bad peer URLs or a nil start are errors wrapping
// ErrInvalidArgument, before any RPC. Safe for concurrent use.
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
	for {
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
		// A string made stale by a member added or removed meanwhile is a
		// reason to try again; otherwise start's error is the answer.
		fresh, lerr := c.list(ctx)
		if lerr != nil || initialCluster(fresh, mem.ID, name) == res.InitialCluster {
			return fail("start", serr)
		}
		if now, ok := find(fresh, mem.ID); !ok || now.Started() {
			return fail("start", serr) // removed, or started after all
		}
		log.Info("start failed and the member list has changed since; starting again with a new initial-cluster string", "err", serr)
		members = fresh
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
			err = c.removeRPC(cctx, id)
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
