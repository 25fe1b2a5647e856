package apiserverdisco_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestPublisherSurvivesLeaseLoss(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	const prefix = "/test/leaseloss/"
	// The publisher reaches etcd through a proxy, so the test can also cut
	// it off while its lease is revoked.
	p := testenv.NewProxyFor(t, c.Member(0).Endpoint())
	pcli, err := c.NewClient("http://" + p.Addr())
	require.NoError(t, err)
	a := publish(t, ctx, pcli, "a", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix),
		apiserverdisco.WithTTL(time.Minute), apiserverdisco.WithBackoff(testenv.FastBackoff))
	publish(t, ctx, cli, "b", "10.0.0.2:6443", apiserverdisco.WithPrefix(prefix))
	w := newWatcher(t, ctx, apiserverdisco.EtcdPrefix(cli, prefix), apiserverdisco.WithDebounce(0))
	rec := record(t, w)
	rec.waitSet(t, "10.0.0.1:6443", "10.0.0.2:6443")

	// keyLease is the lease a's key is attached to in etcd, 0 if absent.
	keyLease := func() clientv3.LeaseID {
		resp, err := cli.Get(ctx, a.Key())
		require.NoError(t, err)
		if len(resp.Kvs) == 0 {
			return 0
		}
		return clientv3.LeaseID(resp.Kvs[0].Lease)
	}
	republished := func(old clientv3.LeaseID) func() error {
		return func() error {
			if l := a.Lease(); l == old || keyLease() != l {
				return errorf("key %s: registration lease %x, key lease %x, old lease %x", a.Key(), l, keyLease(), old)
			}
			return nil
		}
	}

	t.Run("revoked while the publisher is cut off", func(t *testing.T) {
		// Cut off, the publisher cannot put its key back at once, so the
		// watcher sees it go for certain.
		old := a.Lease()
		partition(p)
		_, err := cli.Revoke(ctx, old)
		require.NoError(t, err)
		// The watcher sees the address go...
		gone := rec.waitSet(t, "10.0.0.2:6443")
		heal(p)
		// ...and come back once the publisher is reachable again.
		back := rec.waitSet(t, "10.0.0.1:6443", "10.0.0.2:6443")
		require.Greater(t, back.Version, gone.Version)
		testenv.Eventually(t, guard, 10*time.Millisecond, republished(old))
	})

	t.Run("revoked", func(t *testing.T) {
		old := a.Lease()
		_, err := cli.Revoke(ctx, old)
		require.NoError(t, err)
		testenv.Eventually(t, guard, 10*time.Millisecond, republished(old))
		// The watcher may or may not have seen the key go: the publisher
		// put it back as soon as etcd deleted it.
		got, err := w.WaitForAddresses(ctx, 2)
		require.NoError(t, err)
		require.Equal(t, []string{"10.0.0.1:6443", "10.0.0.2:6443"}, got)
	})

	t.Run("key deleted", func(t *testing.T) {
		old := a.Lease()
		_, err := cli.Delete(ctx, a.Key())
		require.NoError(t, err)
		testenv.Eventually(t, guard, 10*time.Millisecond, republished(old))
	})

	select {
	case <-a.Done():
		t.Fatalf("the registration ended: %v", a.Err())
	default:
	}
	require.NoError(t, a.Err())
}

func TestRegistrationClose(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	const prefix = "/test/close/"
	r, err := apiserverdisco.Publish(ctx, cli, "a", "[2001:DB8::1]:6443", apiserverdisco.WithPrefix(prefix))
	require.NoError(t, err)
	require.Equal(t, prefix+"a", r.Key())
	require.Equal(t, "[2001:db8::1]:6443", r.Address())
	resp, err := cli.Get(ctx, r.Key())
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	require.JSONEq(t, `{"version":1,"address":"[2001:db8::1]:6443"}`, string(resp.Kvs[0].Value))
	require.Equal(t, int64(r.Lease()), resp.Kvs[0].Lease)

	require.NoError(t, r.Close())
	<-r.Done()
	require.ErrorIs(t, r.Err(), apiserverdisco.ErrClosed)
	resp, err = cli.Get(ctx, r.Key())
	require.NoError(t, err)
	require.Empty(t, resp.Kvs, "Close deletes the key")
	_, err = cli.TimeToLive(ctx, r.Lease())
	require.NoError(t, err)
	ttl, err := cli.TimeToLive(ctx, r.Lease())
	require.NoError(t, err)
	require.Equal(t, int64(-1), ttl.TTL, "Close revokes the lease")
	require.NoError(t, r.Close(), "a second Close")

	// Two registrations with one ID: the second put wins, the first stands
	// by and takes over when the key goes away; closing the one that lost
	// the key leaves the winner's key alone.
	first := publish(t, ctx, cli, "b", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix), apiserverdisco.WithBackoff(testenv.FastBackoff))
	second, err := apiserverdisco.Publish(ctx, cli, "b", "10.0.0.2:6443", apiserverdisco.WithPrefix(prefix))
	require.NoError(t, err)
	holder := func(r *apiserverdisco.Registration, value string) func() error {
		return func() error {
			resp, err := cli.Get(ctx, r.Key())
			if err != nil {
				return err
			}
			if len(resp.Kvs) == 0 || resp.Kvs[0].Lease != int64(r.Lease()) || !strings.Contains(string(resp.Kvs[0].Value), value) {
				return errorf("key %s is %v, want %s under lease %x", r.Key(), resp.Kvs, value, r.Lease())
			}
			return nil
		}
	}
	require.NoError(t, holder(second, "10.0.0.2:6443")())
	// The standby losing its lease takes a new one and keeps standing by:
	// the active one's key stays as it is. Lease changes only after the
	// standby's put-or-stand-by transaction, so the check below comes after
	// it.
	standbyLease := first.Lease()
	_, err = cli.Revoke(ctx, standbyLease)
	require.NoError(t, err)
	testenv.Eventually(t, guard, 10*time.Millisecond, func() error {
		if first.Lease() == standbyLease {
			return errorf("the standby still holds its revoked lease %x", standbyLease)
		}
		return nil
	})
	require.NoError(t, holder(second, "10.0.0.2:6443")(), "the standby took the key when its own lease was lost")
	require.NoError(t, second.Close())
	testenv.Eventually(t, guard, 10*time.Millisecond, holder(first, "10.0.0.1:6443"))

	third := publish(t, ctx, cli, "b", "10.0.0.3:6443", apiserverdisco.WithPrefix(prefix))
	require.NoError(t, first.Close())
	require.NoError(t, holder(third, "10.0.0.3:6443")())
}
