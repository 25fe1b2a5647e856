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
type StartFunc func(ctx context.Context, initialCluster string) error

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
	// InitialCluster is the initial-cluster string given to start.
	InitialCluster string
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
// one that is already a voter ends in success).
//
// Errors are those of the step that failed, wrapped with the member's ID
// and name: *ConflictError, *StalledError (ErrLearnerStalled), the error
// of start, ErrMemberNotFound, or an error wrapping ctx.Err(). With
// opts.Cleanup, a failure after this call added the learner removes it
// again, on a context that outlives ctx by at most three RPC timeouts;
// JoinResult.CleanedUp says so (a learner whose add was cut off by ctx
// before its ID was known cannot be cleaned up). An empty name, bad peer
// URLs or a nil start are errors wrapping ErrInvalidArgument, before any
// RPC. Safe for concurrent use, though joining two members at once needs
// a learner limit of two.
func (m *Manager) Join(ctx context.Context, name string, peerURLs []string, opts JoinOptions, start StartFunc) (JoinResult, error) {
	var res JoinResult
	if start == nil {
		return res, invalid("nil start function")
	}
	mem, added, members, err := m.addLearner(ctx, name, peerURLs)
	if err != nil {
		return res, err
	}
	res.Member, res.Added = mem, added
	res.InitialCluster = initialCluster(members, mem.ID, name)
	what := fmt.Sprintf("join member %x (%s)", mem.ID, name)
	log := m.log(ctx).WithValues("id", hex(mem.ID), "name", name)

	fail := func(step string, err error) (JoinResult, error) {
		err = fmt.Errorf("etcdmember: %s: %s: %w", what, step, err)
		if opts.Cleanup && res.Added {
			cerr := m.cleanup(ctx, mem.ID)
			if cerr != nil {
				log.Error(cerr, "could not remove the learner this join added")
				return res, errors.Join(err, cerr)
			}
			res.CleanedUp = true
			log.Info("removed the learner this join added", "step", step)
		}
		return res, err
	}

	log.Info("starting member", "initialCluster", res.InitialCluster, "added", added)
	if err := start(ctx, res.InitialCluster); err != nil {
		return fail("start", err)
	}
	started, err := m.WaitStarted(ctx, mem.ID)
	if err != nil {
		return fail("wait for start", err)
	}
	res.Member = started
	res.Promote, err = m.Promote(ctx, mem.ID)
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
func (m *Manager) cleanup(ctx context.Context, id uint64) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*m.opt.rpcTimeout)
	defer cancel()
	what := fmt.Sprintf("cleanup of learner %x", id)
	b, err := m.newBackoff()
	if err != nil {
		return err
	}
	pending := "reading the member list"
	for {
		members, err := m.list(cctx)
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
			rctx, rcancel := m.rpcCtx(cctx)
			_, err = m.cl.MemberRemove(rctx, id)
			rcancel()
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
		if werr := m.wait(cctx, b, what, fmt.Sprintf("%s (last error: %v)", pending, err)); werr != nil {
			return werr
		}
	}
}
