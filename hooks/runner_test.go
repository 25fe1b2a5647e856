package hooks_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/hooks"
)

// a → {b, c} → d: b and c overlap (each waits until the other has started
// before it returns), and d starts only once the runner has recorded both
// as succeeded.
func TestRunsInDependencyOrder(t *testing.T) {
	r := newRunner(t)
	var aDone, bDone, cDone atomic.Bool
	bStarted, cStarted := make(chan struct{}), make(chan struct{})
	peer := func(name string, mine chan struct{}, other <-chan struct{}, done *atomic.Bool) func(context.Context) error {
		return func(ctx context.Context) error {
			if !aDone.Load() {
				return fmt.Errorf("%s started before a ended", name)
			}
			close(mine)
			if err := await(ctx, other, "the other middle hook to start"); err != nil {
				return err
			}
			done.Store(true)
			return nil
		}
	}
	require.NoError(t, r.Add(
		hooks.Hook{Name: "d", After: []string{"b", "c"}, Run: func(context.Context) error {
			if !bDone.Load() || !cDone.Load() {
				return errors.New("d started before b and c ended")
			}
			st := states(r.Report())
			if st["b"] != hooks.Succeeded || st["c"] != hooks.Succeeded {
				return fmt.Errorf("d started while b is %s and c is %s", st["b"], st["c"])
			}
			return nil
		}},
		hooks.Hook{Name: "b", After: []string{"a"}, Run: peer("b", bStarted, cStarted, &bDone)},
		hooks.Hook{Name: "c", After: []string{"a"}, Run: peer("c", cStarted, bStarted, &cDone)},
		hooks.Hook{Name: "a", Run: func(context.Context) error { aDone.Store(true); return nil }},
	))

	require.NoError(t, r.Run(context.Background()))

	rep := r.Report()
	for _, h := range rep.Hooks {
		assert.Equal(t, hooks.Succeeded, h.State, h.Name)
		assert.Equal(t, 1, h.Attempts, h.Name)
		assert.Nil(t, h.Err, h.Name)
	}
	require.Len(t, rep.CriticalPath, 3)
	assert.Equal(t, "a", rep.CriticalPath[0])
	assert.Contains(t, []string{"b", "c"}, rep.CriticalPath[1])
	assert.Equal(t, "d", rep.CriticalPath[2])
	assert.NoError(t, r.Check(context.Background()))
}

func TestCycleDetected(t *testing.T) {
	for _, tc := range []struct {
		name  string
		hooks []hooks.Hook
		path  string
	}{{
		name: "three",
		hooks: []hooks.Hook{
			{Name: "a", After: []string{"c"}},
			{Name: "b", After: []string{"a"}},
			{Name: "c", After: []string{"b"}},
			{Name: "x"}, // would run, if anything ran
		},
		path: "a → b → c → a",
	}, {
		name:  "self",
		hooks: []hooks.Hook{{Name: "x"}, {Name: "a", After: []string{"x", "a"}}},
		path:  "a → a",
	}, {
		name: "reached from outside",
		hooks: []hooks.Hook{
			{Name: "top", After: []string{"p"}},
			{Name: "p", After: []string{"q"}},
			{Name: "q", After: []string{"p"}},
		},
		path: "p → q → p",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var ran atomic.Int32
			r := newRunner(t)
			for _, h := range tc.hooks {
				h.Run = func(context.Context) error { ran.Add(1); return nil }
				require.NoError(t, r.Add(h))
			}

			err := r.Run(context.Background())
			require.ErrorIs(t, err, hooks.ErrCycle)
			assert.Contains(t, err.Error(), tc.path)
			assert.NotErrorIs(t, err, hooks.ErrUnknownDependency)
			assert.Zero(t, ran.Load(), "a hook ran")
			for _, h := range r.Report().Hooks {
				assert.Equal(t, hooks.Pending, h.State, h.Name)
			}

			_, err = r.Plan()
			require.ErrorIs(t, err, hooks.ErrCycle)
			assert.Contains(t, err.Error(), tc.path)
		})
	}
}

func TestUnknownDependency(t *testing.T) {
	var ran atomic.Int32
	run := func(context.Context) error { ran.Add(1); return nil }
	r := newRunner(t)
	require.NoError(t, r.Add(
		hooks.Hook{Name: "a", Run: run},
		hooks.Hook{Name: "b", After: []string{"x", "a", "y"}, Run: run},
		hooks.Hook{Name: "c", After: []string{"z"}, Run: run},
	))

	err := r.Run(context.Background())
	require.ErrorIs(t, err, hooks.ErrUnknownDependency)
	assert.NotErrorIs(t, err, hooks.ErrCycle)
	assert.Contains(t, err.Error(), `hook "b" runs after "x", "y"`)
	assert.Contains(t, err.Error(), `hook "c" runs after "z"`)
	assert.Zero(t, ran.Load(), "a hook ran")

	// A graph rejected by Run leaves the Runner unstarted: completing it
	// makes it runnable.
	require.NoError(t, r.Add(
		hooks.Hook{Name: "x", Run: run},
		hooks.Hook{Name: "y", Run: run},
		hooks.Hook{Name: "z", Run: run},
	))
	require.NoError(t, r.Run(context.Background()))
	assert.EqualValues(t, 6, ran.Load())
}

