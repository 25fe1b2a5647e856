package hooks_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/hooks"
)

// panicky is a backoff policy whose Reset or NextBackOff panics.
type panicky struct{ inReset, inNext bool }

func (p *panicky) Reset() {
	if p.inReset {
		panic("reset exploded")
	}
}

func (p *panicky) NextBackOff() time.Duration {
	if p.inNext {
		panic(errors.New("next exploded"))
	}
	return time.Microsecond
}

// panicSink is a logr.LogSink that panics in every method but Init. Its
// methods do not touch the receiver before panicking, so a nil one works
// as a typed-nil sink too (logr.New calls Init).
type panicSink struct{}

func (*panicSink) Init(logr.RuntimeInfo)            {}
func (*panicSink) Enabled(int) bool                 { panic("sink Enabled") }
func (*panicSink) Info(int, string, ...any)         { panic("sink Info") }
func (*panicSink) Error(error, string, ...any)      { panic("sink Error") }
func (s *panicSink) WithValues(...any) logr.LogSink { return s }
func (s *panicSink) WithName(string) logr.LogSink   { return s }
func (s *panicSink) WithCallDepth(int) logr.LogSink { return s }

// unwrapBomb is an error whose Unwrap panics: errors.Is and errors.As on
// it panic, wherever the Runner calls them.
type unwrapBomb struct{}

func (unwrapBomb) Error() string { return "unwrap bomb" }
func (unwrapBomb) Unwrap() error { panic("Unwrap exploded") }

