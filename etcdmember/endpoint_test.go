package etcdmember_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

// deadEndpointCluster is three voters and a learner that started and
// caught up; then one voter (not the leader) is killed. It returns the dead
// voter, a live voter and the learner's spec and ID.
func deadEndpointCluster(ctx context.Context, t testing.TB, c *testenv.Cluster) (dead, live *testenv.Member, learner testenv.MemberSpec, id uint64) {
	t.Helper()
	var leader *testenv.Member
	testenv.Eventually(t, guard, 20*time.Millisecond, func() error {
		for _, mem := range c.Members() {
			if mem.IsLeader() {
				leader = mem
				return nil
			}
		}
		return errors.New("no leader")
	})
	for _, mem := range c.Members() {
		if mem != leader && dead == nil {
			dead = mem
		}
	}
	live = leader
	direct, err := c.NewClient(live.ClientURL)
	require.NoError(t, err)

	// So that etcd takes the one MemberPromote TestPromoteWithDeadEndpoint
	// counts.
	fillLog(ctx, t, direct)
	learner, err = c.NewMemberSpec("learner")
	require.NoError(t, err)
	// A fresh cluster refuses membership changes for five seconds
	// ("unhealthy cluster"); AddLearner waits that out.
	add := newManager(t, direct)
	mem, err := add.AddLearner(ctx, learner.Name, []string{learner.PeerURL})
	require.NoError(t, err)
	_, err = c.StartMember(ctx, learner, initialClusterOf(ctx, t, direct, mem.ID, learner.Name))
	require.NoError(t, err)
	waitCaughtUp(ctx, t, direct, learner.ClientURL, live.ClientURL)
	// Killed only now: etcd adds no member while a voter is down.
	require.NoError(t, dead.Kill())
	return dead, live, learner, mem.ID
}

// TestPromoteWithDeadEndpoint: the Manager's client lists a dead member's
// URL and the learner's own URL before a healthy voter's. clientv3 sends
// every call with WaitForReady(true), and a learner refuses membership
// RPCs (and clientv3 retries that refusal 100 times on the same
// connection): Promote must neither wait on the dead endpoint nor send a
// Cluster RPC to the learner's. It succeeds with one MemberPromote and one
// MemberList; the dead endpoint gets no RPC at all (it never connects);
// Status goes to the learner's and the live voter's endpoints once each to
// learn their roles, and once each to read the learner's progress; the
// replication check adds one LeaseGrant and one LeaseRevoke and at least
// two Status requests (the leader's, the learner's).
func TestPromoteWithDeadEndpoint(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t, testenv.WithMembers(3))
	dead, live, learner, id := deadEndpointCluster(ctx, t, c)

	counter := newRPCCounter()
	cli := countingClient(t, c, counter, dead.ClientURL, learner.ClientURL, live.ClientURL)
	m := newManager(t, cli)
	res, err := m.Promote(ctx, id)
	require.NoError(t, err)
	require.Equal(t, 1, res.Attempts)
	require.False(t, res.ConfirmedByList)
	require.Equal(t, 1, counter.count(rpcMemberPromote))
	require.Equal(t, 1, counter.count(rpcMemberList), "%v", counter.snapshot())
	// The replication check: one lease granted and revoked (through the
	// live voter), the leader's status after it, and the learner's until
	// it has applied that index (once, unless it lags for a moment).
	require.Equal(t, 1, counter.count(rpcLeaseGrant), "%v", counter.snapshot())
	require.Equal(t, 1, counter.count(rpcLeaseRevoke), "%v", counter.snapshot())
	require.GreaterOrEqual(t, counter.count(rpcStatus), 6, "two role probes, the learner's and the leader's progress, the leader's and the learner's in the replication check: %v", counter.snapshot())
	require.Len(t, counter.snapshot(), 5, "MemberList, Status, LeaseGrant, LeaseRevoke and MemberPromote only: %v", counter.snapshot())
	require.False(t, members(ctx, t, c.Client())[id].IsLearner)

	// The Manager remembers the learner's endpoint (a voter now) and the
	// dead one: the next call goes to the live voter at once.
	counter.reset()
	res, err = m.Promote(ctx, id)
	require.NoError(t, err)
	require.True(t, res.AlreadyVoter)
	require.Equal(t, map[string]int{rpcMemberList: 1}, counter.snapshot())
}
