package etcdmember_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/kubeboot/kubeboot/etcdmember"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// TestBadInput: bad input is an error at the call, before any RPC, and
// never a panic.
func TestBadInput(t *testing.T) {
	_, err := etcdmember.New(nil)
	require.ErrorIs(t, err, etcdmember.ErrInvalidArgument)

	counter := newRPCCounter()
	// No server behind this endpoint: nothing may be sent anyway.
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"http://127.0.0.1:1"},
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(counter.interceptor())},
		Logger:      zap.NewNop(),
	})
	require.NoError(t, err)
	defer cli.Close()

	for _, opt := range []etcdmember.Option{
		nil,
		etcdmember.WithBackoff(nil),
		etcdmember.WithRPCTimeout(0),
		etcdmember.WithRPCTimeout(-time.Second),
		etcdmember.WithStallTimeout(0),
		etcdmember.WithProgress(nil),
		etcdmember.WithMaxPromotionsPerPass(0),
		etcdmember.WithEvictStalledAfter(-1),
	} {
		_, err := etcdmember.New(cli, opt)
		require.ErrorIs(t, err, etcdmember.ErrInvalidArgument)
	}

	m := newManager(t, cli)
	ctx := testCtx(t)
	start := func(context.Context, string) error { return nil }
	for name, call := range map[string]func() error{
		"AddLearner empty name": func() error { _, err := m.AddLearner(ctx, "", []string{"http://127.0.0.1:2380"}); return err },
		"AddLearner no URLs":    func() error { _, err := m.AddLearner(ctx, "n", nil); return err },
		"AddLearner bad URL":    func() error { _, err := m.AddLearner(ctx, "n", []string{"127.0.0.1:2380"}); return err },
		"AddLearner path":       func() error { _, err := m.AddLearner(ctx, "n", []string{"http://127.0.0.1:2380/x"}); return err },
		"AddLearner scheme":     func() error { _, err := m.AddLearner(ctx, "n", []string{"unix:///run/etcd.sock"}); return err },
		"Promote zero ID":       func() error { _, err := m.Promote(ctx, 0); return err },
		"WaitStarted zero ID":   func() error { _, err := m.WaitStarted(ctx, 0); return err },
		"Remove zero ID":        func() error { _, err := m.Remove(ctx, 0, etcdmember.RemoveOptions{}); return err },
		"Join nil start": func() error {
			_, err := m.Join(ctx, "n", []string{"http://127.0.0.1:2380"}, etcdmember.JoinOptions{}, nil)
			return err
		},
		"Join empty name": func() error {
			_, err := m.Join(ctx, "", []string{"http://127.0.0.1:2380"}, etcdmember.JoinOptions{}, start)
			return err
		},
		"Join bad URL": func() error {
			_, err := m.Join(ctx, "n", []string{"http://"}, etcdmember.JoinOptions{}, start)
			return err
		},
	} {
		err := call()
		require.ErrorIs(t, err, etcdmember.ErrInvalidArgument, name)
	}
	require.Zero(t, counter.total(), "no RPC may be sent for bad input: %v", counter.snapshot())

	// A backoff factory that returns nil is caught at the call.
	m2, err := etcdmember.New(cli, etcdmember.WithBackoff(func() backoff.BackOff { return nil }))
	require.NoError(t, err)
	_, err = m2.Promote(ctx, 1)
	require.ErrorIs(t, err, etcdmember.ErrInvalidArgument)
}

func TestAddLearnerIdempotent(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	m := newManager(t, c.Client())
	spec, err := c.NewMemberSpec("learner1")
	require.NoError(t, err)

	first, err := m.AddLearner(ctx, spec.Name, []string{spec.PeerURL})
	require.NoError(t, err)
	require.NotZero(t, first.ID)
	require.True(t, first.IsLearner)

	second, err := m.AddLearner(ctx, spec.Name, []string{spec.PeerURL})
	require.NoError(t, err)
	require.Equal(t, first.ID, second.ID)

	ms := members(ctx, t, c.Client())
	require.Len(t, ms, 2, "one voter and exactly one learner")
	require.True(t, ms[first.ID].IsLearner)

	// The reply to MemberAdd is lost: AddLearner finds the member by its
	// peer URL instead of adding a second one.
	_, err = c.Client().MemberRemove(ctx, first.ID)
	require.NoError(t, err)
	p := testenv.NewProxyFor(t, c.Member(0).Endpoint())
	addSent := make(chan struct{})
	var once sync.Once
	counter := newRPCCounter()
	counter.before = func(method string) {
		if method == rpcMemberAdd {
			once.Do(func() {
				p.DropReplies(true)
				close(addSent)
			})
		}
	}
	lossy := newManager(t, countingClient(t, c, counter, "http://"+p.Addr()), etcdmember.WithRPCTimeout(2*time.Second))
	// A new peer URL: etcd derives member IDs from the peer URLs and the
	// second, so re-adding a just-removed member's URL can collide with
	// its (removed) ID.
	spec2, err := c.NewMemberSpec("learner2")
	require.NoError(t, err)
	type result struct {
		mem etcdmember.Member
		err error
	}
	done := make(chan result, 1)
	go func() {
		mem, err := lossy.AddLearner(ctx, spec2.Name, []string{spec2.PeerURL})
		done <- result{mem, err}
	}()
	await(t, addSent, "MemberAdd to be sent")
	var added uint64
	eventually(ctx, t, 20*time.Millisecond, func(ctx context.Context) error {
		ms, err := listMembers(ctx, c.Client())
		if err != nil {
			return err
		}
		for id, mem := range ms {
			if mem.IsLearner {
				added = id
				return nil
			}
		}
		return errors.New("the add has not been applied yet")
	})
	p.Pass()
	p.ResetAll()
	r := <-done
	require.NoError(t, r.err)
	require.Equal(t, added, r.mem.ID)
	require.Equal(t, 1, counter.count(rpcMemberAdd), "no second MemberAdd")
	require.Len(t, members(ctx, t, c.Client()), 2)

	// Removed and re-added at once with the same peer URL (a node
	// rejoining): etcd may refuse within the same second ("member not
	// found": the ID it derives is the removed one); AddLearner retries.
	_, err = c.Client().MemberRemove(ctx, r.mem.ID)
	require.NoError(t, err)
	again, err := m.AddLearner(ctx, spec2.Name, []string{spec2.PeerURL})
	require.NoError(t, err)
	require.NotEqual(t, r.mem.ID, again.ID)
	require.Len(t, members(ctx, t, c.Client()), 2)
}

