package apiserverdisco_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

func newWatcher(t testing.TB, ctx context.Context, src apiserverdisco.Source, opts ...apiserverdisco.Option) *apiserverdisco.Watcher {
	t.Helper()
	w, err := apiserverdisco.NewWatcher(ctx, src, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close() })
	return w
}

func publish(t testing.TB, ctx context.Context, cli *clientv3.Client, id, addr string, opts ...apiserverdisco.Option) *apiserverdisco.Registration {
	t.Helper()
	r, err := apiserverdisco.Publish(ctx, cli, id, addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func TestWaitForAddressesNotYetSet(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	const prefix = "/test/notyet/"
	rpcs := newRPCCounter()
	wcli, err := c.NewClientConfig(clientv3.Config{DialOptions: rpcs.dialOptions()})
	require.NoError(t, err)
	logs, log := newLogRecorder()
	var errs errorLog
	w := newWatcher(t, ctx, apiserverdisco.EtcdPrefix(wcli, prefix),
		apiserverdisco.WithBackoff(minutesBackoff), apiserverdisco.WithLogger(log), apiserverdisco.WithErrorHandler(errs.handle))

	// Nobody has published: the watcher has listed nothing and waits.
	logs.waitFor(t, "not yet set")
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = w.WaitForAddresses(short, 1)
	cancel()
	require.ErrorIs(t, err, apiserverdisco.ErrNotYetSet)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, prefix, "the error names the source")
	require.Zero(t, w.Current().Version)

	type result struct {
		addrs []string
		err   error
	}
	got := make(chan result, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, guard)
		defer cancel()
		a, err := w.WaitForAddresses(wctx, 1)
		got <- result{a, err}
	}()
	publish(t, ctx, c.Client(), "cp-1", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix))
	r := <-got
	require.NoError(t, r.err)
	require.Equal(t, []string{"10.0.0.1:6443"}, r.addrs)

	// It came through the watch: one list, and any retry would have waited
	// ten minutes.
	ranges, _, watches := rpcs.snapshot()
	require.Equal(t, 1, ranges, "Range requests by the watcher")
	require.Equal(t, 1, watches, "watches created by the watcher")
	// Waiting for the first address was never an error.
	require.Empty(t, errs.all())
	require.Empty(t, logs.errorLines())
}

func TestPublisherDeathExpires(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	const prefix = "/test/death/"
	w := newWatcher(t, ctx, apiserverdisco.EtcdPrefix(cli, prefix), apiserverdisco.WithDebounce(50*time.Millisecond))
	rec := record(t, w)

	actx, die := context.WithCancel(ctx)
	a := publish(t, actx, cli, "a", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix), apiserverdisco.WithTTL(2*time.Second))
	publish(t, ctx, cli, "b", "10.0.0.2:6443", apiserverdisco.WithPrefix(prefix), apiserverdisco.WithTTL(time.Minute))
	before := rec.waitSet(t, "10.0.0.1:6443", "10.0.0.2:6443")

	// The publisher stops refreshing its lease without Close, like a
	// process that hangs or dies: nothing deletes its key.
	die()
	<-a.Done()
	require.ErrorIs(t, a.Err(), context.Canceled)
	resp, err := cli.Get(ctx, a.Key())
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1, "the key must outlive the publisher until its lease expires")

	// The lease expires within its TTL and the watcher delivers the smaller
	// set, as the very next delivery.
	after := rec.waitSet(t, "10.0.0.2:6443")
	require.Equal(t, before.Version+1, after.Version, "deliveries between the two sets: %v", rec.all())
	resp, err = cli.Get(ctx, a.Key())
	require.NoError(t, err)
	require.Empty(t, resp.Kvs)
	require.NoError(t, a.Close(), "closing after the key expired is not an error")
}

