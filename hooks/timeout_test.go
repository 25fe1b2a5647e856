package hooks_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/hooks"
)

// stuck is a hook body that ignores its context: it returns only when the
// test closes release, and closes exited when it does, so that the test
// can wait for the goroutine the Runner abandoned before goleak looks.
type stuck struct {
	release, exited chan struct{}
	calls           atomic.Int32
}

func newStuck(t *testing.T) *stuck {
	s := &stuck{release: make(chan struct{}), exited: make(chan struct{})}
	t.Cleanup(func() {
		select {
		case <-s.release:
		default:
			close(s.release)
		}
		if s.calls.Load() > 0 {
			mustAwait(t, s.exited, "the abandoned hook to return")
		}
	})
	return s
}

func (s *stuck) run(context.Context) error {
	s.calls.Add(1)
	defer close(s.exited)
	<-s.release
	return nil
}

// Timeout bounds each attempt, whether or not Run honours its context.
func TestTimeoutIgnoredContext(t *testing.T) {
	// Run waits for its deadline, ignores it, and returns nil: the
	// attempt counts as timed out and is retried; the retry, on time,
	// succeeds.
	t.Run("returns nil late", func(t *testing.T) {
		rec := newRecorder()
		r := newRunner(t, hooks.WithObserver(rec.observe))
		var calls atomic.Int32
		require.NoError(t, r.Add(hooks.Hook{
			Name:    "etcd-snapshot",
			Timeout: time.Millisecond,
			Retry:   func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 1) },
			Run: func(ctx context.Context) error {
				if calls.Add(1) == 1 {
					<-ctx.Done() // past the deadline, then "done" anyway
				}
				return nil
			},
		}))

		require.NoError(t, r.Run(context.Background()))

		evs := rec.of("etcd-snapshot")
		require.Equal(t, []string{"started/1", "attempt-failed/1", "started/2", "succeeded/2"}, kinds(evs))
		assert.ErrorIs(t, evs[1].Err, hooks.ErrTimeout)
		assert.EqualError(t, evs[1].Err, "attempt 1: timed out after 1ms: Run returned nil after its deadline (it ignored its context)")
		assert.Equal(t, 2, r.Report().Hooks[0].Attempts)
	})

	t.Run("returns nil late, no retry left", func(t *testing.T) {
		r := newRunner(t)
		require.NoError(t, r.Add(hooks.Hook{
			Name:    "etcd-snapshot",
			Timeout: time.Millisecond,
			Run:     func(ctx context.Context) error { <-ctx.Done(); return nil },
		}))

		err := r.Run(context.Background())

		require.ErrorIs(t, err, hooks.ErrTimeout)
		assert.ErrorContains(t, err, `hook "etcd-snapshot" failed: attempt 1: timed out after 1ms: Run returned nil after its deadline`)
		assert.Equal(t, hooks.Failed, r.Report().Hooks[0].State)
	})

	// Run never returns: the Runner waits the grace period after the
	// deadline, abandons the attempt, fails the hook without a retry
	// (the abandoned call still runs), skips its dependants, and Run
	// returns. The abandoned goroutine ends when the hook returns.
	t.Run("never returns", func(t *testing.T) {
		s := newStuck(t)
		var dependantRan atomic.Bool
		r := newRunner(t, hooks.WithGracePeriod(time.Millisecond))
		require.NoError(t, r.Add(
			hooks.Hook{
				Name:      "etcd-snapshot",
				Timeout:   time.Millisecond,
				OnFailure: hooks.Continue,
				Retry:     func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 3) },
				Run:       s.run,
			},
			hooks.Hook{Name: "after", After: []string{"etcd-snapshot"}, Run: func(context.Context) error { dependantRan.Store(true); return nil }},
			hooks.Hook{Name: "independent", Run: ok},
		))

		err := result(t, runAsync(context.Background(), r))

		require.ErrorIs(t, err, hooks.ErrAbandoned)
		require.ErrorIs(t, err, hooks.ErrTimeout)
		assert.ErrorContains(t, err, `hook "etcd-snapshot" failed: attempt 1: Run abandoned: still running 1ms after its context ended: hook "etcd-snapshot": timed out after 1ms`)
		rep := byName(r.Report())
		assert.Equal(t, hooks.Failed, rep["etcd-snapshot"].State)
		assert.Equal(t, 1, rep["etcd-snapshot"].Attempts, "retried beside an abandoned attempt")
		assert.EqualValues(t, 1, s.calls.Load())
		assert.Equal(t, hooks.Skipped, rep["after"].State)
		assert.False(t, dependantRan.Load())
		assert.Equal(t, hooks.Succeeded, rep["independent"].State)
	})

	// A Gate that ignores its context when the run is canceled is
	// abandoned too.
	t.Run("gate never returns after cancel", func(t *testing.T) {
		s := newStuck(t)
		rec := newRecorder()
		waiting := rec.when("crds", hooks.EventGateWaiting)
		r := newRunner(t, hooks.WithGracePeriod(time.Millisecond), hooks.WithObserver(rec.observe))
		require.NoError(t, r.Add(hooks.Hook{Name: "crds", Gate: s.run, Run: ok}))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()

		errc := runAsync(ctx, r)
		mustAwait(t, waiting, "the gate")
		cancel()
		err := result(t, errc)

		require.ErrorIs(t, err, hooks.ErrAbandoned)
		require.ErrorIs(t, err, context.Canceled)
		assert.ErrorContains(t, err, `hook "crds" canceled: gate: gate abandoned: still running 1ms after its context ended: context canceled`)
		assert.Equal(t, hooks.Canceled, r.Report().Hooks[0].State)
	})

	// Another hook aborts the run while a hook that ignores its context
	// is running (it has no Timeout): that hook is abandoned, Canceled.
	t.Run("never returns after an abort", func(t *testing.T) {
		s := newStuck(t)
		rec := newRecorder()
		started := rec.when("stuck", hooks.EventStarted)
		r := newRunner(t, hooks.WithGracePeriod(time.Millisecond), hooks.WithObserver(rec.observe))
		require.NoError(t, r.Add(
			hooks.Hook{Name: "stuck", Run: s.run},
			hooks.Hook{Name: "fails", Run: func(ctx context.Context) error {
				if err := await(ctx, started, "stuck to start"); err != nil {
					return err
				}
				return errBoom
			}},
		))

		err := result(t, runAsync(context.Background(), r))

		require.ErrorIs(t, err, hooks.ErrAborted)
		require.ErrorIs(t, err, hooks.ErrAbandoned)
		rep := byName(r.Report())
		assert.Equal(t, hooks.Failed, rep["fails"].State)
		assert.Equal(t, hooks.Canceled, rep["stuck"].State)
		assert.ErrorIs(t, rep["stuck"].Err, hooks.ErrAbandoned)
		assert.ErrorIs(t, rep["stuck"].Err, hooks.ErrAborted)
	})

	// A hook that honours its context returns within the (default) grace
	// period and is not abandoned.
	t.Run("honours its context", func(t *testing.T) {
		r := newRunner(t)
		require.NoError(t, r.Add(hooks.Hook{
			Name:    "etcd-snapshot",
			Timeout: time.Millisecond,
			Run:     func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
		}))
		err := r.Run(context.Background())
		require.ErrorIs(t, err, hooks.ErrTimeout)
		assert.NotErrorIs(t, err, hooks.ErrAbandoned)
	})
}
