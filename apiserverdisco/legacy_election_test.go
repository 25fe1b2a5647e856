package apiserverdisco_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// TestLegacyKeyWriterElectionGarbage: keys under the election prefix that
// no campaign wrote (no lease, a name that is not their lease's ID, a
// value that is not an ID) used to block every writer forever, silently.
// They are ignored and reported once each, by key; real candidates are
// still waited for; and a leader whose own election key is put over stops
// leading at once, so the next candidate takes over.
func TestLegacyKeyWriterElectionGarbage(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	const election = apiserverdisco.LegacyWriterElectionPrefix + "k3s/"
	const prefixA, prefixB = "/test/garbage/a/", "/test/garbage/b/"

	put := func(key, value string, opts ...clientv3.OpOption) {
		t.Helper()
		_, err := cli.Put(ctx, key, value, opts...)
		require.NoError(t, err)
	}
	lease := func() clientv3.LeaseID {
		t.Helper()
		g, err := cli.Grant(ctx, 600)
		require.NoError(t, err)
		t.Cleanup(func() { _, _ = cli.Revoke(ctx, g.ID) })
		return g.ID
	}
	garbage := []string{election + "zzz", election + "1234", election + "abc"}
	put(garbage[0], "garbage")                            // no lease
	put(garbage[1], "node-x")                             // named like a lease ID, no lease
	put(garbage[2], "other", clientv3.WithLease(lease())) // a lease, but not named by it
	l := lease()
	garbage = append(garbage, fmt.Sprintf("%s%x", election, l))
	put(garbage[3], "not an id", clientv3.WithLease(l)) // named by its lease, not an ID

	publish(t, ctx, cli, "a1", "10.0.1.1:6443", apiserverdisco.WithPrefix(prefixA))
	publish(t, ctx, cli, "b1", "10.0.2.1:6443", apiserverdisco.WithPrefix(prefixB))
	valueA, valueB := k3sEncode(t, []string{"10.0.1.1:6443"}), k3sEncode(t, []string{"10.0.2.1:6443"})
	keys := followKey(t, ctx, cli, "k3s/apiaddresses", revision(t, ctx, cli)+1)

	opts := []apiserverdisco.Option{apiserverdisco.WithDebounce(0), apiserverdisco.WithBackoff(testenv.FastBackoff)}
	cliA, pA := nodeClient(t, c)
	var errsA errorLog
	logsA, logA := newLogRecorder()
	a := startWriter(t, ctx, cliA, "node-a", apiserverdisco.EtcdPrefix(cliA, prefixA), append(opts, apiserverdisco.WithLogger(logA), apiserverdisco.WithErrorHandler(errsA.handle))...)
	logsA.waitFor(t, "leading")
	keys.waitValue(t, valueA)
	for _, key := range garbage {
		me := errsA.waitMalformed(t, key)
		require.ErrorContains(t, me, "not a candidate")
	}

	keyOf := func(id string) string {
		t.Helper()
		resp, err := cli.Get(ctx, election, clientv3.WithPrefix())
		require.NoError(t, err)
		for _, kv := range resp.Kvs {
			if string(kv.Value) == id && kv.Lease != 0 {
				return string(kv.Key)
			}
		}
		t.Fatalf("no election key of %s among %v", id, resp.Kvs)
		return ""
	}

	// Someone puts over A's election key: A stops leading at once, though
	// it has nothing to write, and campaigns again.
	put(keyOf("node-a"), "node-a") // no lease now: it would never expire
	awaitCond(t, &errsA.b, "A's term ending", func() bool {
		for _, err := range errsA.all() {
			if strings.Contains(err.Error(), "no longer the leader") {
				return true
			}
		}
		return false
	}, func() string { return errorsText(errsA.all()) })
	awaitCond(t, &logsA.b, "A leading again", func() bool { return logsA.count("leading:") >= 2 })

	// A second writer waits for A, a real candidate.
	var errsB errorLog
	logsB, logB := newLogRecorder()
	b := startWriter(t, ctx, cli, "node-b", apiserverdisco.EtcdPrefix(cli, prefixB), append(opts, apiserverdisco.WithLogger(logB), apiserverdisco.WithErrorHandler(errsB.handle))...)
	logsB.waitFor(t, "waiting for the candidate before this one")
	require.True(t, a.Leader())
	require.False(t, b.Leader())

	// A is cut off (it can neither resign nor write) and its key is put
	// over, so it will never expire: B, which waited on that key, ignores
	// it and leads.
	partition(pA)
	put(keyOf("node-a"), "node-a")
	logsB.waitFor(t, "leading")
	keys.waitValue(t, valueB)
	require.True(t, b.Leader())
	// B met the garbage when it took over: reported once each.
	for _, key := range garbage {
		require.Len(t, errsB.malformedAt(key), 1, "reported once: %s", key)
	}
	// A is back and stops leading.
	heal(pA)
	testenv.Eventually(t, guard, 10*time.Millisecond, func() error {
		if a.Leader() {
			return errors.New("A still says it leads")
		}
		return nil
	})
	require.True(t, b.Leader())
	require.NoError(t, a.Err())
	require.NoError(t, b.Err())
}