func TestNoEmptySetOnOutage(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	ctx := testCtx(t)
	c := testenv.NewCluster(t, testenv.WithMembers(3))
	const prefix = "/test/outage/"
	// The publishers' leases must outlive the outage.
	for i, addr := range []string{"10.0.0.1:6443", "10.0.0.2:6443"} {
		publish(t, ctx, c.Client(), fmt.Sprintf("cp-%d", i), addr,
			apiserverdisco.WithPrefix(prefix), apiserverdisco.WithTTL(2*time.Minute), apiserverdisco.WithBackoff(testenv.FastBackoff))
	}
	// The watcher talks to member 2 only, which loses its quorum below.
	survivor := c.Member(2)
	wcli, err := c.NewClientConfig(clientv3.Config{Endpoints: []string{survivor.ClientURL}, MaxUnaryRetries: 2})
	require.NoError(t, err)
	var errs errorLog
	w := newWatcher(t, ctx, apiserverdisco.EtcdPrefix(wcli, prefix), apiserverdisco.WithDebounce(50*time.Millisecond),
		apiserverdisco.WithErrorHandler(errs.handle), apiserverdisco.WithBackoff(testenv.FastBackoff), apiserverdisco.WithRequestTimeout(2*time.Second))
	rec := record(t, w)
	rec.waitSet(t, "10.0.0.1:6443", "10.0.0.2:6443")
	before := len(errs.all())

	// Outage: two of three members stop. Member 2 has no leader; etcd
	// cancels its require-leader watch, and every re-list fails. Wait for
	// several failed, backed-off attempts.
	var wg sync.WaitGroup
	for _, m := range c.Members()[:2] {
		wg.Go(func() { _ = m.Stop() })
	}
	wg.Wait()
	errs.waitCount(t, before+3, "three failed re-lists during the outage")
	for _, err := range errs.all()[before:] {
		require.ErrorContains(t, err, prefix, "errors name the source")
		t.Logf("during the outage: %v", err)
	}

	// Back: both members restart (each waits for a quorum, so together).
	errc := make(chan error, 2)
	for _, m := range c.Members()[:2] {
		wg.Go(func() { errc <- m.Restart(ctx) })
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		require.NoError(t, err)
	}

	// The watcher is live again: a third apiserver shows up.
	publish(t, ctx, c.Client(), "cp-2", "10.0.0.3:6443", apiserverdisco.WithPrefix(prefix), apiserverdisco.WithTTL(2*time.Minute))
	last := rec.waitSet(t, "10.0.0.1:6443", "10.0.0.2:6443", "10.0.0.3:6443")
	// Nothing was delivered in between: no empty set, no shrunken set.
	require.Equal(t, uint64(2), last.Version, "deliveries: %v", rec.all())
	for _, s := range rec.all() {
		require.Subset(t, s.Addresses, []string{"10.0.0.1:6443", "10.0.0.2:6443"}, "a delivery lost an address: %v", rec.all())
	}
}

func TestResumeAfterCompaction(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	const prefix = "/test/compaction/"
	p := testenv.NewProxyFor(t, c.Member(0).Endpoint())
	wcli, err := c.NewClient("http://" + p.Addr())
	require.NoError(t, err)
	logs, log := newLogRecorder()
	w := newWatcher(t, ctx, apiserverdisco.EtcdPrefix(wcli, prefix), apiserverdisco.WithDebounce(0),
		apiserverdisco.WithLogger(log), apiserverdisco.WithBackoff(testenv.FastBackoff))
	rec := record(t, w)
	a := publish(t, ctx, cli, "a", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix))
	publish(t, ctx, cli, "b", "10.0.0.2:6443", apiserverdisco.WithPrefix(prefix))
	rec.waitSet(t, "10.0.0.1:6443", "10.0.0.2:6443")

	// Pause the watcher: its connection is cut and no traffic passes.
	partition(p)
	// Meanwhile the keys change many times...
	for i := range 100 {
		_, err := cli.Put(ctx, prefix+"churn", fmt.Sprintf(`{"version":1,"address":"10.1.0.%d:6443"}`, i))
		require.NoError(t, err)
	}
	_, err = cli.Delete(ctx, prefix+"churn")
	require.NoError(t, err)
	require.NoError(t, a.Close())
	publish(t, ctx, cli, "c", "10.0.0.3:6443", apiserverdisco.WithPrefix(prefix))
	// ...and the history the watcher would resume from is compacted away.
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	require.NoError(t, err)
	_, err = cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical())
	require.NoError(t, err)

	heal(p)
	// The resumed watch hits the compaction; the watcher re-lists and
	// converges.
	logs.waitFor(t, "compaction")
	rec.waitSet(t, "10.0.0.2:6443", "10.0.0.3:6443")
	require.Equal(t, []string{"10.0.0.2:6443", "10.0.0.3:6443"}, w.Current().Addresses)
}

