package apiserverdisco_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// TestMalformedReportedOnce: a value with 10,000 invalid entries is one
// report (naming the key, the count and the first entries), and values
// seen again unchanged by a re-list are not reported again — for the
// legacy key and for published values.
func TestMalformedReportedOnce(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	const (
		key    = "rke2/apiaddresses"
		prefix = "/test/once/"
	)
	entries := []string{"10.0.0.1:6443"}
	for i := range 10000 {
		entries = append(entries, fmt.Sprintf("bad-%d", i))
	}
	value, err := json.Marshal(entries)
	require.NoError(t, err)
	_, err = cli.Put(ctx, key, string(value))
	require.NoError(t, err)
	for i := range 3 {
		_, err = cli.Put(ctx, fmt.Sprintf("%sbad-%d", prefix, i), "garbage")
		require.NoError(t, err)
	}
	publish(t, ctx, cli, "good", "10.0.0.2:6443", apiserverdisco.WithPrefix(prefix))

	// Both watchers reach etcd through a proxy, so that the test can make
	// them fall behind a compaction and list again.
	p := testenv.NewProxyFor(t, c.Member(0).Endpoint())
	pcli, err := c.NewClient("http://" + p.Addr())
	require.NoError(t, err)
	var legacyErrs, prefixErrs errorLog
	logs, log := newLogRecorder()
	legacy := newWatcher(t, ctx, apiserverdisco.LegacyKey(pcli, "rke2"), apiserverdisco.WithDebounce(0),
		apiserverdisco.WithErrorHandler(legacyErrs.handle), apiserverdisco.WithLogger(log), apiserverdisco.WithBackoff(testenv.FastBackoff))
	published := newWatcher(t, ctx, apiserverdisco.EtcdPrefix(pcli, prefix), apiserverdisco.WithDebounce(0),
		apiserverdisco.WithErrorHandler(prefixErrs.handle), apiserverdisco.WithLogger(log), apiserverdisco.WithBackoff(testenv.FastBackoff))
	legacyRec, prefixRec := record(t, legacy), record(t, published)
	legacyRec.waitSet(t, "10.0.0.1:6443")
	prefixRec.waitSet(t, "10.0.0.2:6443")

	me := legacyErrs.waitMalformed(t, key)
	require.Equal(t, 10000, me.Count)
	require.Equal(t, []string{"bad-0", "bad-1", "bad-2", "bad-3", "bad-4"}, me.Entries)
	require.Len(t, me.Entries, apiserverdisco.MaxReportedEntries)
	require.ErrorIs(t, me, apiserverdisco.ErrInvalidAddress)
	require.ErrorContains(t, me, "10000 invalid entries")
	require.ErrorContains(t, me, `"bad-0"`)
	require.Less(t, len(me.Error()), 4096, "the message lists the first entries, not all of them")
	for i := range 3 {
		prefixErrs.waitMalformed(t, fmt.Sprintf("%sbad-%d", prefix, i))
	}

	// Re-list: the watchers are cut off while the history they would resume
	// from is compacted away; then they list everything again.
	partition(p)
	var resp *clientv3.PutResponse
	for range 2 {
		resp, err = cli.Put(ctx, "/test/other", "x")
		require.NoError(t, err)
	}
	_, err = cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	heal(p)
	awaitCond(t, &logs.b, "both watchers re-listing after the compaction", func() bool { return logs.count("compaction") >= 2 })
	// A change to each proves that the re-list (which comes before the
	// watch that sees it) has been processed.
	_, err = cli.Put(ctx, key, strings.Replace(string(value), `"10.0.0.1:6443"`, `"10.0.0.3:6443"`, 1))
	require.NoError(t, err)
	publish(t, ctx, cli, "new", "10.0.0.4:6443", apiserverdisco.WithPrefix(prefix))
	legacyRec.waitSet(t, "10.0.0.3:6443")
	prefixRec.waitSet(t, "10.0.0.2:6443", "10.0.0.4:6443")

	// The legacy value was rewritten (a new write with the same bad
	// entries): reported once more. The re-list reported nothing.
	awaitCond(t, &legacyErrs.b, "the rewritten value reported", func() bool { return len(legacyErrs.malformedAt(key)) >= 2 })
	require.Len(t, legacyErrs.all(), 2, "one report per write: %v", legacyErrs.all())
	require.Len(t, prefixErrs.all(), 3, "one report per bad key, none for the re-list: %v", prefixErrs.all())
}