// Every user callback the Runner calls, panicking: hooks' Run, Gate, Retry
// factory, policy Reset and NextBackOff, an error's Unwrap, the observer,
// the clock and the logger. The process survives (the test runs on), each
// hook whose callback panicked fails with ErrPanic without a further
// attempt, the hooks independent of it succeed, and panics of the
// observer, clock and logger are listed in Report.CallbackErrs while the
// run succeeds.
func TestCallbackPanicsContained(t *testing.T) {
	t.Run("hook callbacks fail their hook", func(t *testing.T) {
		var runs [8]atomic.Int32
		run := func(k int, err error) func(context.Context) error {
			return func(context.Context) error { runs[k].Add(1); return err }
		}
		sentinel := errors.New("panic value")
		r := newRunner(t)
		require.NoError(t, r.Add(
			hooks.Hook{Name: "retry-factory", OnFailure: hooks.Continue, Run: run(0, nil),
				Retry: func() backoff.BackOff { panic("factory exploded") }},
			hooks.Hook{Name: "reset", OnFailure: hooks.Continue, Run: run(1, nil),
				Retry: func() backoff.BackOff { return &panicky{inReset: true} }},
			hooks.Hook{Name: "next-backoff", OnFailure: hooks.Continue, Run: run(2, errBoom),
				Retry: func() backoff.BackOff { return &panicky{inNext: true} }},
			hooks.Hook{Name: "wrapped-typed-nil", OnFailure: hooks.Continue, Run: run(3, nil),
				Retry: func() backoff.BackOff { return backoff.WithMaxRetries((*backoff.ExponentialBackOff)(nil), 3) }},
			hooks.Hook{Name: "unwrap", OnFailure: hooks.Continue, Run: run(4, unwrapBomb{}),
				Retry: func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 3) }},
			hooks.Hook{Name: "panic-error", OnFailure: hooks.Continue,
				Run: func(context.Context) error { runs[5].Add(1); panic(sentinel) }},
			hooks.Hook{Name: "panic-nil", OnFailure: hooks.Continue,
				Run: func(context.Context) error { runs[6].Add(1); panic(nil) }},
			hooks.Hook{Name: "dependant", After: []string{"next-backoff"}, Run: run(7, nil)},
			hooks.Hook{Name: "fine", Run: ok},
		))

		err := r.Run(context.Background())

		require.ErrorIs(t, err, hooks.ErrPanic)
		rep := byName(r.Report())
		for _, tc := range []struct {
			hook     string
			runs     int32
			contains string
		}{
			{"retry-factory", 0, "Retry panicked: factory exploded"},
			{"reset", 0, "the Retry policy's Reset panicked: reset exploded"},
			{"next-backoff", 1, "attempt 1: boom; no retry: the Retry policy's NextBackOff panicked: next exploded"},
			{"wrapped-typed-nil", 0, "the Retry policy's Reset panicked"},
			{"unwrap", 1, "panicked: Unwrap exploded"},
			{"panic-error", 1, "attempt 1: Run panicked: panic value"},
			// Go 1.26 says "panic called with nil argument", Go 1.27 puts
			// "runtime error: " in front (a *runtime.PanicNilError either way).
			{"panic-nil", 1, "panic called with nil argument"},
		} {
			h := rep[tc.hook]
			assert.Equal(t, hooks.Failed, h.State, tc.hook)
			assert.ErrorIs(t, h.Err, hooks.ErrPanic, tc.hook)
			assert.ErrorContains(t, h.Err, tc.contains, tc.hook)
			if tc.hook == "panic-nil" {
				assert.ErrorContains(t, h.Err, "attempt 1: Run panicked: ", tc.hook)
			}
			assert.Equal(t, tc.runs, runs[map[string]int{
				"retry-factory": 0, "reset": 1, "next-backoff": 2, "wrapped-typed-nil": 3,
				"unwrap": 4, "panic-error": 5, "panic-nil": 6,
			}[tc.hook]].Load(), "%s: Run calls", tc.hook)
			assert.EqualValues(t, tc.runs, h.Attempts, tc.hook)
		}
		assert.ErrorIs(t, rep["next-backoff"].Err, errBoom, "the attempt's own error is kept")
		assert.ErrorIs(t, rep["panic-error"].Err, sentinel, "a panic value that is an error is wrapped")
		assert.Equal(t, hooks.Skipped, rep["dependant"].State)
		assert.Zero(t, runs[7].Load())
		assert.Equal(t, hooks.Succeeded, rep["fine"].State)
	})

	t.Run("observer, clock and logger panics are reported and the run goes on", func(t *testing.T) {
		var observed, clockCalls atomic.Int32
		r := newRunner(t,
			hooks.WithObserver(func(ev hooks.Event) {
				observed.Add(1)
				panic("observer exploded on " + ev.Kind.String())
			}),
			hooks.WithClock(func() time.Time {
				if clockCalls.Add(1)%2 == 0 {
					panic("clock exploded")
				}
				return time.Now()
			}),
			hooks.WithLogger(logr.New(&panicSink{})),
		)
		var logged atomic.Bool
		require.NoError(t, r.Add(
			hooks.Hook{Name: "a", Gate: ok, Run: func(ctx context.Context) error {
				// The logger a hook gets from its context is contained too.
				logr.FromContextOrDiscard(ctx).Info("from the hook")
				logged.Store(true)
				return nil
			}},
			hooks.Hook{Name: "b", After: []string{"a"}, Retry: func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 1) },
				Run: func() func(context.Context) error {
					var n atomic.Int32
					return func(context.Context) error {
						if n.Add(1) == 1 {
							return errBoom // the retry is logged through the panicking logger
						}
						return nil
					}
				}()},
		))

		require.NoError(t, r.Run(context.Background()))

		assert.True(t, logged.Load())
		rep := r.Report()
		assert.Equal(t, map[string]hooks.State{"a": hooks.Succeeded, "b": hooks.Succeeded}, states(rep))
		// Every event reached the observer although each call panicked:
		// gate-waiting, started, succeeded for a; started, attempt-failed,
		// started, succeeded for b.
		assert.EqualValues(t, 7, observed.Load())
		got := map[string]error{}
		for _, err := range rep.CallbackErrs {
			require.ErrorIs(t, err, hooks.ErrPanic)
			got[strings.Fields(err.Error())[5]] = err
		}
		require.Len(t, got, 3, "%v", rep.CallbackErrs)
		assert.ErrorContains(t, got["observer"], "7 call(s) recovered, the first: observer panicked: observer exploded on gate-waiting")
		assert.ErrorContains(t, got["clock"], "clock panicked: clock exploded")
		assert.ErrorContains(t, got["logger"], "logger panicked: sink ")
	})
}

// nilCtx is a context.Context whose nil pointer panics when used.
type nilCtx struct{ context.Context }

