package etcdmember_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/etcdmember"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// TestCancelNamesPending: when ctx ends, every waiting call returns an
// error that wraps ctx.Err() (and its cause) and says what it was still
// waiting for. Each call's ctx ends only after the call logged that it
// reached the waiting state, so a slow first member list cannot make the
// error name an earlier state.
func TestCancelNamesPending(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t, testenv.WithMaxLearners(1))
	spec, err := c.NewMemberSpec("x")
	require.NoError(t, err)
	x, _ := addLearner(ctx, t, c.Client(), spec) // never started; fills the learner slot
	other, err := c.NewMemberSpec("y")
	require.NoError(t, err)

	for _, tc := range []struct {
		name, pending string
		state         string // a log line of the call once it is waiting
		call          func(context.Context, *etcdmember.Manager) error
	}{
		{"Promote", fmt.Sprintf("waiting for learner %x to start", x), "learner not ready yet", func(ctx context.Context, m *etcdmember.Manager) error {
			_, err := m.Promote(ctx, x)
			return err
		}},
		{"WaitStarted", fmt.Sprintf("waiting for member %x to publish its name", x), "member has not started yet", func(ctx context.Context, m *etcdmember.Manager) error {
			_, err := m.WaitStarted(ctx, x)
			return err
		}},
		{"AddLearner", "waiting for a free learner slot", "the cluster's learner limit is reached", func(ctx context.Context, m *etcdmember.Manager) error {
			_, err := m.AddLearner(ctx, other.Name, []string{other.PeerURL})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// run calls tc.call with cctx, waits until the call logged
			// tc.state, then ends cctx with end.
			run := func(cctx context.Context, end func()) error {
				logs, logger := newLogs(t)
				m := newManager(t, c.Client(), etcdmember.WithLogger(logger)) // default stall timeout: minutes
				errc := make(chan error, 1)
				go func() { errc <- tc.call(cctx, m) }()
				await(t, logs.when(tc.state), tc.state)
				end()
				return <-errc
			}

			dctx, expire := expiringCtx(ctx)
			err := run(dctx, expire)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.Contains(t, err.Error(), tc.pending)

			cause := errors.New("node is shutting down")
			cctx, cancel := context.WithCancelCause(ctx)
			defer cancel(nil)
			err = run(cctx, func() { cancel(cause) })
			require.ErrorIs(t, err, context.Canceled)
			require.ErrorIs(t, err, cause)
			require.Contains(t, err.Error(), tc.pending)
			t.Log(err)
		})
	}
	require.NoError(t, ctx.Err(), "every call returned long before the test's guard")
}

// expiringCtx returns a context whose deadline passes when expire is
// called: from then on its Err is context.DeadlineExceeded, as for a
// context.WithTimeout whose timer fired at that moment. It also ends with
// parent.
func expiringCtx(parent context.Context) (context.Context, func()) {
	e := &expiring{Context: parent, done: make(chan struct{})}
	stop := context.AfterFunc(parent, func() { e.end(parent.Err()) })
	return e, func() {
		stop()
		e.end(context.DeadlineExceeded)
	}
}

type expiring struct {
	context.Context // values (and the parent's deadline)

	once sync.Once
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func (e *expiring) end(err error) {
	e.once.Do(func() {
		e.mu.Lock()
		e.err = err
		e.mu.Unlock()
		close(e.done)
	})
}

func (e *expiring) Done() <-chan struct{} { return e.done }

func (e *expiring) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}
