package hooks_test

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/hooks"
)

// This file checks the Runner against user code that does what a panic
// test does not: exit its goroutine (runtime.Goexit, as t.FailNow does),
// or call back into the Runner. A callback that calls Plan deadlocks if
// the Runner calls it while holding its lock; one that calls
// runtime.Goexit (or panics) on a goroutine holding the lock without a
// deferred unlock leaves it held, and one that calls runtime.Goexit on a
// hook's goroutine fails that hook unless the Runner runs it elsewhere.
// Every Run below is awaited within the test guard, so a deadlock fails
// the test.

// goexiting is a backoff policy whose Reset or NextBackOff calls
// runtime.Goexit.
type goexiting struct{ inReset, inNext bool }

func (p *goexiting) Reset() {
	if p.inReset {
		runtime.Goexit()
	}
}

func (p *goexiting) NextBackOff() time.Duration {
	if p.inNext {
		runtime.Goexit()
	}
	return time.Microsecond
}

// unwrapGoexit is an error whose Unwrap calls runtime.Goexit: errors.Is
// and errors.As on it exit the goroutine.
type unwrapGoexit struct{}

func (unwrapGoexit) Error() string { return "unwrap goexit" }
func (unwrapGoexit) Unwrap() error { runtime.Goexit(); return nil }

// goexitSink is a logr.LogSink that calls runtime.Goexit in every method
// but Init.
type goexitSink struct{}

func (goexitSink) Init(logr.RuntimeInfo)          {}
func (goexitSink) Enabled(int) bool               { runtime.Goexit(); return true }
func (goexitSink) Info(int, string, ...any)       { runtime.Goexit() }
func (goexitSink) Error(error, string, ...any)    { runtime.Goexit() }
func (goexitSink) WithValues(...any) logr.LogSink { runtime.Goexit(); return nil }
func (goexitSink) WithName(string) logr.LogSink   { runtime.Goexit(); return nil }

// callbackSink is a logr.LogSink that calls back() in every method but
// Init, and is enabled at every level.
type callbackSink struct{ back func() }

func (s callbackSink) Init(logr.RuntimeInfo)          {}
func (s callbackSink) Enabled(int) bool               { s.back(); return true }
func (s callbackSink) Info(int, string, ...any)       { s.back() }
func (s callbackSink) Error(error, string, ...any)    { s.back() }
func (s callbackSink) WithValues(...any) logr.LogSink { s.back(); return s }
func (s callbackSink) WithName(string) logr.LogSink   { s.back(); return s }
func (s callbackSink) WithCallDepth(int) logr.LogSink { s.back(); return s }

// callbackErr is an error whose every method calls back() first: Error,
// Is, As and Unwrap (which then reports nothing more).
type callbackErr struct {
	msg  string
	back func()
}

func (e *callbackErr) Error() string { e.back(); return e.msg }
func (e *callbackErr) Is(error) bool { e.back(); return false }
func (e *callbackErr) As(any) bool   { e.back(); return false }
func (e *callbackErr) Unwrap() error { e.back(); return nil }

// errorGoexit is an error whose Error method calls runtime.Goexit.
type errorGoexit struct{}

func (*errorGoexit) Error() string { runtime.Goexit(); return "" }

// badCause is an error whose every method exits its goroutine, by a panic
// or by runtime.Goexit.
type badCause struct{ goexit bool }

func (c *badCause) fail(method string) {
	if c.goexit {
		runtime.Goexit()
	}
	panic(method + " exploded")
}

func (c *badCause) Error() string { c.fail("Error"); return "" }
func (c *badCause) Is(error) bool { c.fail("Is"); return false }
func (c *badCause) As(any) bool   { c.fail("As"); return false }
func (c *badCause) Unwrap() error { c.fail("Unwrap"); return nil }

// planBack returns a callback that calls r.Plan, which takes the Runner's
// lock, and counts its calls.
func planBack(t *testing.T, r **hooks.Runner, calls *atomic.Int32) func() {
	return func() {
		calls.Add(1)
		_, err := (*r).Plan()
		assert.NoError(t, err)
	}
}

