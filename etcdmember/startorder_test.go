package etcdmember_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubeboot/kubeboot/etcdmember"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// startLog records, for every start function call, which member started
// and which members with a lower ID had not started at that moment (read
// through the test's own client).
type startLog struct {
	mu     sync.Mutex
	order  []uint64
	behind map[uint64][]uint64 // id -> lower-ID members unstarted when it started
}

func (s *startLog) start(ctx context.Context, t *testing.T, c *testenv.Cluster, direct *clientv3.Client, spec testenv.MemberSpec, id uint64) etcdmember.StartFunc {
	return func(sctx context.Context, initialCluster string) error {
		resp, err := direct.MemberList(ctx)
		if err != nil {
			return err
		}
		var unstarted []uint64
		for _, m := range resp.Members {
			if m.ID < id && (m.Name == "" || len(m.ClientURLs) == 0) {
				unstarted = append(unstarted, m.ID)
			}
		}
		s.mu.Lock()
		s.order = append(s.order, id)
		s.behind[id] = unstarted
		s.mu.Unlock()
		_, err = c.StartMember(sctx, spec, initialCluster)
		return err
	}
}

// TestJoinStartOrder: three learners are in the member list before any of
// their Joins runs (three nodes that each added theirs), and the three
// Joins run at once, each with a Manager of its own. A member's etcd
// starting next to another starting member waits out etcd's peer timeouts
// (each asks the other, which answers only once its own start is done), so
// Join starts them in ID order: when a start function is called, every
// member with a lower ID has started. All end as voters with one start
// each (none refused).
func TestJoinStartOrder(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t, testenv.WithMaxLearners(3))
	direct := c.Client()
	specs := make([]testenv.MemberSpec, 3)
	ids := make([]uint64, 3)
	for i := range specs {
		var err error
		specs[i], err = c.NewMemberSpec(fmt.Sprintf("o%d", i+1))
		require.NoError(t, err)
		ids[i], _ = addLearner(ctx, t, direct, specs[i])
	}

	log := &startLog{behind: map[uint64][]uint64{}}
	results := make([]etcdmember.JoinResult, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range specs {
		m := newManager(t, c.Client())
		wg.Go(func() {
			results[i], errs[i] = m.Join(ctx, specs[i].Name, []string{specs[i].PeerURL}, etcdmember.JoinOptions{Cleanup: true},
				log.start(ctx, t, c, direct, specs[i], ids[i]))
		})
	}
	wg.Wait()

	for i := range specs {
		require.NoError(t, errs[i], "join %s", specs[i].Name)
		require.False(t, results[i].Added, "the learner was there already")
		require.Equal(t, ids[i], results[i].Member.ID)
		require.Equal(t, 1, results[i].Starts, "%s: no start refused", specs[i].Name)
		require.False(t, results[i].Member.IsLearner)
	}
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	require.Equal(t, sorted, log.order, "started in ID order")
	for _, id := range ids {
		require.Empty(t, log.behind[id], "member %x started while members with lower IDs had not", id)
	}
	ms := members(ctx, t, direct)
	require.Len(t, ms, 4)
	for id, mem := range ms {
		require.False(t, mem.IsLearner, "member %x (%s)", id, mem.Name)
	}
}

// ghostAhead adds a learner that never starts ("ghost") and the joining
// member's learner, such that the ghost has the lower ID: it is ahead of
// the joining member in start order. It returns the ghost's ID and the
// joining member's.
func ghostAhead(ctx context.Context, t *testing.T, c *testenv.Cluster, spec testenv.MemberSpec) (ghost, own uint64) {
	t.Helper()
	direct := c.Client()
	own, _ = addLearner(ctx, t, direct, spec)
	for i := 0; ; i++ {
		require.Less(t, i, 64, "no ghost with a lower ID than %x", own)
		gs, err := c.NewMemberSpec(fmt.Sprintf("ghost%d", i))
		require.NoError(t, err)
		ghost, _ = addLearner(ctx, t, direct, gs)
		if ghost < own {
			return ghost, own
		}
		_, err = direct.MemberRemove(ctx, ghost)
		require.NoError(t, err)
	}
}