func TestDuplicateName(t *testing.T) {
	r := newRunner(t)
	require.NoError(t, r.Add(hooks.Hook{Name: "a", Run: ok}))

	err := r.Add(hooks.Hook{Name: "b", Run: ok}, hooks.Hook{Name: "a", Run: ok})
	require.ErrorIs(t, err, hooks.ErrDuplicateHook)
	assert.Contains(t, err.Error(), `hook #3 is named "a" like hook #1`)

	err = r.Add(hooks.Hook{Name: "c", Run: ok}, hooks.Hook{Name: "c", Run: ok})
	require.ErrorIs(t, err, hooks.ErrDuplicateHook)
	assert.Contains(t, err.Error(), `hook #3 is named "c" like hook #2`)

	// A rejected Add adds nothing: b and c are still free.
	require.NoError(t, r.Add(hooks.Hook{Name: "b", Run: ok}, hooks.Hook{Name: "c", Run: ok}))
	assert.Len(t, r.Report().Hooks, 3)
}

func TestNilRun(t *testing.T) {
	r := newRunner(t)
	err := r.Add(hooks.Hook{Name: "a", Run: ok}, hooks.Hook{Name: "etcd-snapshot"})
	require.ErrorIs(t, err, hooks.ErrInvalidHook)
	assert.Contains(t, err.Error(), `hook "etcd-snapshot" has a nil Run`)
	assert.Empty(t, r.Report().Hooks, "a rejected Add added hooks")
}

