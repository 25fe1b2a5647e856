package testenv

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestEtcdThreeMemberCluster(t *testing.T) {
	start := time.Now()
	c := NewCluster(t, WithMembers(3))
	t.Logf("3-member cluster ready in %s", time.Since(start))
	require.Len(t, c.Members(), 3)

	cl0, err := c.Member(0).Client()
	require.NoError(t, err)
	cl2, err := c.Member(2).Client()
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = cl0.Put(ctx, "k", "v1")
	require.NoError(t, err)
	resp, err := cl2.Get(ctx, "k") // linearizable by default
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	require.Equal(t, "v1", string(resp.Kvs[0].Value))

	members, err := cl0.MemberList(ctx)
	require.NoError(t, err)
	require.Len(t, members.Members, 3)
	for _, m := range members.Members {
		require.False(t, m.IsLearner, "member %s", m.Name)
	}

	// One of three down: still a quorum.
	require.NoError(t, c.Member(1).Stop())
	_, err = cl2.Put(ctx, "k", "v2")
	require.NoError(t, err)
	resp, err = cl0.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "v2", string(resp.Kvs[0].Value))

	// Two of three down: a linearizable read fails within its deadline.
	require.NoError(t, c.Member(0).Stop())
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	_, err = cl2.Get(short, "k")
	cancelShort()
	require.Error(t, err, "linearizable read without quorum must fail")

	// Restarting them restores service.
	require.NoError(t, c.Member(0).Restart(ctx))
	require.NoError(t, c.Member(1).Restart(ctx))
	Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		defer rcancel()
		r, err := cl2.Get(rctx, "k")
		if err != nil {
			return err
		}
		if string(r.Kvs[0].Value) != "v2" {
			return errors.New("stale value")
		}
		return nil
	})
}

func TestEtcdLearnerJoins(t *testing.T) {
	c := NewCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	spec, err := c.NewMemberSpec("learner1")
	require.NoError(t, err)
	add, err := c.Client().MemberAddAsLearner(ctx, []string{spec.PeerURL})
	require.NoError(t, err)
	require.True(t, add.Member.IsLearner)

	m, err := c.StartMember(ctx, spec, InitialCluster(add, spec.Name))
	require.NoError(t, err)
	require.Equal(t, add.Member.ID, m.ID())

	Eventually(t, 30*time.Second, 50*time.Millisecond, func() error {
		list, err := c.Client().MemberList(ctx)
		if err != nil {
			return err
		}
		for _, mem := range list.Members {
			if mem.ID != add.Member.ID {
				continue
			}
			if !mem.IsLearner {
				return errors.New("member is not a learner")
			}
			if mem.Name != "learner1" || len(mem.ClientURLs) == 0 {
				return errors.New("learner not started yet (no name or client URLs)")
			}
			return nil
		}
		return errors.New("learner missing from member list")
	})
}

func TestFaultProxyDropsReplies(t *testing.T) {
	c := NewCluster(t, WithMembers(3))
	p := NewProxyFor(t, c.Member(0).Endpoint())
	viaProxy, err := c.NewClientConfig(clientv3.Config{Endpoints: []string{"http://" + p.Addr()}})
	require.NoError(t, err)
	direct, err := c.Member(2).Client()
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = viaProxy.Put(ctx, "warm", "up") // pass-through works
	require.NoError(t, err)

	p.DropReplies(true)
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	_, err = viaProxy.Put(short, "lost-reply", "written")
	cancelShort()
	require.Error(t, err, "the reply was dropped, the client must time out")
	require.ErrorIs(t, err, context.DeadlineExceeded)

	Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		r, err := direct.Get(ctx, "lost-reply")
		if err != nil {
			return err
		}
		if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "written" {
			return errors.New("the request did not reach etcd")
		}
		return nil
	})

	p.Pass()
	p.ResetAll()
	Eventually(t, 20*time.Second, 100*time.Millisecond, func() error {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		defer rcancel()
		_, err := viaProxy.Get(rctx, "lost-reply")
		return err
	})
}

func TestEtcdMutualTLS(t *testing.T) {
	c := NewCluster(t, WithMembers(1), WithMutualTLS())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	_, err := c.Client().Put(ctx, "tls", "ok")
	require.NoError(t, err)

	noCert, err := c.CA().ClientTLS(CertPair{})
	require.NoError(t, err)
	bad, err := c.NewClientConfig(clientv3.Config{TLS: noCert, DialTimeout: 2 * time.Second})
	if err == nil {
		short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
		_, err = bad.Get(short, "tls")
		cancelShort()
	}
	require.Error(t, err, "a client without a certificate must be rejected")
}
