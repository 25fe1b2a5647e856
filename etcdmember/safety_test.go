package etcdmember_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/etcdmember"
)

// TestPromoteRefusesUnreachableLearner: one voter and a learner that
// started, caught up, and was killed. etcd's own readiness check compares
// raft indices only, so it would accept the promotion — and the cluster
// would be left with two voters, one dead: no quorum. Promote, Join and
// PromoteReady must not send MemberPromote; they name the learner and say
// it is unreachable; the cluster keeps its quorum.
func TestPromoteRefusesUnreachableLearner(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	direct := c.Client() // m0 only: made before the learner exists
	spec, err := c.NewMemberSpec("learner")
	require.NoError(t, err)
	id, initial := addLearner(ctx, t, direct, spec)
	learner, err := c.StartMember(ctx, spec, initial)
	require.NoError(t, err)
	waitCaughtUp(ctx, t, direct, spec.ClientURL, c.Member(0).ClientURL)
	require.NoError(t, learner.Kill())

	counter := newRPCCounter()
	progress := newProgressLog()
	m := newManager(t, countingClient(t, c, counter, c.Member(0).ClientURL),
		etcdmember.WithStallTimeout(time.Second), etcdmember.WithProgress(progress.record))

	checkStalled := func(t *testing.T, err error) {
		t.Helper()
		require.ErrorIs(t, err, etcdmember.ErrLearnerStalled)
		require.Contains(t, err.Error(), hexID(id))
		require.Contains(t, err.Error(), "unreachable")
		var se *etcdmember.StalledError
		require.ErrorAs(t, err, &se)
		require.True(t, se.Progress.Started)
		require.False(t, se.Progress.Reachable)
		require.False(t, se.Progress.CaughtUp())
	}

	t.Run("Promote", func(t *testing.T) {
		res, err := m.Promote(ctx, id)
		checkStalled(t, err)
		require.Zero(t, res.Attempts)
	})
	t.Run("Join", func(t *testing.T) {
		res, err := m.Join(ctx, spec.Name, []string{spec.PeerURL}, etcdmember.JoinOptions{Cleanup: true},
			func(context.Context, string) error { return nil }) // "already running"
		checkStalled(t, err)
		require.False(t, res.Added)
		require.False(t, res.CleanedUp, "not this call's learner")
		require.Zero(t, res.Promote.Attempts)
	})
	t.Run("PromoteReady", func(t *testing.T) {
		rep, err := m.PromoteReady(ctx)
		require.NoError(t, err)
		require.Empty(t, rep.Promoted)
		require.Equal(t, []uint64{id}, rep.Unreachable)
		require.Len(t, rep.Learners, 1)
		require.True(t, rep.Learners[0].Unreachable())
		require.Contains(t, rep.Learners[0].String(), hexID(id))
		require.Contains(t, rep.Learners[0].String(), "unreachable")
	})
	require.Zero(t, counter.count(rpcMemberPromote), "no MemberPromote for an unreachable learner")
	for _, p := range progress.all() {
		require.False(t, p.CaughtUp(), "no reading of the dead learner says caught up: %s", p)
	}

	// The cluster keeps its quorum: a write and a member list succeed, and
	// the dead learner is still a learner.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = direct.Put(wctx, "still", "writable")
	require.NoError(t, err)
	ms := members(wctx, t, direct)
	require.Len(t, ms, 2)
	require.True(t, ms[id].IsLearner)
}
