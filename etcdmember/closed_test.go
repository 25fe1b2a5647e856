package etcdmember_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/etcdmember"
)

// TestClosedClient: a Manager whose etcd client has been closed changes
// nothing. The Manager dials connections of its own (the client's Dial
// still works after Close), so without a check every method went on
// sending RPCs — AddLearner really added a learner. Every method returns
// an error wrapping ErrClientClosed, saying the client is closed, before
// any RPC; New refuses a closed client; and a call that is waiting when
// the client is closed stops with that error.
func TestClosedClient(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	direct := c.Client()
	voter := c.Member(0).ID()
	spec, err := c.NewMemberSpec("learner")
	require.NoError(t, err)

	t.Run("closed before the call", func(t *testing.T) {
		counter := newRPCCounter()
		cli := countingClient(t, c, counter, c.Endpoints()...)
		m := newManager(t, cli)
		require.NoError(t, cli.Close())
		counter.reset()

		check := func(t *testing.T, method string, err error) {
			t.Helper()
			require.ErrorIs(t, err, etcdmember.ErrClientClosed, method)
			require.Contains(t, err.Error(), "etcd client is closed", method)
			require.Contains(t, err.Error(), method)
		}
		_, err := m.AddLearner(ctx, spec.Name, []string{spec.PeerURL})
		check(t, "AddLearner", err)
		_, err = m.Promote(ctx, voter)
		check(t, "Promote", err)
		_, err = m.Remove(ctx, voter, etcdmember.RemoveOptions{})
		check(t, "Remove", err)
		_, err = m.PromoteReady(ctx)
		check(t, "PromoteReady", err)
		_, err = m.WaitStarted(ctx, voter)
		check(t, "WaitStarted", err)
		started := false
		_, err = m.Join(ctx, spec.Name, []string{spec.PeerURL}, etcdmember.JoinOptions{},
			func(context.Context, string) error { started = true; return nil })
		check(t, "Join", err)
		require.False(t, started, "Join called start")
		require.Zero(t, counter.total(), "no RPC after Close: %v", counter.snapshot())

		_, err = etcdmember.New(cli)
		require.ErrorIs(t, err, etcdmember.ErrClientClosed)

		ms := members(ctx, t, direct)
		require.Len(t, ms, 1, "nothing was added")
		require.False(t, ms[voter].IsLearner)
	})

	t.Run("closed while waiting", func(t *testing.T) {
		add, err := direct.MemberAddAsLearner(ctx, []string{spec.PeerURL}) // never started
		require.NoError(t, err)
		id := add.Member.ID
		t.Cleanup(func() { _, _ = direct.MemberRemove(context.Background(), id) })
		counter := newRPCCounter()
		cli := countingClient(t, c, counter, c.Endpoints()...)
		progress := newProgressLog()
		m := newManager(t, cli, etcdmember.WithProgress(progress.record))
		errc := make(chan error, 1)
		go func() {
			_, err := m.Promote(ctx, id)
			errc <- err
		}()
		await(t, progress.first, "Promote to be waiting for the learner to start")
		require.NoError(t, cli.Close())
		var err2 error
		select {
		case err2 = <-errc:
		case <-ctx.Done():
			t.Fatal("Promote did not stop after its client was closed")
		}
		require.ErrorIs(t, err2, etcdmember.ErrClientClosed)
		require.Contains(t, err2.Error(), hexID(id))
		require.NoError(t, ctx.Err())
		require.Zero(t, counter.count(rpcMemberPromote))
	})
}