func TestAddRejectsInvalidHooks(t *testing.T) {
	for _, tc := range []struct {
		name string
		hook hooks.Hook
		want string
	}{
		{"empty name", hooks.Hook{Run: ok}, "hook #1 has an empty name"},
		{"negative timeout", hooks.Hook{Name: "x", Run: ok, Timeout: -1}, `hook "x" has a negative Timeout`},
		{"unknown policy", hooks.Hook{Name: "x", Run: ok, OnFailure: 7}, `hook "x" has an unknown OnFailure policy 7`},
		{"empty After name", hooks.Hook{Name: "x", Run: ok, After: []string{""}}, `hook "x" has an empty name in After`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := newRunner(t).Add(tc.hook)
			require.ErrorIs(t, err, hooks.ErrInvalidHook)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestRunsOnce(t *testing.T) {
	r := newRunner(t)
	require.NoError(t, r.Add(hooks.Hook{Name: "a", Run: func(context.Context) error {
		if err := r.Add(hooks.Hook{Name: "late", Run: ok}); !errors.Is(err, hooks.ErrStarted) {
			return fmt.Errorf("Add during Run: got %v, want ErrStarted", err)
		}
		return nil
	}}))
	require.NoError(t, r.Run(context.Background()))
	assert.ErrorIs(t, r.Run(context.Background()), hooks.ErrStarted)
	assert.ErrorIs(t, r.Add(hooks.Hook{Name: "later", Run: ok}), hooks.ErrStarted)
	assert.Len(t, r.Report().Hooks, 1)
}

func TestAbortCancelsInFlight(t *testing.T) {
	r := newRunner(t)
	cStarted := make(chan struct{})
	cCause := make(chan error, 1)
	var dRan atomic.Bool
	require.NoError(t, r.Add(
		hooks.Hook{Name: "b", Run: func(ctx context.Context) error {
			if err := await(ctx, cStarted, "c to start"); err != nil {
				return err
			}
			return errBoom
		}},
		hooks.Hook{Name: "c", Run: func(ctx context.Context) error {
			close(cStarted)
			err := await(ctx, nil, "the run to be aborted")
			cCause <- context.Cause(ctx) // nil if ctx was never cancelled
			return err
		}},
		hooks.Hook{Name: "d", After: []string{"b"}, Run: func(context.Context) error { dRan.Store(true); return nil }},
	))

	err := r.Run(context.Background())

	cause := <-cCause
	require.ErrorIs(t, cause, hooks.ErrAborted)
	require.ErrorIs(t, cause, errBoom)
	var he *hooks.HookError
	require.ErrorAs(t, cause, &he)
	assert.Equal(t, "b", he.Hook)
	assert.Contains(t, cause.Error(), `hook "b" failed`)
	assert.False(t, dRan.Load(), "d ran after b failed")

	re := runError(t, err)
	assert.ErrorIs(t, re.Cause, hooks.ErrAborted)
	assert.ErrorIs(t, err, errBoom)
	rep := byName(re.Report)
	assert.Equal(t, hooks.Failed, rep["b"].State)
	assert.ErrorIs(t, rep["b"].Err, errBoom)
	assert.Equal(t, hooks.Canceled, rep["c"].State)
	assert.ErrorIs(t, rep["c"].Err, context.Canceled)
	assert.Equal(t, 1, rep["c"].Attempts)
	assert.Equal(t, hooks.Skipped, rep["d"].State)
	assert.Equal(t, "b", rep["d"].SkippedBy)
	assert.Zero(t, rep["d"].Attempts)

	msg := err.Error()
	assert.Contains(t, msg, `run aborted by hook "b"`)
	assert.Contains(t, msg, `hook "b" failed: attempt 1: boom`)
	assert.Contains(t, msg, `hook "c" canceled: attempt 1: waiting for the run to be aborted: context canceled`)
	assert.Contains(t, msg, `hook "d" skipped: dependency "b" failed`)
}

// Abort starts nothing more: a hook whose gate opens once the run has
// been aborted does not run, whether the gate opens because it saw the
// abort or because its context ended.
func TestAbortStartsNothingMore(t *testing.T) {
	for _, tc := range []struct {
		name string
		gate func(ctx context.Context, aFailed <-chan struct{}) error
	}{{
		name: "gate opens after the abort",
		gate: func(ctx context.Context, aFailed <-chan struct{}) error {
			// Deaf to ctx: opens when the observer has seen a fail.
			return await(context.Background(), aFailed, "a to fail")
		},
	}, {
		name: "gate opens as its context ends",
		gate: func(ctx context.Context, _ <-chan struct{}) error {
			<-ctx.Done()
			return nil
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			aFailed := rec.when("a", hooks.EventFailed)
			r := newRunner(t, hooks.WithObserver(rec.observe))
			bGate := make(chan struct{})
			var bRan atomic.Bool
			require.NoError(t, r.Add(
				hooks.Hook{Name: "a", Run: func(ctx context.Context) error {
					if err := await(ctx, bGate, "b's gate to be called"); err != nil {
						return err
					}
					return errBoom
				}},
				hooks.Hook{
					Name: "b",
					Gate: func(ctx context.Context) error {
						close(bGate)
						return tc.gate(ctx, aFailed)
					},
					Run: func(context.Context) error { bRan.Store(true); return nil },
				},
			))

			err := r.Run(context.Background())

			assert.False(t, bRan.Load(), "b ran after a aborted the run")
			re := runError(t, err)
			assert.ErrorIs(t, re.Cause, hooks.ErrAborted)
			b := byName(re.Report)["b"]
			require.Equal(t, hooks.Canceled, b.State)
			assert.Zero(t, b.Attempts)
			assert.ErrorIs(t, b.Err, hooks.ErrAborted)
			assert.ErrorIs(t, b.Err, context.Canceled)
			assert.EqualError(t, b.Err, `hook "b" canceled: attempt 1 not started: run aborted: hook "a" failed: attempt 1: boom (context canceled)`)
			assert.Equal(t, []string{"gate-waiting/1", "canceled/0"}, kinds(rec.of("b")))
		})
	}
}

// A run whose context has already ended calls no Gate and no Run.
func TestCanceledContextStartsNothing(t *testing.T) {
	for _, limit := range []int{0, 1} {
		t.Run(fmt.Sprint("concurrency ", limit), func(t *testing.T) {
			rec := newRecorder()
			r := newRunner(t, hooks.WithObserver(rec.observe), hooks.WithConcurrency(limit))
			var calls atomic.Int32
			call := func(context.Context) error { calls.Add(1); return nil }
			require.NoError(t, r.Add(
				hooks.Hook{Name: "a", Run: call},
				hooks.Hook{Name: "b", Gate: call, Run: call},
				hooks.Hook{Name: "c", After: []string{"a"}, Run: call},
			))
			ctx, cancel := context.WithCancelCause(context.Background())
			errShutdown := errors.New("shutting down")
			cancel(errShutdown)

			err := r.Run(ctx)

			assert.Zero(t, calls.Load(), "a Gate or Run was called")
			re := runError(t, err)
			assert.ErrorIs(t, re.Cause, errShutdown)
			for _, h := range re.Report.Hooks {
				assert.Equal(t, hooks.Canceled, h.State, h.Name)
				assert.Zero(t, h.Attempts, h.Name)
				assert.ErrorIs(t, h.Err, context.Canceled, h.Name)
				assert.Equal(t, []string{"canceled/0"}, kinds(rec.of(h.Name)), h.Name)
			}
			assert.Contains(t, err.Error(), `hook "a" canceled: attempt 1 not started: shutting down (context canceled)`)
		})
	}
}

func TestContinuePolicy(t *testing.T) {
	rec := newRecorder()
	bFailed := rec.when("b", hooks.EventFailed)
	r := newRunner(t, hooks.WithObserver(rec.observe))
	var dRan atomic.Bool
	require.NoError(t, r.Add(
		hooks.Hook{Name: "a", Run: ok},
		hooks.Hook{Name: "b", After: []string{"a"}, OnFailure: hooks.Continue, Run: func(context.Context) error { return errBoom }},
		hooks.Hook{Name: "d", After: []string{"b"}, Run: func(context.Context) error { dRan.Store(true); return nil }},
		// e and f go on after b has failed: e's gate is b's failure.
		hooks.Hook{Name: "e", After: []string{"a"}, Run: ok, Gate: func(ctx context.Context) error {
			return await(ctx, bFailed, "b to fail")
		}},
		hooks.Hook{Name: "f", After: []string{"e"}, Run: ok},
	))

	err := r.Run(context.Background())

	re := runError(t, err)
	assert.NoError(t, re.Cause, "a Continue failure stopped the run")
	assert.False(t, dRan.Load(), "d ran after b failed")
	assert.Equal(t, map[string]hooks.State{
		"a": hooks.Succeeded, "b": hooks.Failed, "d": hooks.Skipped, "e": hooks.Succeeded, "f": hooks.Succeeded,
	}, states(re.Report))
	assert.Equal(t, "b", byName(re.Report)["d"].SkippedBy)

	// The error lists b failed and d skipped, nothing else.
	var listed []string
	for _, e := range re.Unwrap() {
		var he *hooks.HookError
		require.ErrorAs(t, e, &he)
		listed = append(listed, he.Hook+" "+he.State.String())
	}
	assert.Equal(t, []string{"b failed", "d skipped"}, listed)
	assert.Equal(t, `hooks: 2 of 5 hooks did not succeed: hook "b" failed: attempt 1: boom; hook "d" skipped: dependency "b" failed`, err.Error())
}

// delays is a backoff policy that hands out fixed delays, then stops.
type delays struct {
	next []time.Duration
	all  []time.Duration
}

func newDelays(d ...time.Duration) *delays { return &delays{all: d} }

func (d *delays) Reset() { d.next = d.all }

func (d *delays) NextBackOff() time.Duration {
	if len(d.next) == 0 {
		return backoff.Stop
	}
	next := d.next[0]
	d.next = d.next[1:]
	return next
}

func TestRetryWithBackoff(t *testing.T) {
	t.Run("fails twice then succeeds", func(t *testing.T) {
		rec := newRecorder()
		r := newRunner(t, hooks.WithObserver(rec.observe))
		var calls atomic.Int32
		require.NoError(t, r.Add(hooks.Hook{
			Name:  "crds",
			Retry: func() backoff.BackOff { return newDelays(time.Microsecond, 2*time.Microsecond, time.Microsecond) },
			Run: func(context.Context) error {
				if calls.Add(1) <= 2 {
					return errors.New("connection refused")
				}
				return nil
			},
		}))

		require.NoError(t, r.Run(context.Background()))

		assert.EqualValues(t, 3, calls.Load())
		assert.Equal(t, 3, r.Report().Hooks[0].Attempts)
		evs := rec.of("crds")
		assert.Equal(t, []string{"started/1", "attempt-failed/1", "started/2", "attempt-failed/2", "started/3", "succeeded/3"}, kinds(evs))
		assert.Equal(t, time.Microsecond, evs[1].Delay)
		assert.Equal(t, 2*time.Microsecond, evs[3].Delay)
		assert.EqualError(t, evs[3].Err, "attempt 2: connection refused")
	})

	t.Run("retries run out", func(t *testing.T) {
		r := newRunner(t)
		var calls atomic.Int32
		require.NoError(t, r.Add(hooks.Hook{
			Name:  "crds",
			Retry: func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 2) },
			Run:   func(context.Context) error { calls.Add(1); return errBoom },
		}))
		err := r.Run(context.Background())
		require.ErrorIs(t, err, errBoom)
		assert.Contains(t, err.Error(), `hook "crds" failed: attempt 3: boom`)
		assert.EqualValues(t, 3, calls.Load())
	})

	for name, permanent := range map[string]func(error) error{
		"hooks.Permanent stops at once":   hooks.Permanent,
		"backoff.Permanent stops at once": backoff.Permanent,
	} {
		t.Run(name, func(t *testing.T) {
			r := newRunner(t)
			var calls atomic.Int32
			require.NoError(t, r.Add(hooks.Hook{
				Name:  "kubeconfig",
				Retry: func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 5) },
				Run:   func(context.Context) error { calls.Add(1); return permanent(errBoom) },
			}))
			err := r.Run(context.Background())
			require.ErrorIs(t, err, errBoom)
			assert.EqualValues(t, 1, calls.Load())
			assert.Equal(t, hooks.Failed, r.Report().Hooks[0].State)
		})
	}

	t.Run("no Retry means one attempt", func(t *testing.T) {
		r := newRunner(t)
		var calls atomic.Int32
		require.NoError(t, r.Add(hooks.Hook{Name: "x", Run: func(context.Context) error { calls.Add(1); return errBoom }}))
		require.ErrorIs(t, r.Run(context.Background()), errBoom)
		assert.EqualValues(t, 1, calls.Load())
	})
}