// runtime.Goexit in every user callback the Runner calls is handled as a
// panic in that callback: in a hook's Retry factory, policy Reset or
// NextBackOff, Gate, or a method of its error, it fails that hook with
// ErrPanic, naming the callback, without a retry; in the observer, the
// clock or the logger, it is listed in Report.CallbackErrs and the run
// goes on (it used to fail the hook, or deadlock the run).
func TestGoexitContained(t *testing.T) {
	t.Run("hook callbacks fail their hook", func(t *testing.T) {
		var runs [5]atomic.Int32
		run := func(k int, err error) func(context.Context) error {
			return func(context.Context) error { runs[k].Add(1); return err }
		}
		r := newRunner(t)
		require.NoError(t, r.Add(
			hooks.Hook{Name: "retry-factory", OnFailure: hooks.Continue, Run: run(0, nil),
				Retry: func() backoff.BackOff { runtime.Goexit(); return nil }},
			hooks.Hook{Name: "reset", OnFailure: hooks.Continue, Run: run(1, nil),
				Retry: func() backoff.BackOff { return &goexiting{inReset: true} }},
			hooks.Hook{Name: "next-backoff", OnFailure: hooks.Continue, Run: run(2, errBoom),
				Retry: func() backoff.BackOff { return &goexiting{inNext: true} }},
			hooks.Hook{Name: "unwrap", OnFailure: hooks.Continue, Run: run(3, unwrapGoexit{}),
				Retry: func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 3) }},
			hooks.Hook{Name: "gate", OnFailure: hooks.Continue, Run: run(4, nil),
				Gate: func(context.Context) error { runtime.Goexit(); return nil }},
			hooks.Hook{Name: "dependant", After: []string{"next-backoff"}, Run: ok},
			hooks.Hook{Name: "fine", Run: ok},
		))

		err := result(t, runAsync(context.Background(), r))

		require.ErrorIs(t, err, hooks.ErrPanic)
		rep := r.Report()
		assert.Empty(t, rep.CallbackErrs)
		hs := byName(rep)
		for k, tc := range []struct {
			hook     string
			runs     int32
			contains string
		}{
			{"retry-factory", 0, `hook "retry-factory" failed: Retry panicked: it called runtime.Goexit`},
			{"reset", 0, `hook "reset" failed: the Retry policy's Reset panicked: it called runtime.Goexit`},
			{"next-backoff", 1, `hook "next-backoff" failed: attempt 1: boom; no retry: the Retry policy's NextBackOff panicked: it called runtime.Goexit`},
			{"unwrap", 1, `hook "unwrap" failed: a callback of the hook panicked: it called runtime.Goexit`},
			{"gate", 0, `hook "gate" failed: gate: the hook's goroutine exited without returning (runtime.Goexit)`},
		} {
			h := hs[tc.hook]
			assert.Equal(t, hooks.Failed, h.State, tc.hook)
			assert.ErrorIs(t, h.Err, hooks.ErrPanic, tc.hook)
			assert.EqualError(t, h.Err, tc.contains, tc.hook)
			assert.Equal(t, tc.runs, runs[k].Load(), "%s: Run calls", tc.hook)
			assert.EqualValues(t, tc.runs, h.Attempts, tc.hook)
		}
		assert.Equal(t, hooks.Skipped, hs["dependant"].State)
		assert.Equal(t, hooks.Succeeded, hs["fine"].State)
	})

	// Each alone, so that each is seen to be contained on its own.
	var observed, clockCalls atomic.Int32
	for _, tc := range []struct {
		what string
		opt  hooks.Option
	}{
		{"observer", hooks.WithObserver(func(hooks.Event) {
			observed.Add(1)
			runtime.Goexit()
		})},
		{"clock", hooks.WithClock(func() time.Time {
			if clockCalls.Add(1)%2 == 0 {
				runtime.Goexit()
			}
			return time.Now()
		})},
		{"logger", hooks.WithLogger(logr.New(goexitSink{}))},
	} {
		t.Run(tc.what+" is reported and the run goes on", func(t *testing.T) {
			r := newRunner(t, tc.opt)
			var logged atomic.Bool
			var bRuns atomic.Int32
			require.NoError(t, r.Add(
				hooks.Hook{Name: "a", Gate: ok, Run: func(ctx context.Context) error {
					logr.FromContextOrDiscard(ctx).WithName("mine").Info("from the hook")
					logged.Store(true)
					return nil
				}},
				hooks.Hook{Name: "b", After: []string{"a"},
					Retry: func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 1) },
					Run: func(context.Context) error {
						if bRuns.Add(1) == 1 {
							return errBoom // the retry is logged
						}
						return nil
					}},
			))

			require.NoError(t, result(t, runAsync(context.Background(), r)))

			assert.True(t, logged.Load(), "the hook went on after its logger exited")
			rep := r.Report()
			assert.Equal(t, map[string]hooks.State{"a": hooks.Succeeded, "b": hooks.Succeeded}, states(rep))
			require.Len(t, rep.CallbackErrs, 1, "%v", rep.CallbackErrs)
			err := rep.CallbackErrs[0]
			require.ErrorIs(t, err, hooks.ErrPanic)
			assert.ErrorContains(t, err, " call(s) recovered, the first: "+tc.what+" panicked: it called runtime.Goexit")
			switch tc.what {
			case "observer":
				// gate-waiting, started, succeeded for a; started,
				// attempt-failed, started, succeeded for b: every one
				// reached the observer although each call exited.
				assert.EqualValues(t, 7, observed.Load())
				assert.EqualError(t, err, "7 call(s) recovered, the first: observer panicked: it called runtime.Goexit")
			case "clock":
				assert.Greater(t, clockCalls.Load(), int32(1))
			}
		})
	}
}