func TestDebounceFlap(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	const prefix = "/test/flap/"
	publish(t, ctx, cli, "a", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix))
	// A window much longer than the three operations below take.
	w := newWatcher(t, ctx, apiserverdisco.EtcdPrefix(cli, prefix), apiserverdisco.WithDebounce(3*time.Second))
	first, err := w.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, apiserverdisco.Snapshot{Addresses: []string{"10.0.0.1:6443"}, Version: 1}, first)

	// b flaps: publish, unpublish, publish.
	b1, err := apiserverdisco.Publish(ctx, cli, "b", "10.0.0.2:6443", apiserverdisco.WithPrefix(prefix))
	require.NoError(t, err)
	require.NoError(t, b1.Close())
	publish(t, ctx, cli, "b", "10.0.0.2:6443", apiserverdisco.WithPrefix(prefix))

	got, err := w.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, apiserverdisco.Snapshot{Addresses: []string{"10.0.0.1:6443", "10.0.0.2:6443"}, Version: 2}, got,
		"the flap must yield exactly one delivery")

	// And the next change is the third delivery: nothing else came out of
	// the flap later.
	publish(t, ctx, cli, "c", "10.0.0.3:6443", apiserverdisco.WithPrefix(prefix))
	got, err = w.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, apiserverdisco.Snapshot{Addresses: []string{"10.0.0.1:6443", "10.0.0.2:6443", "10.0.0.3:6443"}, Version: 3}, got)
}

func TestMalformedValueSkipped(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	const prefix = "/test/malformed/"
	put := func(key, value string) {
		t.Helper()
		_, err := cli.Put(ctx, key, value)
		require.NoError(t, err)
	}

	t.Run("prefix", func(t *testing.T) {
		put(prefix+"bad-json", "{not json")
		put(prefix+"bad-address", `{"version":1,"address":"10.0.0.9"}`)
		put(prefix+"nested/id", `{"version":1,"address":"10.0.0.8:6443"}`)
		good := publish(t, ctx, cli, "good", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix))
		var errs errorLog
		w := newWatcher(t, ctx, apiserverdisco.EtcdPrefix(cli, prefix), apiserverdisco.WithDebounce(0), apiserverdisco.WithErrorHandler(errs.handle))
		rec := record(t, w)
		rec.waitSet(t, "10.0.0.1:6443")
		errs.waitMalformed(t, prefix+"bad-json")
		require.ErrorIs(t, errs.waitMalformed(t, prefix+"bad-address"), apiserverdisco.ErrInvalidAddress)
		require.ErrorIs(t, errs.waitMalformed(t, prefix+"nested/id"), apiserverdisco.ErrInvalidID)

		// Garbage over a good key, seen through the watch: reported, and
		// the key's last good address stays.
		put(good.Key(), "\x00\xffgarbage")
		errs.waitMalformed(t, good.Key())
		publish(t, ctx, cli, "other", "10.0.0.2:6443", apiserverdisco.WithPrefix(prefix))
		rec.waitSet(t, "10.0.0.1:6443", "10.0.0.2:6443")
		for _, s := range rec.all() {
			require.Contains(t, s.Addresses, "10.0.0.1:6443", "a malformed value erased a good address: %v", rec.all())
		}
	})

	t.Run("legacy", func(t *testing.T) {
		const key = "rke2/apiaddresses"
		put(key, `["10.0.0.1:6443","not an address","[10.0.0.2]:6443",""]`)
		var errs errorLog
		w := newWatcher(t, ctx, apiserverdisco.LegacyKey(cli, "rke2"), apiserverdisco.WithDebounce(0), apiserverdisco.WithErrorHandler(errs.handle))
		rec := record(t, w)
		rec.waitSet(t, "10.0.0.1:6443")
		// One report for the value, listing its three bad entries.
		me := errs.waitMalformed(t, key)
		require.ErrorIs(t, me, apiserverdisco.ErrInvalidAddress)
		require.Equal(t, 3, me.Count)
		require.Equal(t, []string{"not an address", "[10.0.0.2]:6443", ""}, me.Entries)

		// A value that is not JSON at all: reported, the set stays.
		put(key, "{garbage")
		awaitCond(t, &errs.b, "the garbage value reported", func() bool { return len(errs.malformedAt(key)) == 2 })
		require.Len(t, errs.malformedAt(key), 2, "the first value must have been reported once")
		require.Zero(t, errs.malformedAt(key)[1].Count)
		require.Equal(t, apiserverdisco.Snapshot{Addresses: []string{"10.0.0.1:6443"}, Version: 1}, w.Current())
		put(key, `["10.0.0.3:6443"]`)
		got := rec.waitSet(t, "10.0.0.3:6443")
		require.Equal(t, uint64(2), got.Version, "the garbage must not have been delivered: %v", rec.all())
	})
}