// A policy's elapsed-time limit counts from the first attempt: the wait
// for the first gate is not charged to it, the gate waits before retries
// are. The gate moves the policy's clock to stand for a long wait.
func TestRetryElapsedTimeStartsAtFirstAttempt(t *testing.T) {
	for _, tc := range []struct {
		name     string
		slowGate int // which gate call waits an hour
		want     []string
	}{
		{"the first gate wait is not counted", 1, []string{"gate-waiting/1", "started/1", "attempt-failed/1", "gate-waiting/2", "started/2", "attempt-failed/2", "gate-waiting/3", "started/3", "succeeded/3"}},
		{"a gate wait before a retry is counted", 2, []string{"gate-waiting/1", "started/1", "attempt-failed/1", "gate-waiting/2", "started/2", "failed/2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			rec := newRecorder()
			r := newRunner(t, hooks.WithObserver(rec.observe))
			var gateCalls, runs atomic.Int32
			require.NoError(t, r.Add(hooks.Hook{
				Name: "crds",
				Gate: func(context.Context) error {
					if gateCalls.Add(1) == int32(tc.slowGate) {
						clock.Advance(time.Hour)
					}
					return nil
				},
				Retry: func() backoff.BackOff {
					return backoff.NewExponentialBackOff(
						backoff.WithInitialInterval(time.Microsecond),
						backoff.WithRandomizationFactor(0),
						backoff.WithMaxElapsedTime(time.Minute),
						backoff.WithClockProvider(clock),
					)
				},
				Run: func(context.Context) error {
					if runs.Add(1) <= 2 {
						return errors.New("connection refused")
					}
					return nil
				},
			}))

			_ = r.Run(context.Background())

			assert.Equal(t, tc.want, kinds(rec.of("crds")))
		})
	}
}

// apiserver is a stand-in for a control-plane component whose readiness
// can regress: up() and down() flip it, wait blocks until it is up.
type apiserver struct {
	mu    sync.Mutex
	ready chan struct{} // closed while up
	calls chan struct{} // one token per wait call
}

func newAPIServer() *apiserver {
	return &apiserver{ready: make(chan struct{}), calls: make(chan struct{}, 16)}
}

