package apiserverdisco_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// TestNotYetSetObservable: a node agent can tell "apiserver addresses not
// yet set" from the Watcher's State, and why, without reading logs.
func TestNotYetSetObservable(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	const key = "k3s/apiaddresses"
	start := time.Now()
	logs, log := newLogRecorder()
	w := newWatcher(t, ctx, apiserverdisco.LegacyKey(cli, "k3s"), apiserverdisco.WithDebounce(0), apiserverdisco.WithLogger(log))
	rec := record(t, w)

	// The key does not exist yet: not yet set, and why.
	logs.waitFor(t, "the key does not exist")
	st := w.State()
	require.True(t, st.NotYetSet)
	require.Contains(t, st.Reason, `etcd key "k3s/apiaddresses"`)
	require.Contains(t, st.Reason, "does not exist")
	require.NoError(t, st.LastError)
	require.Zero(t, st.Snapshot.Version)
	require.False(t, st.Since.Before(start))
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err := w.WaitForAddresses(short, 1)
	cancel()
	require.ErrorIs(t, err, apiserverdisco.ErrNotYetSet)
	require.ErrorContains(t, err, "does not exist", "the error says why")

	// Set: the state clears.
	_, err = cli.Put(ctx, key, "[\"10.0.0.1:6443\"]\n")
	require.NoError(t, err)
	first := rec.waitSet(t, "10.0.0.1:6443")
	st = w.State()
	require.False(t, st.NotYetSet)
	require.Empty(t, st.Reason)
	require.Equal(t, first, st.Snapshot)
	setSince := st.Since

	// Emptied (what a cluster reset writes): not yet set again, while the
	// last good set is kept.
	_, err = cli.Put(ctx, key, "")
	require.NoError(t, err)
	logs.waitFor(t, "the key's value is empty")
	st = w.State()
	require.True(t, st.NotYetSet)
	require.Contains(t, st.Reason, "empty")
	require.Equal(t, first, st.Snapshot, "the last good set is kept")
	require.True(t, st.Since.After(setSince))

	// A source that cannot be read at all: not yet set, with the error.
	p := testenv.NewProxyFor(t, c.Member(0).Endpoint())
	partition(p)
	pcli, err := c.NewClientConfig(clientv3.Config{Endpoints: []string{"http://" + p.Addr()}})
	require.NoError(t, err)
	var errs errorLog
	dead := newWatcher(t, ctx, apiserverdisco.LegacyKey(pcli, "k3s"), apiserverdisco.WithRequestTimeout(100*time.Millisecond),
		apiserverdisco.WithBackoff(minutesBackoff), apiserverdisco.WithErrorHandler(errs.handle))
	errs.waitCount(t, 1, "a failed list")
	st = dead.State()
	require.True(t, st.NotYetSet)
	require.Contains(t, st.Reason, "not read yet")
	require.Error(t, st.LastError)
	require.ErrorContains(t, st.LastError, key)
}
