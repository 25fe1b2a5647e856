package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestEtcdProcessMember: an etcd v3.7.3 process joins an embedded v3.6
// cluster the way a rolling upgrade adds a member — MemberAddAsLearner,
// started with the initial cluster, promoted once caught up — and then
// serves reads and writes, survives Stop/Restart on its data directory, and
// can take over leadership.
func TestEtcdProcessMember(t *testing.T) {
	c := NewCluster(t, WithMembers(3), WithEtcdVersion("embedded"))
	for _, m := range c.Members() {
		require.Equal(t, EmbeddedEtcdVersion(), m.Version())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := c.Client()
	_, err := cl.Put(ctx, "before", "v36")
	require.NoError(t, err)

	spec, err := c.NewMemberSpec("v37")
	require.NoError(t, err)
	// etcd refuses membership changes until its peers have been connected
	// for a while (strict reconfig check): "unhealthy cluster" is retried.
	var add *clientv3.MemberAddResponse
	Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		add, err = cl.MemberAddAsLearner(ctx, []string{spec.PeerURL})
		return err
	})
	m, err := c.StartMember(ctx, spec, InitialCluster(add, spec.Name), WithMemberVersion(EtcdVersion))
	require.NoError(t, err)
	require.Equal(t, EtcdVersion, m.Version())
	require.True(t, m.Running())
	require.Equal(t, add.Member.ID, m.ID())

	// It is the etcd it claims to be, and the others are still embedded.
	st, err := cl.Status(ctx, m.ClientURL)
	require.NoError(t, err)
	require.Equal(t, strings.TrimPrefix(EtcdVersion, "v"), st.Version)
	require.True(t, st.IsLearner)
	st0, err := cl.Status(ctx, c.Member(0).ClientURL)
	require.NoError(t, err)
	require.Equal(t, strings.TrimPrefix(EmbeddedEtcdVersion(), "v"), st0.Version)

	// Promote once the learner has caught up (etcd refuses before).
	Eventually(t, time.Minute, 100*time.Millisecond, func() error {
		_, err := cl.MemberPromote(ctx, add.Member.ID)
		return err
	})
	list, err := cl.MemberList(ctx)
	require.NoError(t, err)
	require.Len(t, list.Members, 4)
	for _, mem := range list.Members {
		require.False(t, mem.IsLearner, "member %s", mem.Name)
	}

	// Reads and writes through the new member, both ways.
	mcl, err := m.Client()
	require.NoError(t, err)
	got, err := mcl.Get(ctx, "before")
	require.NoError(t, err)
	require.Len(t, got.Kvs, 1)
	require.Equal(t, "v36", string(got.Kvs[0].Value))
	_, err = mcl.Put(ctx, "through-v37", "yes")
	require.NoError(t, err)
	c0, err := c.Member(0).Client()
	require.NoError(t, err)
	got, err = c0.Get(ctx, "through-v37")
	require.NoError(t, err)
	require.Len(t, got.Kvs, 1)

	// Stop and Restart keep its identity and data.
	id := m.ID()
	require.NoError(t, m.Stop())
	require.False(t, m.Running())
	require.Zero(t, m.ID())
	require.NoError(t, m.Stop(), "stopping a stopped member")
	_, err = cl.Put(ctx, "while-down", "1")
	require.NoError(t, err)
	require.NoError(t, m.Restart(ctx))
	require.Equal(t, id, m.ID())
	Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		defer rcancel()
		got, err := mcl.Get(rctx, "while-down")
		if err != nil {
			return err
		}
		if len(got.Kvs) != 1 {
			return errors.New("while-down not replicated yet")
		}
		return nil
	})

	// Leadership moves to it on request, and IsLeader says so.
	var leader *Member
	for _, mem := range c.Members() {
		if mem.IsLeader() {
			leader = mem
		}
	}
	require.NotNil(t, leader, "no leader among %d members", len(c.Members()))
	lcl, err := leader.Client()
	require.NoError(t, err)
	_, err = lcl.MoveLeader(ctx, m.ID())
	require.NoError(t, err)
	Eventually(t, 30*time.Second, 50*time.Millisecond, func() error {
		if !m.IsLeader() {
			return fmt.Errorf("member %s is not the leader", m.Name)
		}
		return nil
	})

	// Killed, it is gone; its log is in its file.
	require.NoError(t, m.Kill())
	require.False(t, m.Running())
	log, err := os.ReadFile(m.LogFile)
	require.NoError(t, err)
	require.Contains(t, string(log), "etcd "+EtcdVersion+" member v37")
}

// TestEtcdProcessCluster: with WithEtcdVersion(EtcdVersion) every member is
// an etcd process, with mutual TLS and the learner limit passed as flags.
func TestEtcdProcessCluster(t *testing.T) {
	c := NewCluster(t, WithMembers(3), WithEtcdVersion(EtcdVersion), WithMutualTLS(), WithMaxLearners(2))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	leaders := 0
	for _, m := range c.Members() {
		require.Equal(t, EtcdVersion, m.Version())
		require.NotZero(t, m.ID())
		if m.IsLeader() {
			leaders++
		}
	}
	require.Equal(t, 1, leaders)
	cl := c.Client()
	for _, m := range c.Members() {
		st, err := cl.Status(ctx, m.ClientURL)
		require.NoError(t, err)
		require.Equal(t, strings.TrimPrefix(EtcdVersion, "v"), st.Version)
	}

	// Mutual TLS: a client without a certificate is refused.
	noCert := c.ClientTLS().Clone()
	noCert.Certificates = nil
	bare, err := c.NewClientConfig(clientv3.Config{TLS: noCert, DialTimeout: 2 * time.Second})
	if err == nil {
		short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
		_, err = bare.Get(short, "k")
		cancelShort()
	}
	require.Error(t, err, "a client without a certificate must be refused")

	// --max-learners=2: two learners are accepted, a third is refused.
	// ("unhealthy cluster": etcd refuses membership changes until its
	// peers have been connected for a while; retried.)
	for i := range 3 {
		spec, err := c.NewMemberSpec(fmt.Sprintf("l%d", i))
		require.NoError(t, err)
		Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
			_, err = cl.MemberAddAsLearner(ctx, []string{spec.PeerURL})
			if err != nil && strings.Contains(err.Error(), "unhealthy cluster") {
				return err
			}
			return nil
		})
		if i < 2 {
			require.NoError(t, err)
		} else {
			require.ErrorContains(t, err, "too many learner members")
		}
	}

	// Kill a follower: the other two still serve; Restart brings it back.
	m := c.Member(0)
	if m.IsLeader() {
		m = c.Member(1)
	}
	require.NoError(t, m.Kill())
	_, err = cl.Put(ctx, "k", "v")
	require.NoError(t, err)
	require.NoError(t, m.Restart(ctx))
	mcl, err := m.Client()
	require.NoError(t, err)
	Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		defer rcancel()
		got, err := mcl.Get(rctx, "k")
		if err != nil {
			return err
		}
		if len(got.Kvs) != 1 {
			return errors.New("k not replicated yet")
		}
		return nil
	})
}