// No user code runs while the Runner holds its lock: the clock, the
// logger's sink, the methods of a hook's error and of the cause of Run's
// context may all call the Runner's Plan (which takes the lock), and Run
// does not deadlock. The clock may call Check too. A cause whose methods
// panic or call runtime.Goexit leaves no lock held either.
func TestUserCodeRunsWithoutLocks(t *testing.T) {
	t.Run("clock", func(t *testing.T) {
		var r *hooks.Runner
		var calls, notDone atomic.Int32
		back := planBack(t, &r, &calls)
		r = newRunner(t, hooks.WithClock(func() time.Time {
			back()
			if errors.Is(r.Check(context.Background()), hooks.ErrNotDone) {
				notDone.Add(1)
			}
			return time.Now()
		}))
		require.NoError(t, r.Add(
			hooks.Hook{Name: "a", Gate: ok, Run: ok},
			hooks.Hook{Name: "b", After: []string{"a"}, Run: ok},
		))
		require.NoError(t, result(t, runAsync(context.Background(), r)))
		assert.Positive(t, calls.Load())
		assert.Positive(t, notDone.Load(), "Check from the clock saw the run unfinished")
		assert.Empty(t, r.Report().CallbackErrs)
	})

	t.Run("logger", func(t *testing.T) {
		var r *hooks.Runner
		var calls atomic.Int32
		r = newRunner(t, hooks.WithLogger(logr.New(callbackSink{back: planBack(t, &r, &calls)})))
		require.NoError(t, r.Add(
			hooks.Hook{Name: "a", Run: func(ctx context.Context) error {
				logr.FromContextOrDiscard(ctx).Info("from the hook")
				return nil
			}},
			hooks.Hook{Name: "b", After: []string{"a"}, OnFailure: hooks.Continue, Run: func(context.Context) error { return errBoom }},
		))
		require.ErrorIs(t, result(t, runAsync(context.Background(), r)), errBoom)
		assert.Positive(t, calls.Load())
		assert.Empty(t, r.Report().CallbackErrs)
	})

	// The Runner does not call the Error method of a hook's error on a
	// goroutine of its own: an error whose Error exits its goroutine is an
	// error like another (retried, and failing its hook), and Check, which
	// does call it, survives it.
	t.Run("a hook's error whose Error method calls runtime.Goexit", func(t *testing.T) {
		r := newRunner(t)
		hookErr := &errorGoexit{}
		var runs atomic.Int32
		require.NoError(t, r.Add(
			hooks.Hook{Name: "x", OnFailure: hooks.Continue,
				Retry: func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 1) },
				Run:   func(context.Context) error { runs.Add(1); return hookErr }},
			hooks.Hook{Name: "fine", Run: ok},
		))
		err := result(t, runAsync(context.Background(), r))
		var runErr *hooks.RunError
		require.ErrorAs(t, err, &runErr)
		h := byName(runErr.Report)["x"]
		assert.Equal(t, hooks.Failed, h.State)
		assert.EqualValues(t, 2, runs.Load(), "retried as any failing hook")
		assert.EqualValues(t, 2, h.Attempts)
		assert.NotErrorIs(t, h.Err, hooks.ErrPanic)
		var got *errorGoexit
		require.ErrorAs(t, h.Err, &got)
		assert.Same(t, hookErr, got)
		assert.Equal(t, hooks.Succeeded, byName(runErr.Report)["fine"].State)
		check := r.Check(context.Background())
		require.ErrorIs(t, check, hooks.ErrNotDone)
		assert.Contains(t, check.Error(), `"x" (failed: (error text unavailable: its Error method panicked or called runtime.Goexit))`)
	})

	t.Run("a hook's error aborting the run", func(t *testing.T) {
		var r *hooks.Runner
		var calls atomic.Int32
		hookErr := &callbackErr{msg: "aborting", back: planBack(t, &r, &calls)}
		gateEntered := make(chan struct{})
		r = newRunner(t)
		require.NoError(t, r.Add(
			hooks.Hook{Name: "aborts", Run: func(ctx context.Context) error {
				if err := await(ctx, gateEntered, "the gate to be waited on"); err != nil {
					return err
				}
				return hookErr
			}},
			// A gate that opens as the run is aborted: the Runner then
			// checks why the run stopped, the abort's cause, which wraps
			// hookErr, before starting an attempt.
			hooks.Hook{Name: "gated", Run: ok, Gate: func(ctx context.Context) error {
				close(gateEntered)
				<-ctx.Done()
				return nil
			}},
		))
		err := result(t, runAsync(context.Background(), r))
		require.ErrorIs(t, err, hooks.ErrAborted)
		assert.ErrorContains(t, err, `run aborted by hook "aborts"`)
		hs := byName(r.Report())
		assert.Equal(t, hooks.Failed, hs["aborts"].State)
		assert.Equal(t, hooks.Canceled, hs["gated"].State)
		assert.Zero(t, hs["gated"].Attempts)
		assert.EqualError(t, hs["gated"].Err, `hook "gated" canceled: attempt 1 not started: run aborted: hook "aborts" failed: attempt 1: aborting (context canceled)`)
		assert.Positive(t, calls.Load())
	})

	// The cause of Run's context, given when it is cancelled while a gate
	// waits; the gate then opens, late, and the Runner checks why the run
	// stopped before starting an attempt.
	runCanceledWithCause := func(t *testing.T, r *hooks.Runner, cause error) error {
		t.Helper()
		gateEntered := make(chan struct{})
		require.NoError(t, r.Add(hooks.Hook{Name: "late-gate", Run: ok, Gate: func(ctx context.Context) error {
			close(gateEntered)
			<-ctx.Done()
			return nil
		}}))
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		errc := runAsync(ctx, r)
		mustAwait(t, gateEntered, "the gate to be waited on")
		cancel(cause)
		err := result(t, errc)
		h := byName(r.Report())["late-gate"]
		assert.Equal(t, hooks.Canceled, h.State)
		assert.Zero(t, h.Attempts)
		var runErr *hooks.RunError
		require.ErrorAs(t, err, &runErr)
		assert.Same(t, cause, runErr.Cause)
		return err
	}

	t.Run("the cause of Run's context", func(t *testing.T) {
		r := newRunner(t)
		var calls atomic.Int32
		cause := &callbackErr{msg: "shutting down", back: planBack(t, &r, &calls)}
		err := runCanceledWithCause(t, r, cause)
		assert.ErrorContains(t, err, `hook "late-gate" canceled: attempt 1 not started: shutting down (context canceled)`)
		assert.Positive(t, calls.Load())
	})

	t.Run("a cause whose methods panic", func(t *testing.T) {
		err := runCanceledWithCause(t, newRunner(t), &badCause{})
		assert.NotPanics(t, func() { _ = err.Error() }, "RunError.Error calls only the cause's Error method, through fmt")
		assert.ErrorContains(t, err, `hook "late-gate" canceled: attempt 1 not started: %!v(PANIC=Error method: Error exploded)`)
	})

	t.Run("a cause whose methods call runtime.Goexit", func(t *testing.T) {
		// The errors are not formatted nor searched here: that would call
		// the cause's methods on the test's goroutine.
		runCanceledWithCause(t, newRunner(t), &badCause{goexit: true})
	})
}
