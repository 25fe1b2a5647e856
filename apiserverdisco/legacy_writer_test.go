package apiserverdisco_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// errAddressNotSet is k3s's etcd.ErrAddressNotSet.
var errAddressNotSet = errors.New("apiserver addresses not yet set")

// k3sGetAPIServerURLs reads the key exactly as k3s's
// etcd.GetAPIServerURLsFromETCD does: the key's value, "not yet set" when
// it is missing or empty, else json.Unmarshal into a []string.
func k3sGetAPIServerURLs(ctx context.Context, cl *clientv3.Client, program string) ([]string, error) {
	etcdResp, err := cl.KV.Get(ctx, program+"/apiaddresses")
	if err != nil {
		return nil, err
	}
	if etcdResp.Count == 0 || len(etcdResp.Kvs[0].Value) == 0 {
		return nil, errAddressNotSet
	}
	var addresses []string
	if err := json.Unmarshal(etcdResp.Kvs[0].Value, &addresses); err != nil {
		return nil, fmt.Errorf("failed to unmarshal apiserver addresses from etcd: %v", err)
	}
	return addresses, nil
}

// k3sEncode is how k3s's apiaddresses controller encodes the value.
func k3sEncode(t testing.TB, addrs []string) []byte {
	w := &bytes.Buffer{}
	require.NoError(t, json.NewEncoder(w).Encode(addrs))
	return w.Bytes()
}

// keyLog records every value written to one key, from a revision on.
type keyLog struct {
	b    broadcast
	mu   sync.Mutex
	puts []*clientv3.Event
	pos  int // events before pos were matched by an earlier waitValue
}

func followKey(t testing.TB, ctx context.Context, cli *clientv3.Client, key string, fromRev int64) *keyLog {
	l := &keyLog{}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	wch := cli.Watch(wctx, key, clientv3.WithRev(fromRev))
	go func() {
		defer close(done)
		for resp := range wch {
			l.mu.Lock()
			l.puts = append(l.puts, resp.Events...)
			l.mu.Unlock()
			l.b.signal()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

func (l *keyLog) events() []*clientv3.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.puts)
}

// waitValue waits for a put of value after the event the previous
// waitValue matched, and returns it.
func (l *keyLog) waitValue(t testing.TB, value []byte) *clientv3.Event {
	t.Helper()
	var got *clientv3.Event
	awaitCond(t, &l.b, fmt.Sprintf("a write of %q", value), func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for i := l.pos; i < len(l.puts); i++ {
			if ev := l.puts[i]; ev.Type == clientv3.EventTypePut && bytes.Equal(ev.Kv.Value, value) {
				got, l.pos = ev, i+1
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("(events: %s)", l.String()) })
	return got
}

func (l *keyLog) String() string {
	var out []string
	for _, ev := range l.events() {
		out = append(out, fmt.Sprintf("%d:%s:%q", ev.Kv.ModRevision, ev.Type, ev.Kv.Value))
	}
	return fmt.Sprint(out)
}

func revision(t testing.TB, ctx context.Context, cli *clientv3.Client) int64 {
	resp, err := cli.Get(ctx, "any")
	require.NoError(t, err)
	return resp.Header.Revision
}

func startWriter(t testing.TB, ctx context.Context, cli *clientv3.Client, id string, src apiserverdisco.Source, opts ...apiserverdisco.Option) *apiserverdisco.LegacyKeyWriter {
	t.Helper()
	w, err := apiserverdisco.StartLegacyKeyWriter(ctx, cli, "k3s", id, src, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close() })
	return w
}

// TestLegacyKeyWriterK3sReader: what the writer writes is byte for byte
// what k3s writes, and a reader written exactly like k3s's reads it.
func TestLegacyKeyWriterK3sReader(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	const prefix = "/test/k3sreader/"
	keys := followKey(t, ctx, cli, "k3s/apiaddresses", revision(t, ctx, cli)+1)
	logs, log := newLogRecorder()
	w := startWriter(t, ctx, cli, "cp-1", apiserverdisco.EtcdPrefix(cli, prefix), apiserverdisco.WithDebounce(0), apiserverdisco.WithLogger(log))
	logs.waitFor(t, "leading")
	require.True(t, w.Leader())

	// Nothing published: nothing written, and k3s reads "not yet set".
	_, err := k3sGetAPIServerURLs(ctx, cli, "k3s")
	require.ErrorIs(t, err, errAddressNotSet)

	publish(t, ctx, cli, "cp-1", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix))
	publish(t, ctx, cli, "cp-2", "[2001:DB8::2]:6443", apiserverdisco.WithPrefix(prefix))
	want := []string{"10.0.0.1:6443", "[2001:db8::2]:6443"}
	keys.waitValue(t, k3sEncode(t, want))
	got, err := k3sGetAPIServerURLs(ctx, cli, "k3s")
	require.NoError(t, err)
	require.Equal(t, want, got)
	resp, err := cli.Get(ctx, "k3s/apiaddresses")
	require.NoError(t, err)
	require.Equal(t, "[\"10.0.0.1:6443\",\"[2001:db8::2]:6443\"]\n", string(resp.Kvs[0].Value), "byte for byte as k3s writes it")
	require.Zero(t, resp.Kvs[0].Lease, "k3s's key has no lease")
	// Written is set when the write returns, before it is logged.
	awaitCond(t, &logs.b, "Written to report the write", func() bool { return slices.Equal(w.Written(), want) })

	// A third apiserver: the key follows.
	publish(t, ctx, cli, "cp-3", "10.0.0.3:6443", apiserverdisco.WithPrefix(prefix))
	want = []string{"10.0.0.1:6443", "10.0.0.3:6443", "[2001:db8::2]:6443"}
	keys.waitValue(t, k3sEncode(t, want))
	got, err = k3sGetAPIServerURLs(ctx, cli, "k3s")
	require.NoError(t, err)
	require.Equal(t, want, got)

	// And this package's own LegacyKey source reads it too.
	rw := newWatcher(t, ctx, apiserverdisco.LegacyKey(cli, "k3s"))
	addrs, err := rw.WaitForAddresses(ctx, 3)
	require.NoError(t, err)
	require.Equal(t, []string{"10.0.0.1:6443", "10.0.0.3:6443", "[2001:db8::2]:6443"}, addrs)

	// Something else overwrites the key (k3s's own controller, say): it is
	// reported and put back.
	_, err = cli.Put(ctx, "k3s/apiaddresses", "[\"10.9.9.9:6443\"]\n")
	require.NoError(t, err)
	logs.waitFor(t, "changed by another writer")
	keys.waitValue(t, []byte("[\"10.9.9.9:6443\"]\n"))
	keys.waitValue(t, k3sEncode(t, want))
}

