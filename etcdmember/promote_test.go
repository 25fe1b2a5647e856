package etcdmember_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubeboot/kubeboot/etcdmember"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// progressLog records WithProgress readings.
type progressLog struct {
	mu       sync.Mutex
	readings []etcdmember.Progress
	first    chan struct{}
}

func newProgressLog() *progressLog { return &progressLog{first: make(chan struct{})} }

func (p *progressLog) record(r etcdmember.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.readings = append(p.readings, r)
	if len(p.readings) == 1 {
		close(p.first)
	}
}

func (p *progressLog) all() []etcdmember.Progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]etcdmember.Progress(nil), p.readings...)
}

// addLearner adds a learner for spec directly (not through the code under
// test) and returns its ID.
func addLearner(ctx context.Context, t testing.TB, cli *clientv3.Client, spec testenv.MemberSpec) (uint64, string) {
	t.Helper()
	add, err := cli.MemberAddAsLearner(ctx, []string{spec.PeerURL})
	require.NoError(t, err)
	return add.Member.ID, testenv.InitialCluster(add, spec.Name)
}

// TestPromoteResponseLost: the MemberPromote request reaches etcd but its
// reply is dropped by the fault proxy (kubeadm #3317). Promote must end in
// success, from the member list, without a second MemberPromote (which
// etcd would answer with "can only promote a learner member").
func TestPromoteResponseLost(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	direct := c.Client()

	// So that etcd takes the one MemberPromote this test lets through.
	fillLog(ctx, t, direct)

	spec, err := c.NewMemberSpec("learner")
	require.NoError(t, err)
	id, initial := addLearner(ctx, t, direct, spec)
	_, err = c.StartMember(ctx, spec, initial)
	require.NoError(t, err)
	// Caught up for sure, so that etcd applies the one promote we send.
	waitCaughtUp(ctx, t, direct, spec.ClientURL, c.Member(0).ClientURL)

	p := testenv.NewProxyFor(t, c.Member(0).Endpoint())
	promoteSent := make(chan struct{})
	var once sync.Once
	counter := newRPCCounter()
	counter.before = func(method string) {
		if method == rpcMemberPromote {
			once.Do(func() {
				p.DropReplies(true) // before the request leaves: its reply is lost
				close(promoteSent)
			})
		}
	}
	viaProxy := countingClient(t, c, counter, "http://"+p.Addr())
	logs, logger := newLogs(t)
	progress := newProgressLog()
	m := newManager(t, viaProxy,
		etcdmember.WithLogger(logger),
		etcdmember.WithRPCTimeout(3*time.Second),
		etcdmember.WithProgress(progress.record))

	type result struct {
		res etcdmember.PromoteResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := m.Promote(ctx, id)
		done <- result{res, err}
	}()

	await(t, promoteSent, "MemberPromote to be sent")
	// The request reached etcd: the member list (read directly) shows a
	// voter while the reply is still being dropped.
	eventually(ctx, t, 20*time.Millisecond, func(ctx context.Context) error {
		ms, err := listMembers(ctx, direct)
		switch {
		case err != nil:
			return err
		case ms[id] == nil:
			return fmt.Errorf("member %x is not in the list", id)
		case ms[id].IsLearner:
			return errors.New("still a learner (if etcd refused the promote, its log says \"rejecting promote learner\")")
		}
		return nil
	})
	select {
	case r := <-done:
		t.Fatalf("Promote returned while its reply was being dropped: %+v %v", r.res, r.err)
	default:
	}
	p.Pass()
	p.ResetAll()

	var r result
	select {
	case r = <-done:
	case <-time.After(guard):
		t.Fatal("Promote did not return after the proxy passed traffic again")
	}
	require.NoError(t, r.err)
	require.False(t, r.res.AlreadyVoter)
	require.True(t, r.res.ConfirmedByList, "the success came from the member list, not from the lost reply")
	require.Equal(t, 1, r.res.Attempts)
	require.Equal(t, 1, counter.count(rpcMemberPromote), "no second MemberPromote after the first went through")
	require.False(t, members(ctx, t, direct)[id].IsLearner)

	notLearner := rpctypes.ErrorDesc(rpctypes.ErrGRPCMemberNotLearner)
	require.NotContains(t, logs.all(), notLearner)
	for _, pr := range progress.all() {
		if pr.Err != nil {
			require.NotContains(t, pr.Err.Error(), notLearner)
		}
	}
}

