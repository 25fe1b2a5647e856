package etcdmember_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

// TestCancelNamesPending: when ctx ends, every waiting call returns an
// error that wraps ctx.Err() (and its cause) and says what it was still
// waiting for.
func TestCancelNamesPending(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t, testenv.WithMaxLearners(1))
	m := newManager(t, c.Client()) // default stall timeout: minutes
	spec, err := c.NewMemberSpec("x")
	require.NoError(t, err)
	x, _ := addLearner(ctx, t, c.Client(), spec) // never started; fills the learner slot
	other, err := c.NewMemberSpec("y")
	require.NoError(t, err)

	short := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, 300*time.Millisecond)
	}
	for _, tc := range []struct {
		name, pending string
		call          func(context.Context) error
	}{
		{"Promote", fmt.Sprintf("waiting for learner %x to start", x), func(ctx context.Context) error {
			_, err := m.Promote(ctx, x)
			return err
		}},
		{"WaitStarted", fmt.Sprintf("waiting for member %x to publish its name", x), func(ctx context.Context) error {
			_, err := m.WaitStarted(ctx, x)
			return err
		}},
		{"AddLearner", "waiting for a free learner slot", func(ctx context.Context) error {
			_, err := m.AddLearner(ctx, other.Name, []string{other.PeerURL})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cctx, cancel := short()
			defer cancel()
			err := tc.call(cctx)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.Contains(t, err.Error(), tc.pending)

			cause := errors.New("node is shutting down")
			cctx2, cancel2 := context.WithCancelCause(ctx)
			time.AfterFunc(100*time.Millisecond, func() { cancel2(cause) })
			err = tc.call(cctx2)
			require.ErrorIs(t, err, context.Canceled)
			require.ErrorIs(t, err, cause)
			require.Contains(t, err.Error(), tc.pending)
			t.Log(err)
		})
	}
	require.NoError(t, ctx.Err(), "every call returned long before the test's guard")
}
