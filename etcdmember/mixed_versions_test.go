package etcdmember_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/etcdmember"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// TestJoinMixedVersions is the rolling replacement a distribution does when
// it upgrades etcd: a v3.6 cluster (embedded servers) gains a v3.7 member
// through Join, whose start function launches an etcd v3.7.3 process, and
// then a v3.6 member is removed with Remove. The cluster keeps three voters
// and serves reads and writes through old and new members alike.
func TestJoinMixedVersions(t *testing.T) {
	c := newCluster(t, testenv.WithMembers(3), testenv.WithEtcdVersion("embedded"))
	ctx := testCtx(t)
	logs, logger := newLogs(t)
	m := newManager(t, c.Client(), etcdmember.WithLogger(logger))
	_, err := c.Client().Put(ctx, "written-by", "v3.6")
	require.NoError(t, err)

	spec, err := c.NewMemberSpec("v37")
	require.NoError(t, err)
	var joined *testenv.Member
	res, err := m.Join(ctx, spec.Name, []string{spec.PeerURL}, etcdmember.JoinOptions{Cleanup: true},
		func(ctx context.Context, initialCluster string) error {
			mem, err := c.StartMember(ctx, spec, initialCluster, testenv.WithMemberVersion(testenv.EtcdVersion))
			if err != nil {
				if mem != nil {
					_ = mem.Kill() // StartFunc: a failed start leaves no process behind
				}
				return err
			}
			joined = mem
			return nil
		})
	require.NoError(t, err)
	require.NotNil(t, joined)
	require.True(t, res.Added)
	require.False(t, res.CleanedUp)
	require.False(t, res.Member.IsLearner)
	require.Equal(t, joined.ID(), res.Member.ID)
	require.Equal(t, []string{spec.ClientURL}, res.Member.ClientURLs)

	// Versions, as each server reports its own.
	version := func(url string) string {
		st, err := c.Client().Status(ctx, url)
		require.NoError(t, err, url)
		return st.Version
	}
	require.Equal(t, strings.TrimPrefix(testenv.EtcdVersion, "v"), version(joined.ClientURL))
	old := strings.TrimPrefix(testenv.EmbeddedEtcdVersion(), "v")
	for _, mem := range c.Members()[:3] {
		require.Equal(t, old, version(mem.ClientURL), mem.Name)
	}

	// Replace a v3.6 member: the leader if a v3.6 member leads (Remove then
	// moves leadership first), else the first one.
	victim := c.Member(0)
	for _, mem := range c.Members()[:3] {
		if mem.IsLeader() {
			victim = mem
		}
	}
	rres, err := m.Remove(ctx, victim.ID(), etcdmember.RemoveOptions{})
	require.NoError(t, err)
	require.False(t, rres.AlreadyAbsent)
	require.False(t, rres.WasLearner)
	require.Equal(t, victim.ID(), rres.ID)
	require.GreaterOrEqual(t, rres.Attempts, 1)
	if rres.WasLeader {
		require.True(t, rres.LeaderMoved, "leadership moved off the member before its removal")
		require.NotEqual(t, victim.ID(), rres.MovedTo)
	}
	victimID := victim.ID()
	require.NoError(t, victim.Kill())

	// Three voters: two v3.6 and the v3.7 one.
	cl, err := joined.Client()
	require.NoError(t, err)
	ms := members(ctx, t, cl)
	require.Len(t, ms, 3)
	require.NotContains(t, ms, victimID)
	require.Contains(t, ms, joined.ID())
	for id, mem := range ms {
		require.False(t, mem.IsLearner, "member %s (%s)", hexID(id), mem.Name)
	}

	// The mixed cluster serves: data written before the upgrade reads back
	// through the new member, and a write through it reads back through a
	// remaining v3.6 member.
	got, err := cl.Get(ctx, "written-by")
	require.NoError(t, err)
	require.Len(t, got.Kvs, 1)
	require.Equal(t, "v3.6", string(got.Kvs[0].Value))
	_, err = cl.Put(ctx, "written-by", "v3.7")
	require.NoError(t, err)
	var remaining *testenv.Member
	for _, mem := range c.Members()[:3] {
		if mem != victim {
			remaining = mem
		}
	}
	rcl, err := remaining.Client()
	require.NoError(t, err)
	got, err = rcl.Get(ctx, "written-by")
	require.NoError(t, err)
	require.Len(t, got.Kvs, 1)
	require.Equal(t, "v3.7", string(got.Kvs[0].Value))
	require.Zero(t, logs.count(`"error"`), "nothing logged as an error")
}