// TestPromoteBeforeCaughtUp: Promote is called before the learner has even
// started, behind a leader holding several MB; the one call returns
// success once the learner has caught up.
func TestPromoteBeforeCaughtUp(t *testing.T) {
	ctx := testCtx(t)
	// A small snapshot count: the leader compacts its log, so the learner
	// catches up through a snapshot transfer of the whole database.
	c := newCluster(t, testenv.WithSnapshotCount(20))
	direct := c.Client()
	value := strings.Repeat("x", 128<<10)
	const keys = 32 // 4 MiB
	for i := range keys {
		_, err := direct.Put(ctx, fmt.Sprintf("/data/%03d", i), value)
		require.NoError(t, err)
	}
	progress := newProgressLog()
	logs, logger := newLogs(t)
	m := newManager(t, direct, etcdmember.WithLogger(logger), etcdmember.WithProgress(progress.record))
	spec, err := c.NewMemberSpec("learner")
	require.NoError(t, err)
	learner, err := m.AddLearner(ctx, spec.Name, []string{spec.PeerURL})
	require.NoError(t, err)

	type result struct {
		res etcdmember.PromoteResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := m.Promote(ctx, learner.ID)
		done <- result{res, err}
	}()
	// Promote is waiting (it has read the learner's progress) before the
	// learner's etcd exists.
	await(t, progress.first, "Promote to read the learner's progress")
	_, err = c.StartMember(ctx, spec, initialClusterOf(ctx, t, direct, learner.ID, spec.Name))
	require.NoError(t, err)
	var r result
	select {
	case r = <-done:
	case <-time.After(guard):
		t.Fatal("Promote did not return after the learner caught up")
	}
	require.NoError(t, r.err)
	require.False(t, r.res.AlreadyVoter)
	require.GreaterOrEqual(t, r.res.Attempts, 1)
	require.False(t, members(ctx, t, direct)[learner.ID].IsLearner)

	readings := progress.all()
	require.False(t, readings[0].Started, "the first reading saw a learner that had not started")
	require.False(t, readings[0].CaughtUp())
	// Promote had to wait: it logged the not-ready state (a learner that
	// had not started) before it sent any MemberPromote.
	var notReady int
	for _, line := range strings.Split(logs.all(), "\n") {
		if strings.Contains(line, "learner not ready yet") && strings.Contains(line, `"started"=false`) {
			notReady++
		}
	}
	require.GreaterOrEqual(t, notReady, 1, "Promote never waited for the learner to become ready")
	var behind int
	for _, p := range readings {
		if p.Started && !p.CaughtUp() {
			behind++
		}
	}
	t.Logf("readings: %d, of a started learner not caught up yet: %d", len(readings), behind)

	// The new voter holds the data.
	st, err := direct.Status(ctx, spec.ClientURL)
	require.NoError(t, err)
	require.Greater(t, st.DbSize, int64(keys*len(value)), "the learner received the whole database")
}

// TestPromoteAlreadyVoter: one MemberList, no MemberPromote.
func TestPromoteAlreadyVoter(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	counter := newRPCCounter()
	m := newManager(t, countingClient(t, c, counter, c.Endpoints()...))

	res, err := m.Promote(ctx, c.Member(0).ID())
	require.NoError(t, err)
	require.True(t, res.AlreadyVoter)
	require.Zero(t, res.Attempts)
	require.Equal(t, map[string]int{rpcMemberList: 1}, counter.snapshot())
}

// TestPromoteMemberGone: a learner removed while Promote waits for it is
// ErrMemberNotFound promptly, not a retry loop to the deadline.
func TestPromoteMemberGone(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	direct := c.Client()
	counter := newRPCCounter()
	progress := newProgressLog()
	m := newManager(t, countingClient(t, c, counter, c.Endpoints()...), etcdmember.WithProgress(progress.record))

	t.Run("never a member", func(t *testing.T) {
		counter.reset()
		_, err := m.Promote(ctx, 0xdead)
		require.ErrorIs(t, err, etcdmember.ErrMemberNotFound)
		require.Contains(t, err.Error(), "dead")
		require.Equal(t, map[string]int{rpcMemberList: 1}, counter.snapshot())
	})

	t.Run("removed while waiting", func(t *testing.T) {
		spec, err := c.NewMemberSpec("learner")
		require.NoError(t, err)
		id, _ := addLearner(ctx, t, direct, spec) // never started: Promote waits
		errc := make(chan error, 1)
		go func() {
			_, err := m.Promote(ctx, id)
			errc <- err
		}()
		await(t, progress.first, "Promote to be waiting for the learner")
		_, err = direct.MemberRemove(ctx, id)
		require.NoError(t, err)

		select {
		case err = <-errc:
		case <-ctx.Done():
			t.Fatal("Promote ran to the deadline")
		}
		require.ErrorIs(t, err, etcdmember.ErrMemberNotFound)
		require.NotErrorIs(t, err, context.DeadlineExceeded)
		require.Contains(t, err.Error(), fmt.Sprintf("%x", id))
		require.NoError(t, ctx.Err())
	})
}