func (a *apiserver) up() {
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case <-a.ready:
	default:
		close(a.ready)
	}
}

func (a *apiserver) down() {
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case <-a.ready:
		a.ready = make(chan struct{})
	default:
	}
}

func (a *apiserver) wait(ctx context.Context) error {
	a.calls <- struct{}{}
	a.mu.Lock()
	ready := a.ready
	a.mu.Unlock()
	return await(ctx, ready, "the apiserver")
}

func TestGateRegressionWaits(t *testing.T) {
	api := newAPIServer()
	api.up()
	r := newRunner(t)
	var attempts atomic.Int32
	require.NoError(t, r.Add(hooks.Hook{
		Name:  "rbac",
		Gate:  api.wait,
		Retry: func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 3) },
		Run: func(context.Context) error {
			if attempts.Add(1) == 1 {
				api.down() // the static pod is being recreated
				return errors.New("the apiserver went away")
			}
			return nil
		},
	}))

	errc := runAsync(context.Background(), r)
	mustAwait(t, api.calls, "the first gate call")
	mustAwait(t, api.calls, "the gate call before the retry")

	// The hook is waiting on its gate, not failing and not running.
	assert.EqualValues(t, 1, attempts.Load())
	h := r.Report().Hooks[0]
	assert.Equal(t, hooks.Waiting, h.State)
	assert.Equal(t, 1, h.Attempts)
	err := r.Check(context.Background())
	require.ErrorIs(t, err, hooks.ErrNotDone)
	assert.Contains(t, err.Error(), `"rbac" (waiting for its gate before attempt 2)`)

	api.up()
	require.NoError(t, result(t, errc))
	assert.EqualValues(t, 2, attempts.Load())
	h = r.Report().Hooks[0]
	assert.Equal(t, hooks.Succeeded, h.State)
	assert.Equal(t, 2, h.Attempts)
}

func TestTimeoutPerAttempt(t *testing.T) {
	t.Run("the attempt fails naming the hook and the timeout", func(t *testing.T) {
		r := newRunner(t)
		cause := make(chan error, 1)
		require.NoError(t, r.Add(hooks.Hook{
			Name:    "etcd-snapshot",
			Timeout: time.Millisecond,
			Run: func(ctx context.Context) error {
				<-ctx.Done() // blocks past its Timeout
				cause <- context.Cause(ctx)
				return ctx.Err()
			},
		}))

		err := r.Run(context.Background())

		require.ErrorIs(t, err, hooks.ErrTimeout)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), `hook "etcd-snapshot" failed: attempt 1: timed out after 1ms: context deadline exceeded`)
		c := <-cause
		assert.ErrorIs(t, c, hooks.ErrTimeout)
		assert.EqualError(t, c, `hook "etcd-snapshot": timed out after 1ms`)
	})

	// Both attempts run into their timeout. The second one's deadline is
	// set when it starts, after the first one's has passed, so it is a
	// full Timeout later: no wall-clock assumption, just the order of
	// events on the monotonic clock.
	t.Run("each attempt has its own timeout", func(t *testing.T) {
		const timeout = time.Millisecond
		rec := newRecorder()
		r := newRunner(t, hooks.WithObserver(rec.observe))
		var deadlines []time.Time // attempts run one after another
		require.NoError(t, r.Add(hooks.Hook{
			Name:    "etcd-snapshot",
			Timeout: timeout,
			Retry:   func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 1) },
			Run: func(ctx context.Context) error {
				d, ok := ctx.Deadline()
				if !ok {
					return errors.New("the attempt has no deadline")
				}
				deadlines = append(deadlines, d)
				<-ctx.Done()
				return ctx.Err()
			},
		}))

		err := r.Run(context.Background())

		require.ErrorIs(t, err, hooks.ErrTimeout)
		assert.Contains(t, err.Error(), `hook "etcd-snapshot" failed: attempt 2: timed out after 1ms`)
		evs := rec.of("etcd-snapshot")
		require.Equal(t, []string{"started/1", "attempt-failed/1", "started/2", "failed/2"}, kinds(evs))
		assert.ErrorIs(t, evs[1].Err, hooks.ErrTimeout)
		require.Len(t, deadlines, 2)
		assert.False(t, deadlines[1].Before(deadlines[0].Add(timeout)),
			"the second attempt's deadline %v is not a full timeout after the first's %v", deadlines[1], deadlines[0])
	})
}

func TestContextCanceledReportsPending(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := newRecorder()
	doneSucceeded := rec.when("done", hooks.EventSucceeded)
	r := newRunner(t, hooks.WithObserver(rec.observe))
	aStarted, gateCalled := make(chan struct{}), make(chan struct{})
	require.NoError(t, r.Add(
		hooks.Hook{Name: "done", Run: ok},
		hooks.Hook{Name: "a", Run: func(ctx context.Context) error {
			close(aStarted)
			<-ctx.Done()
			return ctx.Err()
		}},
		hooks.Hook{Name: "b", After: []string{"a"}, Run: ok},
		hooks.Hook{Name: "c", Run: ok, Gate: func(ctx context.Context) error {
			close(gateCalled)
			<-ctx.Done()
			return fmt.Errorf("waiting for apiserver readyz: %w", ctx.Err())
		}},
	))

	errc := runAsync(ctx, r)
	mustAwait(t, aStarted, "a to start")
	mustAwait(t, gateCalled, "c's gate")
	mustAwait(t, doneSucceeded, `"done" to succeed`)
	cancel()
	err := result(t, errc)

	require.ErrorIs(t, err, context.Canceled)
	re := runError(t, err)
	assert.ErrorIs(t, re.Cause, context.Canceled)
	rep := byName(re.Report)
	assert.Equal(t, hooks.Succeeded, rep["done"].State)
	for _, name := range []string{"a", "b", "c"} {
		assert.Equal(t, hooks.Canceled, rep[name].State, name)
		assert.ErrorIs(t, rep[name].Err, context.Canceled, name)
	}
	msg := err.Error()
	assert.Contains(t, msg, "3 of 4 hooks did not succeed (run stopped: context canceled)")
	assert.Contains(t, msg, `hook "a" canceled: attempt 1: context canceled`)
	assert.Contains(t, msg, `hook "b" canceled: not started, waiting for "a": context canceled`)
	assert.Contains(t, msg, `hook "c" canceled: gate: waiting for apiserver readyz: context canceled`)
	assert.NotContains(t, msg, `"done"`)
}