// TestLegacyKeyWriterSingleWriter: two writers on two nodes; only the
// leader writes; when it closes the other takes over at once, and when the
// leader dies (cut off, its lease expires) the other takes over and the
// old one writes nothing more.
func TestLegacyKeyWriterSingleWriter(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	// The two writers follow different address sets, so the key itself
	// shows which one wrote it.
	const prefixA, prefixB = "/test/single/a/", "/test/single/b/"
	publish(t, ctx, cli, "a1", "10.0.1.1:6443", apiserverdisco.WithPrefix(prefixA))
	publish(t, ctx, cli, "b1", "10.0.2.1:6443", apiserverdisco.WithPrefix(prefixB))
	valueA := k3sEncode(t, []string{"10.0.1.1:6443"})
	keys := followKey(t, ctx, cli, "k3s/apiaddresses", revision(t, ctx, cli)+1)

	// Each node has its own client, through its own proxy.
	cliA, _ := nodeClient(t, c)
	cliB, pB := nodeClient(t, c)
	const ttl = 2 * time.Second
	logsA, logA := newLogRecorder()
	a := startWriter(t, ctx, cliA, "node-a", apiserverdisco.EtcdPrefix(cliA, prefixA), apiserverdisco.WithDebounce(0), apiserverdisco.WithTTL(ttl), apiserverdisco.WithLogger(logA))
	logsA.waitFor(t, "leading")
	keys.waitValue(t, valueA)
	logsB, logB := newLogRecorder()
	b := startWriter(t, ctx, cliB, "node-b", apiserverdisco.EtcdPrefix(cliB, prefixB), apiserverdisco.WithDebounce(0), apiserverdisco.WithTTL(ttl),
		apiserverdisco.WithLogger(logB), apiserverdisco.WithBackoff(testenv.FastBackoff))
	logsB.waitFor(t, "campaigning")
	require.True(t, a.Leader())
	require.False(t, b.Leader())
	// The election is etcd's concurrency election: its own API names the
	// leader.
	sess, err := concurrency.NewSession(cli)
	require.NoError(t, err)
	defer sess.Close()
	leader, err := concurrency.NewElection(sess, apiserverdisco.LegacyWriterElectionPrefix+"k3s").Leader(ctx)
	require.NoError(t, err)
	require.Equal(t, "node-a", string(leader.Kvs[0].Value))

	// B's set changes while A leads: B writes nothing. A's set changes: A
	// writes it. Every value so far is A's.
	publish(t, ctx, cli, "b2", "10.0.2.2:6443", apiserverdisco.WithPrefix(prefixB))
	publish(t, ctx, cli, "a2", "10.0.1.2:6443", apiserverdisco.WithPrefix(prefixA))
	valueA = k3sEncode(t, []string{"10.0.1.1:6443", "10.0.1.2:6443"})
	valueB := k3sEncode(t, []string{"10.0.2.1:6443", "10.0.2.2:6443"})
	keys.waitValue(t, valueA)

	// A closes: B takes over at once (A resigned; no TTL to wait for).
	closedAt := revision(t, ctx, cli) // A led until at least here
	require.NoError(t, a.Close())
	logsB.waitFor(t, "leading")
	keys.waitValue(t, valueB)
	for _, ev := range keys.events() {
		if ev.Kv.ModRevision < closedAt {
			require.Contains(t, [][]byte{k3sEncode(t, []string{"10.0.1.1:6443"}), valueA}, ev.Kv.Value, "B wrote while A led: %s", keys)
		}
	}

	// A comes back (a new writer on node A): it stands by.
	logsA2, logA2 := newLogRecorder()
	a2 := startWriter(t, ctx, cliA, "node-a", apiserverdisco.EtcdPrefix(cliA, prefixA), apiserverdisco.WithDebounce(0), apiserverdisco.WithTTL(ttl),
		apiserverdisco.WithLogger(logA2))
	logsA2.waitFor(t, "campaigning")
	require.False(t, a2.Leader())

	// B dies: cut off from etcd, its election lease expires, and A takes
	// over.
	partition(pB)
	logsA2.waitFor(t, "leading")
	diedAt := keys.waitValue(t, valueA).Kv.ModRevision
	// B is back: it notices it lost the election and campaigns again; it
	// does not write its set over A's.
	heal(pB)
	awaitCond(t, &logsB.b, "B campaigning again", func() bool { return logsB.count("campaigning") >= 2 })
	require.False(t, b.Leader())
	publish(t, ctx, cli, "a3", "10.0.1.3:6443", apiserverdisco.WithPrefix(prefixA))
	valueA = k3sEncode(t, []string{"10.0.1.1:6443", "10.0.1.2:6443", "10.0.1.3:6443"})
	keys.waitValue(t, valueA)
	for _, ev := range keys.events() {
		if ev.Kv.ModRevision >= diedAt {
			require.NotEqual(t, string(valueB), string(ev.Kv.Value), "B wrote after it lost the election: %s", keys)
		}
	}
	require.True(t, a2.Leader())

	// Cut off while campaigning, B still closes: every cleanup request is
	// bounded.
	partition(pB)
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(guard):
		t.Fatal("Close hung while cut off from etcd")
	}
	require.ErrorIs(t, b.Err(), apiserverdisco.ErrClosed)
}