func TestLegacyRKE2Key(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	const key = "rke2/apiaddresses"
	logs, log := newLogRecorder()
	w := newWatcher(t, ctx, apiserverdisco.LegacyKey(cli, "rke2"), apiserverdisco.WithDebounce(0), apiserverdisco.WithLogger(log))
	rec := record(t, w)
	logs.waitFor(t, "the key does not exist")

	// What RKE2 writes: json.Marshal of a []string, no lease.
	_, err := cli.Put(ctx, key, `["10.0.0.1:6443","10.0.0.2:6443"]`)
	require.NoError(t, err)
	first := rec.waitSet(t, "10.0.0.1:6443", "10.0.0.2:6443")
	require.Equal(t, uint64(1), first.Version)

	// A cluster reset writes "": not yet set, the last good set stays.
	_, err = cli.Put(ctx, key, "")
	require.NoError(t, err)
	logs.waitFor(t, "the key's value is empty")
	require.Equal(t, first, w.Current())

	_, err = cli.Put(ctx, key, `["10.0.0.3:6443"]`)
	require.NoError(t, err)
	next := rec.waitSet(t, "10.0.0.3:6443")
	require.Equal(t, uint64(2), next.Version, "the empty value must not have been delivered: %v", rec.all())
	require.Empty(t, logs.errorLines(), "not yet set is not an error")
}

func TestWatcherLifecycle(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)

	t.Run("Close ends blocked calls", func(t *testing.T) {
		w, err := apiserverdisco.NewWatcher(ctx, apiserverdisco.EtcdPrefix(c.Client(), "/test/lifecycle/"))
		require.NoError(t, err)
		errc := make(chan error, 2)
		go func() { _, err := w.Next(ctx); errc <- err }()
		go func() { _, err := w.WaitForAddresses(ctx, 1); errc <- err }()
		require.NoError(t, w.Close())
		require.ErrorIs(t, <-errc, apiserverdisco.ErrClosed)
		require.ErrorIs(t, <-errc, apiserverdisco.ErrClosed)
		require.ErrorIs(t, w.Err(), apiserverdisco.ErrClosed)
		require.NoError(t, w.Close(), "a second Close")
	})

	t.Run("context end stops it", func(t *testing.T) {
		wctx, cancel := context.WithCancel(ctx)
		w, err := apiserverdisco.NewWatcher(wctx, apiserverdisco.EtcdPrefix(c.Client(), "/test/lifecycle/"))
		require.NoError(t, err)
		cancel()
		<-w.Done()
		require.ErrorIs(t, w.Err(), context.Canceled)
		_, err = w.Next(ctx)
		require.ErrorIs(t, err, context.Canceled)
	})

	t.Run("a closed client stops it", func(t *testing.T) {
		cli, err := c.NewClient()
		require.NoError(t, err)
		w, err := apiserverdisco.NewWatcher(ctx, apiserverdisco.EtcdPrefix(cli, "/test/lifecycle/"), apiserverdisco.WithBackoff(testenv.FastBackoff))
		require.NoError(t, err)
		require.NoError(t, cli.Close())
		select {
		case <-w.Done():
		case <-time.After(guard):
			t.Fatal("the watcher did not stop after its client was closed")
		}
		require.ErrorContains(t, w.Err(), "client was closed")
	})
}