func TestAddLearnerNameConflict(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	m0 := c.Member(0)

	logs, logger := newLogs(t)
	m := newManager(t, c.Client(), etcdmember.WithLogger(logger))

	// Same peer URL as the running member m0, different name.
	_, err := m.AddLearner(ctx, "intruder", []string{m0.PeerURL})
	require.ErrorIs(t, err, etcdmember.ErrConflict)
	var ce *etcdmember.ConflictError
	require.ErrorAs(t, err, &ce)
	require.True(t, ce.SameURL)
	require.Equal(t, m0.ID(), ce.Existing.ID)
	require.Contains(t, err.Error(), `"intruder"`)
	require.Contains(t, err.Error(), `"`+m0.Name+`"`)

	// A started learner "l1"; then "l1" comes back with a new peer URL.
	spec, err := c.NewMemberSpec("l1")
	require.NoError(t, err)
	l1, err := m.AddLearner(ctx, spec.Name, []string{spec.PeerURL})
	require.NoError(t, err)
	_, err = c.StartMember(ctx, spec, initialClusterOf(ctx, t, c.Client(), l1.ID, spec.Name))
	require.NoError(t, err)
	_, err = m.WaitStarted(ctx, l1.ID)
	require.NoError(t, err)

	moved, err := c.NewMemberSpec("l1")
	require.NoError(t, err)
	_, err = m.AddLearner(ctx, "l1", []string{moved.PeerURL})
	require.ErrorAs(t, err, &ce)
	require.False(t, ce.SameURL)
	require.Equal(t, l1.ID, ce.Existing.ID)
	require.Contains(t, err.Error(), `"l1"`)
	require.Contains(t, err.Error(), spec.PeerURL)
	require.Len(t, members(ctx, t, c.Client()), 2, "a conflict adds nothing")

	// With WithReplaceStaleMember the stale learner is removed first; the
	// learner limit (1) then has room for the new one.
	r := newManager(t, c.Client(), etcdmember.WithLogger(logger), etcdmember.WithReplaceStaleMember())
	fresh, err := r.AddLearner(ctx, "l1", []string{moved.PeerURL})
	require.NoError(t, err)
	ms := members(ctx, t, c.Client())
	require.Len(t, ms, 2)
	require.NotContains(t, ms, l1.ID, "the stale member is gone")
	require.Contains(t, ms, fresh.ID)
	require.Equal(t, 1, logs.count("removing stale member"))
}

func TestAddLearnerTooManyLearners(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t, testenv.WithMaxLearners(1))
	logs, logger := newLogs(t)
	m := newManager(t, c.Client(), etcdmember.WithLogger(logger))

	specA, err := c.NewMemberSpec("a")
	require.NoError(t, err)
	a, err := m.AddLearner(ctx, specA.Name, []string{specA.PeerURL})
	require.NoError(t, err)
	_, err = c.StartMember(ctx, specA, initialClusterOf(ctx, t, c.Client(), a.ID, specA.Name))
	require.NoError(t, err)

	specB, err := c.NewMemberSpec("b")
	require.NoError(t, err)
	type result struct {
		mem etcdmember.Member
		err error
	}
	done := make(chan result, 1)
	limitLogged := logs.when("learner limit is reached")
	go func() {
		mem, err := m.AddLearner(ctx, specB.Name, []string{specB.PeerURL})
		done <- result{mem, err}
	}()
	await(t, limitLogged, "AddLearner(b) to hit the learner limit")
	select {
	case r := <-done:
		t.Fatalf("AddLearner(b) returned while the limit was reached: %+v, %v", r.mem, r.err)
	default:
	}

	res, err := m.Promote(ctx, a.ID)
	require.NoError(t, err)
	require.False(t, res.AlreadyVoter)

	var r result
	select {
	case r = <-done:
	case <-time.After(guard):
		t.Fatal("AddLearner(b) did not return after a was promoted")
	}
	require.NoError(t, r.err)
	require.True(t, r.mem.IsLearner)
	ms := members(ctx, t, c.Client())
	require.False(t, ms[a.ID].IsLearner)
	require.True(t, ms[r.mem.ID].IsLearner)
	// The wait was logged once (one distinct state), at level 0, however
	// many retries it took, and nothing was logged as an error.
	require.Equal(t, 1, logs.count(`"level"=0 "msg"="the cluster's learner limit is reached`), logs.all())
	require.Zero(t, logs.count(`"error"`), logs.all())
}

// initialClusterOf builds the initial-cluster string for a member added
// outside Join, from a fresh member list.
func initialClusterOf(ctx context.Context, t testing.TB, cli *clientv3.Client, id uint64, name string) string {
	t.Helper()
	resp := memberList(ctx, t, cli)
	for _, m := range resp.Members {
		if m.ID == id {
			return testenv.InitialCluster(&clientv3.MemberAddResponse{Members: resp.Members, Member: m}, name)
		}
	}
	t.Fatalf("member %x not in the list", id)
	return ""
}
