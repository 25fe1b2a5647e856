package etcdmember_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubeboot/kubeboot/etcdmember"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// TestRemoveRefusesQuorumLoss: 3 voters, one stopped. Removing a healthy
// one is ErrWouldLoseQuorum before any MemberRemove; forced, the request
// goes out (a default etcd refuses it too; one started with
// --strict-reconfig-check=false removes the member); removing an absent
// member is nil. Then, all healthy again, removing the leader moves
// leadership away first.
func TestRemoveRefusesQuorumLoss(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t, testenv.WithMembers(3))
	m0, m1, m2 := c.Member(0), c.Member(1), c.Member(2)
	id0, id1, id2 := m0.ID(), m1.ID(), m2.ID()
	counter := newRPCCounter()
	m := newManager(t, countingClient(t, c, counter, m0.ClientURL, m1.ClientURL))
	direct, err := c.NewClient(m0.ClientURL, m1.ClientURL)
	require.NoError(t, err)

	require.NoError(t, m2.Stop())

	t.Run("healthy voter refused", func(t *testing.T) {
		counter.reset()
		_, err := m.Remove(ctx, id1, etcdmember.RemoveOptions{})
		require.ErrorIs(t, err, etcdmember.ErrWouldLoseQuorum)
		var qe *etcdmember.QuorumError
		require.ErrorAs(t, err, &qe)
		require.Equal(t, etcdmember.QuorumError{ID: id1, Voters: 3, Healthy: 2, HealthyAfter: 1, Needed: 2}, *qe)
		require.Contains(t, err.Error(), hexID(id1))
		require.Zero(t, counter.count(rpcMemberRemove), "refused before sending MemberRemove")
		require.Contains(t, members(ctx, t, direct), id1)
	})

	t.Run("absent member", func(t *testing.T) {
		counter.reset()
		res, err := m.Remove(ctx, 0xabc, etcdmember.RemoveOptions{})
		require.NoError(t, err)
		require.Equal(t, etcdmember.RemoveResult{ID: 0xabc, AlreadyAbsent: true}, res)
		require.Zero(t, counter.count(rpcMemberRemove))
	})

	t.Run("forced, etcd's own check refuses", func(t *testing.T) {
		counter.reset()
		_, err := m.Remove(ctx, id1, etcdmember.RemoveOptions{Force: true})
		require.Equal(t, 1, counter.count(rpcMemberRemove), "Force skips this package's check")
		require.ErrorIs(t, err, etcdmember.ErrWouldLoseQuorum)
		require.ErrorIs(t, err, rpctypes.ErrUnhealthy, "etcd's strict reconfiguration check")
		var qe *etcdmember.QuorumError
		require.ErrorAs(t, err, &qe)
		require.Error(t, qe.Server)
		require.Equal(t, 2, qe.Needed, "our count is in the error too")
		require.Contains(t, members(ctx, t, direct), id1)
	})

	t.Run("forced, etcd without strict reconfiguration check", func(t *testing.T) {
		// Not newCluster: the outer test's cluster is still running, so a
		// per-test leak check here would count its goroutines too.
		lc := testenv.NewCluster(t, testenv.WithMembers(3), testenv.WithStrictReconfigCheck(false))
		lid1 := lc.Member(1).ID()
		cl, err := lc.NewClient(lc.Member(0).ClientURL, lc.Member(1).ClientURL)
		require.NoError(t, err)
		survivor, err := lc.Member(0).Client()
		require.NoError(t, err)
		lm := newManager(t, cl)
		require.NoError(t, lc.Member(2).Stop())
		_, err = lm.Remove(ctx, lid1, etcdmember.RemoveOptions{})
		require.ErrorIs(t, err, etcdmember.ErrWouldLoseQuorum)
		_, err = lm.Remove(ctx, lid1, etcdmember.RemoveOptions{Force: true})
		require.NoError(t, err)
		// The cluster has now lost its quorum — what Force is for is the
		// caller's call. The removal was applied by the surviving member:
		eventually(ctx, t, 50*time.Millisecond, func(ctx context.Context) error {
			resp, err := survivor.MemberList(ctx, clientv3.WithSerializable())
			if err != nil {
				return err
			}
			for _, mem := range resp.Members {
				if mem.ID == lid1 {
					return errors.New("still a member")
				}
			}
			return nil
		})
	})

	t.Run("stopped voter", func(t *testing.T) {
		res, err := m.Remove(ctx, id2, etcdmember.RemoveOptions{})
		require.NoError(t, err, "removing the stopped voter leaves 2 healthy of 2")
		require.False(t, res.AlreadyAbsent)
		require.False(t, res.WasLeader)
		require.NotContains(t, members(ctx, t, direct), id2)
	})

	t.Run("leader moves first", func(t *testing.T) {
		var leader uint64
		testenv.Eventually(t, guard, 20*time.Millisecond, func() error {
			switch {
			case m0.IsLeader():
				leader = id0
			case m1.IsLeader():
				leader = id1
			default:
				return errors.New("no leader")
			}
			return nil
		})
		counter.reset()
		res, err := m.Remove(ctx, leader, etcdmember.RemoveOptions{})
		require.NoError(t, err)
		require.True(t, res.WasLeader)
		require.True(t, res.LeaderMoved)
		require.NotEqual(t, leader, res.MovedTo)
		// etcd refuses the removal as "unhealthy cluster" until the new
		// leader's peer connections are 5 s old, which Remove waits out:
		// a MemberRemove (at least) per attempt, one MoveLeader in all.
		require.GreaterOrEqual(t, res.Attempts, 1)
		require.Equal(t, 1, counter.count(rpcMoveLeader))
		require.GreaterOrEqual(t, counter.count(rpcMemberRemove), res.Attempts)
		ms := members(ctx, t, direct)
		require.Len(t, ms, 1)
		require.NotContains(t, ms, leader)
		res, err = m.Remove(ctx, leader, etcdmember.RemoveOptions{})
		require.NoError(t, err, "idempotent")
		require.True(t, res.AlreadyAbsent)
		require.Zero(t, res.Attempts)
	})
}