func TestHealthCheckNamesPending(t *testing.T) {
	t.Run("fails until every hook succeeded", func(t *testing.T) {
		r := newRunner(t)
		ctx := context.Background()
		aStarted, release := make(chan struct{}), make(chan struct{})
		require.NoError(t, r.Add(
			hooks.Hook{Name: "a", Run: func(ctx context.Context) error {
				close(aStarted)
				return await(ctx, release, "the test to release a")
			}},
			hooks.Hook{Name: "b", After: []string{"a"}, Run: ok},
		))

		err := r.Check(ctx)
		require.ErrorIs(t, err, hooks.ErrNotDone)
		assert.EqualError(t, err, `hooks: not done: "a" (not started: Run has not been called), "b" (not started: Run has not been called)`)

		errc := runAsync(ctx, r)
		mustAwait(t, aStarted, "a to start")
		err = r.Check(ctx)
		require.ErrorIs(t, err, hooks.ErrNotDone)
		assert.EqualError(t, err, `hooks: not done: "a" (running attempt 1), "b" (not started, waiting for "a")`)

		close(release)
		require.NoError(t, result(t, errc))
		assert.NoError(t, r.Check(ctx))
	})

	t.Run("keeps failing after a failed run", func(t *testing.T) {
		r := newRunner(t)
		require.NoError(t, r.Add(
			hooks.Hook{Name: "a", Run: ok},
			hooks.Hook{Name: "b", Run: func(context.Context) error { return errBoom }, OnFailure: hooks.Continue},
		))
		require.Error(t, r.Run(context.Background()))
		err := r.Check(context.Background())
		require.ErrorIs(t, err, hooks.ErrNotDone)
		assert.EqualError(t, err, `hooks: not done: "b" (failed: attempt 1: boom)`)
	})

	t.Run("no hooks pass", func(t *testing.T) {
		r := newRunner(t)
		assert.NoError(t, r.Check(context.Background()))
		assert.NoError(t, r.Run(context.Background()))
		assert.NoError(t, r.Check(context.Background()))
	})
}

