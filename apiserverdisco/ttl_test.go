package apiserverdisco_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// etcdMaxTTL is etcd's lease.MaxLeaseTTL.
const etcdMaxTTL = 9_000_000_000 * time.Second

// TestTTLBounds: WithTTL takes every TTL etcd grants, rounded up to whole
// seconds without overflow, and refuses longer ones at the call (they
// used to overflow into a 1s lease).
func TestTTLBounds(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	const prefix = "/test/ttl/"

	for _, ttl := range []time.Duration{etcdMaxTTL + time.Nanosecond, etcdMaxTTL + time.Second, math.MaxInt64} {
		r, err := apiserverdisco.Publish(ctx, cli, "a", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix), apiserverdisco.WithTTL(ttl))
		require.ErrorIs(t, err, apiserverdisco.ErrInvalidInput, "Publish WithTTL(%s)", ttl)
		require.ErrorContains(t, err, "WithTTL")
		require.Nil(t, r)
		lw, err := apiserverdisco.StartLegacyKeyWriter(ctx, cli, "ttl", "n1", apiserverdisco.EtcdPrefix(cli, prefix), apiserverdisco.WithTTL(ttl))
		require.ErrorIs(t, err, apiserverdisco.ErrInvalidInput, "StartLegacyKeyWriter WithTTL(%s)", ttl)
		require.ErrorContains(t, err, "WithTTL")
		require.Nil(t, lw)
	}
	resp, err := cli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly())
	require.NoError(t, err)
	require.Zero(t, resp.Count, "refused TTLs write nothing")

	for ttl, want := range map[time.Duration]int64{
		etcdMaxTTL:                        9_000_000_000,
		etcdMaxTTL - 500*time.Millisecond: 9_000_000_000,
		1500 * time.Millisecond:           2,
		time.Second:                       1,
		math.MaxInt32*time.Second + 1:     math.MaxInt32 + 1,
	} {
		r := publish(t, ctx, cli, "a", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix), apiserverdisco.WithTTL(ttl))
		got, err := cli.TimeToLive(ctx, r.Lease())
		require.NoError(t, err)
		require.Equal(t, want, got.GrantedTTL, "Publish WithTTL(%s)", ttl)
		require.NoError(t, r.Close())
	}

	// The LegacyKeyWriter's election lease: the longest TTL too.
	publish(t, ctx, cli, "a", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix))
	logs, log := newLogRecorder()
	lw := startWriter(t, ctx, cli, "n1", apiserverdisco.EtcdPrefix(cli, prefix), apiserverdisco.WithTTL(etcdMaxTTL), apiserverdisco.WithLogger(log))
	logs.waitFor(t, "leading")
	require.True(t, lw.Leader())
	el, err := cli.Get(ctx, apiserverdisco.LegacyWriterElectionPrefix+"k3s/", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Len(t, el.Kvs, 1)
	got, err := cli.TimeToLive(ctx, clientv3.LeaseID(el.Kvs[0].Lease))
	require.NoError(t, err)
	require.EqualValues(t, 9_000_000_000, got.GrantedTTL, "the election lease")
}