// TestJoinStartWaitBounded: a learner ahead in start order that never
// starts (its node died after adding it) holds a Join up for a bounded
// time only (here the stall timeout, 1 s, which is shorter than the 10 s
// limit): Join gives up on it, says so, starts its member and ends with a
// voter. The ghost is left alone.
func TestJoinStartWaitBounded(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t, testenv.WithMaxLearners(2))
	spec, err := c.NewMemberSpec("late")
	require.NoError(t, err)
	ghost, own := ghostAhead(ctx, t, c, spec)

	logs, logger := newLogs(t)
	m := newManager(t, c.Client(), etcdmember.WithStallTimeout(time.Second), etcdmember.WithLogger(logger))
	res, err := m.Join(ctx, spec.Name, []string{spec.PeerURL}, etcdmember.JoinOptions{Cleanup: true}, startFor(c, spec))
	require.NoError(t, err)
	require.Equal(t, own, res.Member.ID)
	require.Equal(t, 1, res.Starts)
	require.False(t, res.Member.IsLearner)
	require.Equal(t, 1, logs.count(`"waiting for a member ahead in start order to start first"`), logs.all())
	require.Equal(t, 1, logs.count(`"gave up waiting for a member ahead in start order; it did not start"`), logs.all())
	require.Contains(t, logs.all(), `"ahead"="`+hexID(ghost)+`"`)

	ms := members(ctx, t, c.Client())
	require.True(t, ms[ghost].IsLearner, "the ghost is not touched")
	require.False(t, ms[own].IsLearner)
}

// TestJoinStartWaitCanceled: ctx ending while Join waits for a member
// ahead in start order returns at once with an error that wraps
// ctx.Err() and names that member; start is never called.
func TestJoinStartWaitCanceled(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t, testenv.WithMaxLearners(2))
	spec, err := c.NewMemberSpec("late")
	require.NoError(t, err)
	ghost, own := ghostAhead(ctx, t, c, spec)

	logs, logger := newLogs(t)
	m := newManager(t, c.Client(), etcdmember.WithLogger(logger))
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	waiting := logs.when("waiting for a member ahead in start order")
	go func() {
		<-waiting
		cancel()
	}()
	started := false
	res, err := m.Join(cctx, spec.Name, []string{spec.PeerURL}, etcdmember.JoinOptions{Cleanup: true},
		func(context.Context, string) error { started = true; return errors.New("must not be called") })
	require.ErrorIs(t, err, context.Canceled)
	require.Contains(t, err.Error(), hexID(ghost))
	require.Contains(t, err.Error(), "to start first")
	require.Contains(t, err.Error(), hexID(own))
	require.False(t, started)
	require.Zero(t, res.Starts)
	require.False(t, res.Added)
	require.False(t, res.CleanedUp, "not this call's learner")
	require.Contains(t, members(ctx, t, c.Client()), own)
}

// TestConcurrentAddsDropped: learners added at the same moment by three
// Managers (three nodes). etcd's raft leader drops a membership change
// proposed while another is pending and never answers it; with an RPC
// timeout as long as the test's context, such an add would wait until the
// context ends. AddLearner notices from the member list and adds again:
// every add succeeds. Adds that happen not to collide prove nothing, so
// rounds go on (each one's learners removed after it) until a drop has
// been seen, up to a limit.
func TestConcurrentAddsDropped(t *testing.T) {
	ctx := testCtx(t)
	const maxRounds, n = 20, 3
	c := newCluster(t, testenv.WithMaxLearners(n))
	logs, logger := newLogs(t)
	direct := c.Client()
	rounds := 0
	for r := 0; r < maxRounds && logs.count("etcd dropped it") == 0; r++ {
		rounds++
		ready := make(chan struct{})
		errs := make([]error, n)
		ids := make([]uint64, n)
		var wg sync.WaitGroup
		for i := range n {
			spec, err := c.NewMemberSpec(fmt.Sprintf("a%d-%d", r, i))
			require.NoError(t, err)
			m := newManager(t, direct, etcdmember.WithRPCTimeout(guard), etcdmember.WithLogger(logger))
			wg.Go(func() {
				<-ready
				var mem etcdmember.Member
				mem, errs[i] = m.AddLearner(ctx, spec.Name, []string{spec.PeerURL})
				ids[i] = mem.ID
			})
		}
		close(ready)
		wg.Wait()
		for i := range n {
			require.NoError(t, errs[i], "round %d, add %d", r, i)
		}
		require.Len(t, members(ctx, t, direct), 1+n, "round %d: every add took effect once", r)
		for _, id := range ids {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := direct.MemberRemove(rctx, id)
			cancel()
			require.NoError(t, err)
		}
	}
	dropped := logs.count("etcd dropped it")
	t.Logf("adds dropped by etcd and noticed: %d in %d round(s) of %d adds at once", dropped, rounds, n)
	require.NotZero(t, dropped, "no add was dropped in %d rounds of %d adds at once: the test proved nothing", rounds, n)
}