func TestConcurrencyLimit(t *testing.T) {
	const n, limit = 6, 2
	// Each hook says when it starts and returns when released or when
	// its context ends; inFlight tracks how many are inside Run.
	type probe struct {
		inFlight, maxInFlight atomic.Int32
		started               chan struct{}
		release               chan struct{}
	}
	setup := func(t *testing.T) (*hooks.Runner, *probe) {
		p := &probe{started: make(chan struct{}, n), release: make(chan struct{})}
		r := newRunner(t, hooks.WithConcurrency(limit))
		for i := range n {
			require.NoError(t, r.Add(hooks.Hook{Name: fmt.Sprint("h", i), Run: func(ctx context.Context) error {
				now := p.inFlight.Add(1)
				for m := p.maxInFlight.Load(); now > m && !p.maxInFlight.CompareAndSwap(m, now); m = p.maxInFlight.Load() {
				}
				p.started <- struct{}{}
				err := await(ctx, p.release, "the test to release a hook")
				p.inFlight.Add(-1)
				return err
			}}))
		}
		return r, p
	}

	// While two hooks hold the slots, no other starts: when the run is
	// cancelled, the other four have made no attempt at all.
	t.Run("holds hooks back", func(t *testing.T) {
		r, p := setup(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := runAsync(ctx, r)
		for range limit {
			mustAwait(t, p.started, "a hook to start")
		}
		cancel()
		require.ErrorIs(t, result(t, errc), context.Canceled)
		var ran, heldBack int
		for _, h := range r.Report().Hooks {
			require.Equal(t, hooks.Canceled, h.State, h.Name)
			switch h.Attempts {
			case 1:
				ran++
			case 0:
				heldBack++
				// Stopped in the slot wait, or before it if its
				// goroutine got there only after the cancel.
				assert.ErrorContains(t, h.Err, "attempt 1 not started", h.Name)
				assert.ErrorIs(t, h.Err, context.Canceled, h.Name)
			}
		}
		assert.Equal(t, limit, ran)
		assert.Equal(t, n-limit, heldBack)
	})

	// The test releases one hook per start it sees: every hook gets to
	// run, never more than two at once.
	t.Run("frees slots as hooks return", func(t *testing.T) {
		r, p := setup(t)
		errc := runAsync(context.Background(), r)
		for range limit {
			mustAwait(t, p.started, "a hook to start")
		}
		for range n - limit {
			p.release <- struct{}{}
			mustAwait(t, p.started, "the next hook to start")
		}
		for range limit {
			p.release <- struct{}{}
		}
		require.NoError(t, result(t, errc))
		assert.EqualValues(t, limit, p.maxInFlight.Load())
	})
}

func TestObserverEvents(t *testing.T) {
	rec := newRecorder()
	clock := newFakeClock()
	tick := func() time.Time { clock.Advance(time.Second); return clock.Now() }
	r := newRunner(t, hooks.WithObserver(rec.observe), hooks.WithClock(tick))
	var calls atomic.Int32
	require.NoError(t, r.Add(
		hooks.Hook{
			Name:  "x",
			Gate:  ok,
			Retry: func() backoff.BackOff { return newDelays(0) },
			Run: func(context.Context) error {
				if calls.Add(1) == 1 {
					return errBoom
				}
				return nil
			},
		},
		hooks.Hook{Name: "y", OnFailure: hooks.Continue, Run: func(context.Context) error { return errBoom }},
		hooks.Hook{Name: "z", After: []string{"y"}, Run: ok},
	))

	require.Error(t, r.Run(context.Background()))

	x := rec.of("x")
	assert.Equal(t, []string{"gate-waiting/1", "started/1", "attempt-failed/1", "gate-waiting/2", "started/2", "succeeded/2"}, kinds(x))
	for k := 1; k < len(x); k++ {
		assert.True(t, x[k].Time.After(x[k-1].Time), "event %d of x is not after the one before", k)
	}
	assert.Equal(t, []string{"started/1", "failed/1"}, kinds(rec.of("y")))
	z := rec.of("z")
	assert.Equal(t, []string{"skipped/0"}, kinds(z))
	assert.EqualError(t, z[0].Err, `hook "z" skipped: dependency "y" failed`)
	assert.Equal(t, `z skipped: hook "z" skipped: dependency "y" failed`, z[0].String())
}

// The observer sees events in causal order: a hook's success before any
// event of the hook it released, and an abort before the cancellations it
// caused. Each case runs many times, since a regression shows only in
// some interleavings.
func TestObserverCausalOrder(t *testing.T) {
	const runs = 200
	// index returns the position of the first event of hook of kind (of
	// any kind if kind is 0), failing the test if there is none.
	index := func(t *testing.T, evs []hooks.Event, hook string, kind hooks.EventKind) int {
		t.Helper()
		for k, ev := range evs {
			if ev.Hook == hook && (kind == 0 || ev.Kind == kind) {
				return k
			}
		}
		require.Failf(t, "missing event", "no %s %v event in %v", hook, kind, evs)
		return -1
	}

	t.Run("a dependency succeeds before its dependant starts", func(t *testing.T) {
		for range runs {
			rec := newRecorder()
			r := newRunner(t, hooks.WithObserver(rec.observe))
			require.NoError(t, r.Add(
				hooks.Hook{Name: "a", Run: ok},
				hooks.Hook{Name: "b", After: []string{"a"}, Gate: ok, Run: ok},
			))
			require.NoError(t, r.Run(context.Background()))
			evs := rec.all()
			require.Less(t, index(t, evs, "a", hooks.EventSucceeded), index(t, evs, "b", 0),
				"an event of b came before a succeeded: %v", evs)
		}
	})

	t.Run("an abort comes before the cancellations it causes", func(t *testing.T) {
		for range runs {
			rec := newRecorder()
			r := newRunner(t, hooks.WithObserver(rec.observe))
			bStarted := make(chan struct{})
			require.NoError(t, r.Add(
				hooks.Hook{Name: "a", Run: func(ctx context.Context) error {
					if err := await(ctx, bStarted, "b to start"); err != nil {
						return err
					}
					return errBoom
				}},
				hooks.Hook{Name: "b", Run: func(ctx context.Context) error {
					close(bStarted)
					return await(ctx, nil, "the run to be aborted")
				}},
			))
			require.Error(t, r.Run(context.Background()))
			evs := rec.all()
			require.Less(t, index(t, evs, "a", hooks.EventFailed), index(t, evs, "b", hooks.EventCanceled),
				"b was canceled before a failed: %v", evs)
		}
	})
}

func TestReportTimings(t *testing.T) {
	clock := newFakeClock()
	rec := newRecorder()
	bStarted := rec.when("b", hooks.EventStarted)
	cSucceeded := rec.when("c", hooks.EventSucceeded)
	r := newRunner(t, hooks.WithClock(clock.Now), hooks.WithObserver(rec.observe))
	// The clock moves only inside hooks, in an order fixed by channels:
	// a's gate 2s, a 3s, then b and c overlap: c 1s, then b 5s more; d 1s.
	work := func(d time.Duration, after <-chan struct{}) func(context.Context) error {
		return func(ctx context.Context) error {
			if err := await(ctx, after, "the hook before"); err != nil {
				return err
			}
			clock.Advance(d)
			return nil
		}
	}
	closed := make(chan struct{})
	close(closed)
	require.NoError(t, r.Add(
		hooks.Hook{Name: "a", Gate: work(2*time.Second, closed), Run: work(3*time.Second, closed)},
		hooks.Hook{Name: "b", After: []string{"a"}, Run: work(5*time.Second, cSucceeded)},
		hooks.Hook{Name: "c", Gate: work(0, bStarted), Run: work(time.Second, closed)},
		hooks.Hook{Name: "d", After: []string{"b", "c"}, Run: work(time.Second, closed)},
	))

	require.NoError(t, r.Run(context.Background()))

	rep := r.Report()
	h := byName(rep)
	assert.Equal(t, 2*time.Second, h["a"].GateWait)
	assert.Equal(t, 3*time.Second, h["a"].Running)
	assert.Equal(t, time.Duration(0), h["a"].Start)
	assert.Equal(t, 5*time.Second, h["a"].End)
	assert.Equal(t, 5*time.Second, h["b"].Start)
	assert.Equal(t, 6*time.Second, h["b"].Running)
	assert.Equal(t, 11*time.Second, h["b"].End)
	assert.Equal(t, time.Second, h["c"].Running)
	assert.Equal(t, 6*time.Second, h["c"].End)
	assert.Equal(t, 11*time.Second, h["d"].Start)
	assert.Equal(t, 12*time.Second, h["d"].End)
	assert.Equal(t, 12*time.Second, rep.Duration)
	assert.Equal(t, []string{"a", "b", "d"}, rep.CriticalPath)
}

func TestPlan(t *testing.T) {
	r := newRunner(t)
	require.NoError(t, r.Add(
		hooks.Hook{Name: "cni", After: []string{"crds", "rbac"}, Run: ok, Gate: ok},
		hooks.Hook{Name: "crds", Run: ok, Gate: ok},
		hooks.Hook{Name: "rbac", Run: ok},
		hooks.Hook{Name: "metrics", After: []string{"cni"}, Run: ok, OnFailure: hooks.Continue},
		hooks.Hook{Name: `odd "name"`, After: []string{"rbac"}, Run: ok},
	))

	p, err := r.Plan()
	require.NoError(t, err)
	assert.Equal(t, [][]string{{"crds", "rbac"}, {"cni", `odd "name"`}, {"metrics"}}, p.Levels)
	assert.Equal(t, `digraph hooks {
	rankdir=LR;
	"cni" [shape=box];
	"crds" [shape=box];
	"rbac";
	"metrics" [style=dashed];
	"odd \"name\"";
	"crds" -> "cni";
	"rbac" -> "cni";
	"cni" -> "metrics";
	"rbac" -> "odd \"name\"";
}
`, p.DOT())

	// Plan does not start the Runner.
	require.NoError(t, r.Run(context.Background()))
}

func TestPanicFailsTheHook(t *testing.T) {
	r := newRunner(t)
	var calls atomic.Int32
	require.NoError(t, r.Add(
		hooks.Hook{
			Name:      "buggy",
			OnFailure: hooks.Continue,
			Retry:     func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 5) },
			Run:       func(context.Context) error { calls.Add(1); panic("nil map") },
		},
		hooks.Hook{Name: "buggy-gate", OnFailure: hooks.Continue, Run: ok, Gate: func(context.Context) error { panic("oops") }},
		hooks.Hook{Name: "fine", Run: ok},
	))

	err := r.Run(context.Background())
	assert.Contains(t, err.Error(), `hook "buggy" failed: attempt 1: Run panicked: nil map`)
	assert.Contains(t, err.Error(), `hook "buggy-gate" failed: gate: gate panicked: oops`)
	assert.EqualValues(t, 1, calls.Load(), "a panic was retried")
	assert.Equal(t, hooks.Succeeded, states(r.Report())["fine"])
}

