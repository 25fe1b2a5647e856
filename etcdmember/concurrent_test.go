package etcdmember_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/etcdmember"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// joinConcurrently joins n members into c at once, each with a Manager of
// its own (as n nodes would), and returns the results.
func joinConcurrently(t *testing.T, c *testenv.Cluster, n int) []etcdmember.JoinResult {
	ctx := testCtx(t)
	results := make([]etcdmember.JoinResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		spec, err := c.NewMemberSpec(fmt.Sprintf("n%d", i+1))
		require.NoError(t, err)
		m := newManager(t, c.Client())
		wg.Go(func() {
			results[i], errs[i] = m.Join(ctx, spec.Name, []string{spec.PeerURL}, etcdmember.JoinOptions{Cleanup: true}, startFor(c, spec))
		})
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i], "join n%d", i+1)
		require.True(t, results[i].Added)
		require.False(t, results[i].CleanedUp)
		require.False(t, results[i].Member.IsLearner)
	}
	return results
}

// TestConcurrentJoinsTwoLearnerSlots: members join at the same time, as
// many as the learner limit allows, each learner added before the others
// start. etcd requires --initial-cluster to list every member, unstarted
// learners included ("member count is unequal" otherwise): every Join
// ends with a voter and no stray learner is left.
func TestConcurrentJoinsTwoLearnerSlots(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d joins, max-learners %d", n, n), func(t *testing.T) {
			c := testenv.NewCluster(t, testenv.WithMaxLearners(n))
			results := joinConcurrently(t, c, n)

			ctx := testCtx(t)
			ms := members(ctx, t, c.Client())
			require.Len(t, ms, n+1, "the first member and one per join: no strays")
			names := map[string]bool{}
			for id, mem := range ms {
				require.False(t, mem.IsLearner, "member %x (%s)", id, mem.Name)
				names[mem.Name] = true
			}
			for i, r := range results {
				require.True(t, names[fmt.Sprintf("n%d", i+1)])
				require.Contains(t, ms, r.Member.ID)
				t.Logf("n%d: %d start(s), initial cluster %s", i+1, r.Starts, r.InitialCluster)
			}
			// The cluster serves through a member that joined.
			last, err := c.NewClient(results[n-1].Member.ClientURLs...)
			require.NoError(t, err)
			_, err = last.Put(ctx, "joined", "yes")
			require.NoError(t, err)
		})
	}
}
