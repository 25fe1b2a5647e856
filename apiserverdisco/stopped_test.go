package apiserverdisco_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// TestStoppedWatcherReturnsError: once a Watcher has stopped, Next and
// WaitForAddresses return an error wrapping the reason, whatever set it
// holds and whether or not Next returned the last one, so a caller that
// loops until an error ends; Current still reads the last set.
func TestStoppedWatcherReturnsError(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	const prefix = "/test/stopped/"
	publish(t, ctx, cli, "a", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix))

	for _, how := range []string{"Close", "context"} {
		t.Run(how, func(t *testing.T) {
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			w, err := apiserverdisco.NewWatcher(wctx, apiserverdisco.EtcdPrefix(cli, prefix), apiserverdisco.WithDebounce(0))
			require.NoError(t, err)
			defer w.Close()
			snap, err := w.Next(ctx)
			require.NoError(t, err)
			require.Equal(t, []string{"10.0.0.1:6443"}, snap.Addresses)
			// A second set is delivered and not taken by Next.
			r := publish(t, ctx, cli, "b-"+how, "10.0.0.2:6443", apiserverdisco.WithPrefix(prefix))
			_, err = w.WaitForAddresses(ctx, 2)
			require.NoError(t, err)

			var reason error
			switch how {
			case "Close":
				require.NoError(t, w.Close())
				reason = apiserverdisco.ErrClosed
			case "context":
				cancel()
				<-w.Done()
				reason = context.Canceled
			}
			// Each call, however often, ends with the reason.
			for range 3 {
				_, err = w.Next(ctx)
				require.ErrorIs(t, err, reason, "Next after the Watcher stopped")
				_, err = w.WaitForAddresses(ctx, 1)
				require.ErrorIs(t, err, reason, "WaitForAddresses after the Watcher stopped")
			}
			require.ErrorIs(t, w.Err(), reason)
			require.Equal(t, []string{"10.0.0.1:6443", "10.0.0.2:6443"}, w.Current().Addresses, "Current keeps the last set")
			require.NoError(t, r.Close())
		})
	}
}