func TestBadInput(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	const prefix = "/test/bad/"

	for _, tc := range []struct {
		name, id, addr string
		opts           []apiserverdisco.Option
		is             error
	}{
		{name: "empty ID", id: "", addr: "10.0.0.1:6443", is: apiserverdisco.ErrInvalidID},
		{name: "ID with a slash", id: "a/b", addr: "10.0.0.1:6443", is: apiserverdisco.ErrInvalidID},
		{name: "no port", id: "a", addr: "10.0.0.1", is: apiserverdisco.ErrInvalidAddress},
		{name: "port 0", id: "a", addr: "10.0.0.1:0", is: apiserverdisco.ErrInvalidAddress},
		{name: "port 65536", id: "a", addr: "10.0.0.1:65536", is: apiserverdisco.ErrInvalidAddress},
		{name: "IPv6 without brackets", id: "a", addr: "2001:db8::1:6443", is: apiserverdisco.ErrInvalidAddress},
		{name: "a URL", id: "a", addr: "https://10.0.0.1:6443", is: apiserverdisco.ErrInvalidAddress},
		{name: "TTL under a second", id: "a", addr: "10.0.0.1:6443", opts: []apiserverdisco.Option{apiserverdisco.WithTTL(time.Millisecond)}},
		{name: "a watcher option", id: "a", addr: "10.0.0.1:6443", opts: []apiserverdisco.Option{apiserverdisco.WithDebounce(0)}},
		{name: "nil option", id: "a", addr: "10.0.0.1:6443", opts: []apiserverdisco.Option{nil}},
		{name: "root prefix", id: "a", addr: "10.0.0.1:6443", opts: []apiserverdisco.Option{apiserverdisco.WithPrefix("/")}},
	} {
		t.Run("Publish "+tc.name, func(t *testing.T) {
			r, err := apiserverdisco.Publish(ctx, cli, tc.id, tc.addr, append([]apiserverdisco.Option{apiserverdisco.WithPrefix(prefix)}, tc.opts...)...)
			require.ErrorIs(t, err, apiserverdisco.ErrInvalidInput)
			require.Nil(t, r)
			if tc.is != nil {
				require.ErrorIs(t, err, tc.is)
			}
		})
	}
	_, err := apiserverdisco.Publish(ctx, nil, "a", "10.0.0.1:6443")
	require.ErrorContains(t, err, "nil etcd client")
	require.ErrorIs(t, err, apiserverdisco.ErrInvalidInput)
	resp, err := cli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly())
	require.NoError(t, err)
	require.Zero(t, resp.Count, "bad input must write nothing")

	for name, src := range map[string]apiserverdisco.Source{
		"zero Source":               {},
		"EtcdPrefix nil client":     apiserverdisco.EtcdPrefix(nil, ""),
		"EtcdPrefix root prefix":    apiserverdisco.EtcdPrefix(cli, "//"),
		"LegacyKey nil client":      apiserverdisco.LegacyKey(nil, "rke2"),
		"LegacyKey empty program":   apiserverdisco.LegacyKey(cli, ""),
		"LegacyKey program with /":  apiserverdisco.LegacyKey(cli, "a/b"),
		"EndpointSlices nil client": apiserverdisco.EndpointSlices(nil),
	} {
		t.Run("NewWatcher "+name, func(t *testing.T) {
			w, err := apiserverdisco.NewWatcher(ctx, src)
			require.ErrorIs(t, err, apiserverdisco.ErrInvalidInput)
			require.Nil(t, w)
		})
	}
	for name, opt := range map[string]apiserverdisco.Option{
		"a publish option":     apiserverdisco.WithTTL(time.Minute),
		"negative debounce":    apiserverdisco.WithDebounce(-time.Second),
		"negative hold-down":   apiserverdisco.WithEmptyHoldDown(-time.Second),
		"nil error handler":    apiserverdisco.WithErrorHandler(nil),
		"nil backoff":          apiserverdisco.WithBackoff(nil),
		"zero request timeout": apiserverdisco.WithRequestTimeout(0),
	} {
		t.Run("NewWatcher "+name, func(t *testing.T) {
			w, err := apiserverdisco.NewWatcher(ctx, apiserverdisco.EtcdPrefix(cli, prefix), opt)
			require.ErrorIs(t, err, apiserverdisco.ErrInvalidInput)
			require.Nil(t, w)
		})
	}
	w := newWatcher(t, ctx, apiserverdisco.EtcdPrefix(cli, prefix))
	_, err = w.WaitForAddresses(ctx, 0)
	require.ErrorContains(t, err, "at least 1")
	require.ErrorIs(t, err, apiserverdisco.ErrInvalidInput)
}
