package etcdmember_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/etcdmember"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// joinTwo starts from c's one member, Joins two more through the real flow
// (start = testenv's member start) and checks the result: 3 voters.
func joinTwo(t *testing.T, c *testenv.Cluster) {
	ctx := testCtx(t)
	logs, logger := newLogs(t)
	m := newManager(t, c.Client(), etcdmember.WithLogger(logger))

	for _, name := range []string{"m1", "m2"} {
		spec, err := c.NewMemberSpec(name)
		require.NoError(t, err)
		res, err := m.Join(ctx, spec.Name, []string{spec.PeerURL}, etcdmember.JoinOptions{Cleanup: true}, startFor(c, spec))
		require.NoError(t, err, name)
		require.True(t, res.Added)
		require.False(t, res.CleanedUp)
		require.False(t, res.Promote.AlreadyVoter)
		require.GreaterOrEqual(t, res.Promote.Attempts, 1)
		require.Equal(t, name, res.Member.Name)
		require.Equal(t, []string{spec.ClientURL}, res.Member.ClientURLs)
		require.False(t, res.Member.IsLearner)
		require.Contains(t, res.InitialCluster, name+"="+spec.PeerURL)
		require.Contains(t, res.InitialCluster, "m0="+c.Member(0).PeerURL)

		// Join is idempotent: re-run for a member that is already a voter
		// (a node restarting after a crash), it reuses the member and
		// ends at once.
		again, err := m.Join(ctx, spec.Name, []string{spec.PeerURL}, etcdmember.JoinOptions{Cleanup: true},
			func(context.Context, string) error { return nil }) // already running
		require.NoError(t, err)
		require.False(t, again.Added)
		require.Equal(t, res.Member.ID, again.Member.ID)
		require.True(t, again.Promote.AlreadyVoter)
	}

	ms := members(ctx, t, c.Client())
	require.Len(t, ms, 3)
	names := map[string]bool{}
	for id, mem := range ms {
		require.False(t, mem.IsLearner, "member %x (%s)", id, mem.Name)
		names[mem.Name] = true
	}
	require.Equal(t, map[string]bool{"m0": true, "m1": true, "m2": true}, names)

	// The joined members serve: a write through the last one is read
	// back (linearizably) through the first.
	last, err := c.Member(2).Client()
	require.NoError(t, err)
	_, err = last.Put(ctx, "joined", "yes")
	require.NoError(t, err)
	first, err := c.Member(0).Client()
	require.NoError(t, err)
	got, err := first.Get(ctx, "joined")
	require.NoError(t, err)
	require.Len(t, got.Kvs, 1)
	require.Zero(t, logs.count(`"error"`), "nothing logged as an error")
}

func TestJoinThreeNodes(t *testing.T) {
	c := newCluster(t)
	joinTwo(t, c)

	// Removing the member that joined a moment ago: etcd refuses for five
	// seconds after a peer connects ("unhealthy cluster"), although two
	// healthy voters would remain; Remove waits that out.
	ctx := testCtx(t)
	m := newManager(t, c.Client())
	id2 := c.Member(2).ID()
	rr, err := m.Remove(ctx, id2, etcdmember.RemoveOptions{})
	require.NoError(t, err)
	require.False(t, rr.AlreadyAbsent)
	require.False(t, rr.WasLearner)
	require.GreaterOrEqual(t, rr.Attempts, 1)
	ms := members(ctx, t, c.Client())
	require.Len(t, ms, 2)
	require.NotContains(t, ms, id2)
}

func TestJoinMutualTLS(t *testing.T) {
	c := newCluster(t, testenv.WithMutualTLS())
	require.True(t, strings.HasPrefix(c.Member(0).PeerURL, "https://"))
	joinTwo(t, c)
}

// TestPromoteReady: the leader-side pass promotes a started, caught-up
// learner (one per pass), reports one that never started as stalled, and
// removes it once it has been stalled for the eviction limit.
func TestPromoteReady(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t, testenv.WithMaxLearners(2))
	direct := c.Client()
	progress := newProgressLog()
	m := newManager(t, direct,
		etcdmember.WithStallTimeout(500*time.Millisecond),
		etcdmember.WithEvictStalledAfter(1500*time.Millisecond),
		etcdmember.WithProgress(progress.record))

	rep, err := m.PromoteReady(ctx)
	require.NoError(t, err)
	require.Empty(t, rep.Learners, "no learners, nothing to do")

	// A log long enough that etcd's own 90 % rule cannot refuse the one
	// promote of the pass for the replication check's two entries (see
	// fillLog).
	fillLog(ctx, t, direct)
	good, err := c.NewMemberSpec("good")
	require.NoError(t, err)
	goodID, initial := addLearner(ctx, t, direct, good)
	_, err = c.StartMember(ctx, good, initial)
	require.NoError(t, err)
	waitCaughtUp(ctx, t, direct, good.ClientURL, c.Member(0).ClientURL)
	dead, err := c.NewMemberSpec("dead")
	require.NoError(t, err)
	deadID, _ := addLearner(ctx, t, direct, dead)

	rep, err = m.PromoteReady(ctx)
	require.NoError(t, err)
	require.Equal(t, []uint64{goodID}, rep.Promoted)
	require.Len(t, rep.Learners, 2)
	require.Empty(t, rep.Removed, "not stalled for long yet")

	var stalledSeen bool
	testenv.Eventually(t, guard, 100*time.Millisecond, func() error {
		rep, err := m.PromoteReady(ctx)
		if err != nil {
			return err
		}
		require.Empty(t, rep.Promoted, "nothing else to promote")
		if len(rep.Stalled) > 0 {
			require.Equal(t, []uint64{deadID}, rep.Stalled)
			stalledSeen = true
		}
		if len(rep.Removed) == 0 {
			return errors.New("the stalled learner is not removed yet")
		}
		require.Equal(t, []uint64{deadID}, rep.Removed)
		return nil
	})
	require.True(t, stalledSeen)
	ms := members(ctx, t, direct)
	require.Len(t, ms, 2)
	require.False(t, ms[goodID].IsLearner)
	require.NotContains(t, ms, deadID)
}
