package hooks_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/hooks"
)

// constant is a backoff policy that always returns the same delay.
type constant time.Duration

func (constant) Reset()                       {}
func (c constant) NextBackOff() time.Duration { return time.Duration(c) }

// A policy returning zero or a negative delay (other than backoff.Stop)
// waits MinRetryDelay between attempts instead of spinning. Counted two
// ways: every attempt-failed event carries MinRetryDelay; and in a run
// bounded by a 200 ms deadline there are at most 200 ms / MinRetryDelay + 1
// attempts (a timer never fires early, so a slow machine only lowers the
// count). Without the floor the same run makes tens of thousands.
func TestNonPositiveDelayFloor(t *testing.T) {
	const window = 200 * time.Millisecond
	for name, policy := range map[string]func() backoff.BackOff{
		"zero":               func() backoff.BackOff { return &backoff.ZeroBackOff{} },
		"negative, not Stop": func() backoff.BackOff { return constant(-2) },
		"large negative":     func() backoff.BackOff { return constant(-time.Hour) },
		"exponential of zeros": func() backoff.BackOff {
			return backoff.NewExponentialBackOff(backoff.WithInitialInterval(0), backoff.WithMaxElapsedTime(0))
		},
	} {
		t.Run(name, func(t *testing.T) {
			var delays []time.Duration // the observer is called one event at a time
			r := newRunner(t, hooks.WithObserver(func(ev hooks.Event) {
				if ev.Kind == hooks.EventAttemptFailed {
					delays = append(delays, ev.Delay)
				}
			}))
			var attempts atomic.Int32
			require.NoError(t, r.Add(hooks.Hook{
				Name:  "spinner",
				Retry: policy,
				Run:   func(context.Context) error { attempts.Add(1); return errBoom },
			}))
			ctx, cancel := context.WithTimeout(context.Background(), window)
			defer cancel()

			err := r.Run(ctx)

			require.ErrorIs(t, err, errBoom)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			n := attempts.Load()
			assert.LessOrEqual(t, n, int32(window/hooks.MinRetryDelay)+1, "attempts in %v", window)
			assert.GreaterOrEqual(t, n, int32(1))
			for k, d := range delays {
				require.Equal(t, hooks.MinRetryDelay, d, "delay before attempt %d", k+2)
			}
		})
	}

	// backoff.Stop (-1) still stops, and positive delays are kept as
	// given, however short.
	t.Run("Stop stops, positive delays are kept", func(t *testing.T) {
		var delays []time.Duration
		r := newRunner(t, hooks.WithObserver(func(ev hooks.Event) {
			if ev.Kind == hooks.EventAttemptFailed {
				delays = append(delays, ev.Delay)
			}
		}))
		var stopRuns atomic.Int32
		require.NoError(t, r.Add(
			hooks.Hook{Name: "stop", OnFailure: hooks.Continue, Retry: func() backoff.BackOff { return constant(backoff.Stop) },
				Run: func(context.Context) error { stopRuns.Add(1); return errBoom }},
			hooks.Hook{Name: "short", OnFailure: hooks.Continue, Retry: func() backoff.BackOff { return newDelays(time.Nanosecond) },
				Run: func(context.Context) error { return errors.New("again") }},
		))
		require.Error(t, r.Run(context.Background()))
		assert.EqualValues(t, 1, stopRuns.Load())
		assert.Equal(t, []time.Duration{time.Nanosecond}, delays)
	})
}