func TestGoexitFailsTheHook(t *testing.T) {
	r := newRunner(t, hooks.WithConcurrency(1))
	require.NoError(t, r.Add(
		hooks.Hook{Name: "exits", OnFailure: hooks.Continue, Run: func(context.Context) error { runtime.Goexit(); return nil }},
		hooks.Hook{Name: "after", After: []string{"exits"}, Run: ok},
		hooks.Hook{Name: "fine", Run: ok}, // needs the slot "exits" held
	))
	err := r.Run(context.Background())
	assert.Contains(t, err.Error(), `hook "exits" failed: the hook's goroutine exited without returning (runtime.Goexit)`)
	assert.Equal(t, map[string]hooks.State{"exits": hooks.Failed, "after": hooks.Skipped, "fine": hooks.Succeeded}, states(r.Report()))
}

func TestBadInput(t *testing.T) {
	for name, opt := range map[string]hooks.Option{
		"negative concurrency": hooks.WithConcurrency(-1),
		"nil observer":         hooks.WithObserver(nil),
		"nil clock":            hooks.WithClock(nil),
		"nil option":           nil,
	} {
		t.Run(name, func(t *testing.T) {
			r, err := hooks.New(opt)
			assert.Error(t, err)
			assert.Nil(t, r)
		})
	}
	t.Run("nil context", func(t *testing.T) {
		var r hooks.Runner // the zero Runner is usable
		require.NoError(t, r.Add(hooks.Hook{Name: "a", Run: ok}))
		var ctx context.Context
		assert.ErrorContains(t, r.Run(ctx), "nil context")
		assert.NoError(t, r.Run(context.Background()))
	})
}

// Hooks get a context carrying the Runner's logger, named after the hook.
func TestLoggerInContext(t *testing.T) {
	var lines []string
	var mu sync.Mutex
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, args)
	}, funcr.Options{Verbosity: 1})
	r := newRunner(t, hooks.WithLogger(log))
	require.NoError(t, r.Add(hooks.Hook{Name: "crds", Run: func(ctx context.Context) error {
		logr.FromContextOrDiscard(ctx).Info("applied", "count", 3)
		return nil
	}}))
	require.NoError(t, r.Run(context.Background()))
	mu.Lock()
	defer mu.Unlock()
	assert.Contains(t, strings.Join(lines, "\n"), `"msg"="applied" "hook"="crds" "count"=3`)
}