// TestLearnerStalled: a learner added but never started is ErrLearnerStalled
// after the stall time, and Join with cleanup removes only the learner it
// added.
func TestLearnerStalled(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t, testenv.WithMaxLearners(2))
	direct := c.Client()
	const stall = time.Second
	counter := newRPCCounter()
	_, logger := newLogs(t)
	m := newManager(t, countingClient(t, c, counter, c.Endpoints()...),
		etcdmember.WithStallTimeout(stall), etcdmember.WithLogger(logger))

	// Someone else's learner, never started.
	otherSpec, err := c.NewMemberSpec("other")
	require.NoError(t, err)
	other, _ := addLearner(ctx, t, direct, otherSpec)

	t.Run("Promote", func(t *testing.T) {
		counter.reset()
		_, err := m.Promote(ctx, other)
		require.ErrorIs(t, err, etcdmember.ErrLearnerStalled)
		var se *etcdmember.StalledError
		require.ErrorAs(t, err, &se)
		require.Equal(t, other, se.Progress.ID)
		require.False(t, se.Progress.Started)
		require.GreaterOrEqual(t, se.Progress.NoProgressFor, stall)
		require.NotZero(t, se.Progress.LeaderApplied)
		require.Equal(t, stall, se.Timeout)
		require.Contains(t, err.Error(), fmt.Sprintf("%x", other))
		require.Zero(t, counter.count(rpcMemberPromote), "no MemberPromote for a learner that has not started")
		require.Contains(t, members(ctx, t, direct), other, "Promote removes nothing")
	})

	neverStarts := func(context.Context, string) error { return nil }

	t.Run("Join does not remove a learner it did not add", func(t *testing.T) {
		res, err := m.Join(ctx, "other", []string{otherSpec.PeerURL}, etcdmember.JoinOptions{Cleanup: true}, neverStarts)
		require.ErrorIs(t, err, etcdmember.ErrLearnerStalled)
		require.False(t, res.Added)
		require.False(t, res.CleanedUp)
		require.Contains(t, members(ctx, t, direct), other)
	})

	t.Run("Join removes its learner when start fails", func(t *testing.T) {
		spec, err := c.NewMemberSpec("y")
		require.NoError(t, err)
		errStart := errors.New("etcd would not start")
		res, err := m.Join(ctx, spec.Name, []string{spec.PeerURL}, etcdmember.JoinOptions{Cleanup: true},
			func(context.Context, string) error { return errStart })
		require.ErrorIs(t, err, errStart)
		require.True(t, res.Added)
		require.True(t, res.CleanedUp)
		ms := members(ctx, t, direct)
		require.NotContains(t, ms, res.Member.ID)
		require.Contains(t, ms, other)
	})

	t.Run("Join removes its learner when it stalls", func(t *testing.T) {
		spec, err := c.NewMemberSpec("z")
		require.NoError(t, err)
		res, err := m.Join(ctx, spec.Name, []string{spec.PeerURL}, etcdmember.JoinOptions{Cleanup: true}, neverStarts)
		require.ErrorIs(t, err, etcdmember.ErrLearnerStalled)
		require.True(t, res.Added)
		require.True(t, res.CleanedUp)
		ms := members(ctx, t, direct)
		require.NotContains(t, ms, res.Member.ID)
		require.Contains(t, ms, other)
	})

	t.Run("Join without cleanup leaves its learner", func(t *testing.T) {
		spec, err := c.NewMemberSpec("w")
		require.NoError(t, err)
		res, err := m.Join(ctx, spec.Name, []string{spec.PeerURL}, etcdmember.JoinOptions{}, neverStarts)
		require.ErrorIs(t, err, etcdmember.ErrLearnerStalled)
		require.True(t, res.Added)
		require.False(t, res.CleanedUp)
		require.Contains(t, members(ctx, t, direct), res.Member.ID)
	})
}