// Every exported function and method that takes an interface, func or
// pointer, given a nil or a typed nil: an error wrapping ErrInvalidInput
// at the call, naming the argument, never a panic.
func TestTypedNilInputs(t *testing.T) {
	for name, tc := range map[string]struct {
		opt  hooks.Option
		want string
	}{
		"nil option":            {nil, "New: option #2 is nil"},
		"nil observer":          {hooks.WithObserver(nil), "WithObserver(nil)"},
		"nil clock":             {hooks.WithClock(nil), "WithClock(nil)"},
		"typed-nil logger sink": {hooks.WithLogger(logr.New((*panicSink)(nil))), "WithLogger: the logger's sink is a nil *hooks_test.panicSink"},
		"negative concurrency":  {hooks.WithConcurrency(-1), "WithConcurrency(-1)"},
		"zero grace period":     {hooks.WithGracePeriod(0), "WithGracePeriod(0s)"},
		"negative grace period": {hooks.WithGracePeriod(-time.Second), "WithGracePeriod(-1s)"},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := hooks.New(hooks.WithConcurrency(1), tc.opt)
			require.ErrorIs(t, err, hooks.ErrInvalidInput)
			assert.ErrorContains(t, err, tc.want)
			assert.Nil(t, r)
		})
	}

	t.Run("zero logger discards", func(t *testing.T) {
		r := newRunner(t, hooks.WithLogger(logr.Logger{}))
		require.NoError(t, r.Add(hooks.Hook{Name: "a", Run: func(ctx context.Context) error {
			logr.FromContextOrDiscard(ctx).Info("nobody hears this")
			return errBoom
		}}))
		require.ErrorIs(t, r.Run(context.Background()), errBoom)
	})

	t.Run("nil and typed-nil contexts", func(t *testing.T) {
		r := newRunner(t)
		require.NoError(t, r.Add(hooks.Hook{Name: "a", Run: ok}))
		var nilIface context.Context
		for _, ctx := range []context.Context{nilIface, (*nilCtx)(nil)} {
			err := r.Run(ctx)
			require.ErrorIs(t, err, hooks.ErrInvalidInput)
			assert.ErrorContains(t, err, "Run: nil context")
		}
		require.NoError(t, r.Run(context.Background()), "a refused Run does not start the Runner")
	})

	t.Run("nil Runner", func(t *testing.T) {
		var r *hooks.Runner
		for method, err := range map[string]error{
			"Add":   r.Add(hooks.Hook{Name: "a", Run: ok}),
			"Run":   r.Run(context.Background()),
			"Check": r.Check(context.Background()),
			"Plan": func() error {
				_, err := r.Plan()
				return err
			}(),
		} {
			require.ErrorIs(t, err, hooks.ErrInvalidInput, method)
			assert.ErrorContains(t, err, method+" called on a nil *Runner")
		}
		assert.Empty(t, r.Report().Hooks)
	})

	t.Run("nil Run", func(t *testing.T) {
		err := newRunner(t).Add(hooks.Hook{Name: "a", Gate: ok})
		require.ErrorIs(t, err, hooks.ErrInvalidHook)
		require.ErrorIs(t, err, hooks.ErrInvalidInput)
		assert.ErrorContains(t, err, `hook "a" has a nil Run`)
	})

	t.Run("Retry factory returning a typed nil", func(t *testing.T) {
		var runs atomic.Int32
		r := newRunner(t)
		require.NoError(t, r.Add(
			hooks.Hook{Name: "typed-nil", OnFailure: hooks.Continue,
				Retry: func() backoff.BackOff { return (*backoff.ExponentialBackOff)(nil) },
				Run:   func(context.Context) error { runs.Add(1); return nil }},
			hooks.Hook{Name: "fine", Run: ok},
		))
		err := r.Run(context.Background())
		require.ErrorIs(t, err, hooks.ErrInvalidHook)
		require.ErrorIs(t, err, hooks.ErrInvalidInput)
		assert.ErrorContains(t, err, `hook "typed-nil" failed: invalid hook: hook "typed-nil": Retry returned a nil *backoff.ExponentialBackOff`)
		assert.Zero(t, runs.Load(), "Run was called without a usable policy")
		rep := byName(r.Report())
		assert.Equal(t, hooks.Failed, rep["typed-nil"].State)
		assert.Zero(t, rep["typed-nil"].Attempts)
		assert.Equal(t, hooks.Succeeded, rep["fine"].State)
	})

	// Documented optional values, not errors: no Retry, or a factory that
	// returns a nil interface, means a single attempt; no Gate, no wait.
	t.Run("nil Retry, nil policy and nil Gate mean a single attempt, no gate", func(t *testing.T) {
		var runs atomic.Int32
		fail := func(context.Context) error { runs.Add(1); return errBoom }
		r := newRunner(t)
		require.NoError(t, r.Add(
			hooks.Hook{Name: "no-retry", OnFailure: hooks.Continue, Run: fail},
			hooks.Hook{Name: "nil-policy", OnFailure: hooks.Continue, Run: fail, Retry: func() backoff.BackOff { return nil }},
		))
		require.ErrorIs(t, r.Run(context.Background()), errBoom)
		assert.EqualValues(t, 2, runs.Load())
	})
}