// nodeClient is an etcd client that reaches the cluster through its own
// proxy, so the test can cut that node off.
func nodeClient(t testing.TB, c *testenv.Cluster) (*clientv3.Client, *testenv.Proxy) {
	p := testenv.NewProxyFor(t, c.Member(0).Endpoint())
	cl, err := c.NewClientConfig(clientv3.Config{Endpoints: []string{"http://" + p.Addr()}})
	require.NoError(t, err)
	return cl, p
}

// TestLegacyKeyWriterNeverEmpty: the writer never writes an empty list, nor
// anything while its source is not yet set; a good value stays.
func TestLegacyKeyWriterNeverEmpty(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	const prefix = "/test/neverempty/"
	// A good value, as k3s left it.
	old := k3sEncode(t, []string{"10.9.9.9:6443"})
	_, err := cli.Put(ctx, "k3s/apiaddresses", string(old))
	require.NoError(t, err)
	keys := followKey(t, ctx, cli, "k3s/apiaddresses", revision(t, ctx, cli)+1)

	// Nothing published yet: the writer leads, and leaves the key alone.
	logs, log := newLogRecorder()
	w := startWriter(t, ctx, cli, "cp-1", apiserverdisco.EtcdPrefix(cli, prefix), apiserverdisco.WithDebounce(0), apiserverdisco.WithLogger(log))
	logs.waitFor(t, "leading")
	logs.waitFor(t, "not yet set")

	// An apiserver publishes: written.
	reg, err := apiserverdisco.Publish(ctx, cli, "cp-1", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix))
	require.NoError(t, err)
	good := k3sEncode(t, []string{"10.0.0.1:6443"})
	keys.waitValue(t, good)

	// It goes away: the live set is empty, and is not written.
	require.NoError(t, reg.Close())
	logs.waitFor(t, "not writing it")
	// A change elsewhere proves the writer is past the empty set: a new
	// apiserver is written next, with nothing in between.
	publish(t, ctx, cli, "cp-2", "10.0.0.2:6443", apiserverdisco.WithPrefix(prefix))
	keys.waitValue(t, k3sEncode(t, []string{"10.0.0.2:6443"}))
	for _, ev := range keys.events() {
		require.Equal(t, clientv3.EventTypePut, ev.Type)
		var list []string
		require.NoError(t, json.Unmarshal(ev.Kv.Value, &list), "value %q", ev.Kv.Value)
		require.NotEmpty(t, list, "an empty list was written: %s", keys)
	}
	require.Len(t, keys.events(), 2, "writes: %s", keys.String())
	require.True(t, w.Leader())
}
