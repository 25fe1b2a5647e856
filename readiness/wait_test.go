package readiness_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/readiness"
)

// script is a check that returns scripted results in order and fails the
// test if it is called more often than scripted.
type script struct {
	t       testing.TB
	mu      sync.Mutex
	results []error
	calls   int
}

func (s *script) Check(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.calls > len(s.results) {
		s.t.Errorf("check called %d times, scripted only %d results", s.calls, len(s.results))
		return readiness.Permanent(errors.New("script exhausted"))
	}
	return s.results[s.calls-1]
}

func (s *script) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func constant(d time.Duration) readiness.Option {
	return readiness.WithBackoff(func() backoff.BackOff { return backoff.NewConstantBackOff(d) })
}

func TestWaitStableWindowRidesOutFlap(t *testing.T) {
	flap := errors.New("kube-apiserver pod replaced")
	tests := []struct {
		name      string
		passes    int
		window    time.Duration
		results   []error
		wantCalls int
	}{
		// Pass, flap, then three passes: Wait returns on the third.
		{"3 passes", 3, 0, []error{nil, flap, nil, nil, nil}, 5},
		{"3 passes spanning 2s", 3, 2 * time.Second, []error{nil, flap, nil, nil, nil}, 5},
		{"flap inside the window restarts the count", 3, 2 * time.Second, []error{nil, nil, flap, nil, nil, nil}, 6},
		{"1 pass spanning 2s needs a second pass", 1, 2 * time.Second, []error{flap, nil, nil}, 3},
		{"default of one pass returns on the first", 1, 0, []error{flap, nil}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &script{t: t, results: tt.results}
			clock := newFakeClock()
			var attempts []readiness.Attempt
			var passTimes []time.Time
			err := readiness.Wait(testCtx(t), s,
				readiness.WithStability(tt.passes, tt.window),
				readiness.WithClock(clock),
				constant(10*time.Millisecond),
				readiness.WithObserver(func(a readiness.Attempt) {
					attempts = append(attempts, a)
					if a.Err == nil {
						passTimes = append(passTimes, clock.Now())
					} else {
						passTimes = nil
					}
				}))
			require.NoError(t, err)
			require.Equal(t, tt.wantCalls, s.Calls(), "Wait must return exactly on the attempt that completes stability")
			last := attempts[len(attempts)-1]
			assert.True(t, last.Stable)
			assert.Equal(t, tt.wantCalls, last.N)
			assert.GreaterOrEqual(t, last.Passes, tt.passes)
			for _, a := range attempts[:len(attempts)-1] {
				assert.False(t, a.Stable, "attempt %d", a.N)
			}
			// The final run of passes spans the window (in fake time).
			span := passTimes[len(passTimes)-1].Sub(passTimes[0])
			assert.GreaterOrEqual(t, span, tt.window)
		})
	}
}

func TestWaitReturnsReasonOnTimeout(t *testing.T) {
	var calls atomic.Int32
	check := readiness.Named("component-x", readiness.CheckFunc(func(context.Context) error {
		n := calls.Add(1)
		return errf("listener not bound yet (probe %d)", n)
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	// After the third attempt, hold Wait until the deadline has passed.
	hold := readiness.WithObserver(func(a readiness.Attempt) {
		if a.N == 3 {
			<-ctx.Done()
		}
	})

	err := readiness.Wait(ctx, check, constant(time.Millisecond), hold)

	require.Error(t, err)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var nr *readiness.NotReadyError
	require.ErrorAs(t, err, &nr)
	assert.Equal(t, int32(3), calls.Load())
	assert.Equal(t, 3, nr.Attempts)
	assert.Equal(t, "component-x", nr.Check)
	const lastReason = "component-x: listener not bound yet (probe 3)"
	require.NotNil(t, nr.Last)
	assert.Equal(t, lastReason, nr.Last.Error())
	assert.Contains(t, err.Error(), "waiting for component-x: context deadline exceeded after 3 attempts")
	assert.Contains(t, err.Error(), "last not-ready reason: "+lastReason)
	assert.Zero(t, nr.Passes)
}

// pokeCheck is ready once ready is set, and signals a change whenever the
// test sends on poke.
type pokeCheck struct {
	ready    atomic.Bool
	poke     chan struct{}
	watching chan struct{}
	watchers atomic.Int32 // running Watch calls
}

func newPokeCheck() *pokeCheck {
	return &pokeCheck{poke: make(chan struct{}), watching: make(chan struct{})}
}

func (p *pokeCheck) Check(context.Context) error {
	if p.ready.Load() {
		return nil
	}
	return errors.New("not yet")
}

func (p *pokeCheck) Watch(ctx context.Context, changed func()) error {
	p.watchers.Add(1)
	defer p.watchers.Add(-1)
	close(p.watching)
	for {
		select {
		case <-ctx.Done():
			// A watcher slow to stop (a real one closes a connection):
			// Wait must still not return before it has.
			time.Sleep(20 * time.Millisecond)
			return ctx.Err()
		case <-p.poke:
			changed()
		}
	}
}

func TestWaitWakesEarlyOnNotify(t *testing.T) {
	ctx := testCtx(t)
	check := newPokeCheck()
	opt, attempts := observer()
	done := goWait(ctx, check, opt, constant(10*time.Minute))

	first := awaitAttempt(t, attempts, done, "the first attempt fails", func(a readiness.Attempt) bool { return a.Err != nil })
	assert.Equal(t, 10*time.Minute, first.Next)
	<-check.watching
	stillWaiting(t, done, "before the change")

	check.ready.Store(true)
	check.poke <- struct{}{}

	require.NoError(t, awaitDone(t, done, "after the change signal"))
	// Wait returned through the signal, not the ten-minute delay, and
	// only after its watcher had returned.
	second := awaitAttempt(t, attempts, nil, "the second attempt passes", func(a readiness.Attempt) bool { return true })
	assert.Equal(t, 2, second.N)
	assert.True(t, second.Stable)
	assert.Zero(t, check.watchers.Load(), "Watch still running after Wait returned")
}

func TestWaitCancelDuringBackoffReturnsPromptly(t *testing.T) {
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	check := readiness.Named("slowpoke", readiness.CheckFunc(func(context.Context) error { return errors.New("not bound") }))
	opt, attempts := observer()
	done := goWait(ctx, check, opt, constant(10*time.Minute))
	awaitAttempt(t, attempts, done, "the first attempt fails", func(a readiness.Attempt) bool { return a.Err != nil })
	cancel()
	err := awaitDone(t, done, "after cancel")
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "slowpoke: not bound")
}

func TestWaitAttemptTimeoutBoundsAHungProbe(t *testing.T) {
	hung := readiness.Named("hung", readiness.CheckFunc(func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}))
	err := readiness.Wait(testCtx(t), hung,
		readiness.WithAttemptTimeout(20*time.Millisecond),
		readiness.WithBackoff(func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 1) }))
	require.ErrorIs(t, err, readiness.ErrGaveUp)
	var nr *readiness.NotReadyError
	require.ErrorAs(t, err, &nr)
	assert.Equal(t, 2, nr.Attempts)
	assert.Contains(t, nr.Last.Error(), "hung: context deadline exceeded (attempt cut off by its 20ms timeout)")
	assert.ErrorIs(t, err, context.DeadlineExceeded, "the last reason is the attempt's deadline")
}

func TestWaitStopsAtOnceOnPermanentError(t *testing.T) {
	boom := errors.New("manifest is missing")
	s := &script{t: t, results: []error{readiness.Permanent(boom)}}
	err := readiness.Wait(testCtx(t), s)
	require.ErrorIs(t, err, boom)
	var nr *readiness.NotReadyError
	require.ErrorAs(t, err, &nr)
	assert.Equal(t, 1, nr.Attempts)
	assert.Equal(t, 1, s.Calls())
}

func TestWaitPassesResetTheBackoff(t *testing.T) {
	// A policy that counts how often it is reset.
	var resets atomic.Int32
	policy := func() backoff.BackOff { return &countingBackoff{resets: &resets} }
	flap := errors.New("flap")
	s := &script{t: t, results: []error{flap, nil, flap, nil, nil}}
	err := readiness.Wait(testCtx(t), s, readiness.WithBackoff(policy), readiness.WithStability(2, 0))
	require.NoError(t, err)
	require.Equal(t, 5, s.Calls())
	// Reset once at the start and at each of the two runs of passes.
	assert.Equal(t, int32(3), resets.Load())
}

type countingBackoff struct{ resets *atomic.Int32 }

func (c *countingBackoff) Reset()                     { c.resets.Add(1) }
func (c *countingBackoff) NextBackOff() time.Duration { return time.Millisecond }

func TestGateIsReusableAndConcurrent(t *testing.T) {
	var calls atomic.Int32
	check := readiness.CheckFunc(func(context.Context) error {
		if calls.Add(1) <= 8 {
			return errors.New("not yet")
		}
		return nil
	})
	gate := readiness.Gate(check, readiness.WithStability(2, 0), readiness.WithClock(newFakeClock()))
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = gate(testCtx(t)) })
	}
	wg.Wait()
	for i, err := range errs {
		assert.NoError(t, err, "gate call %d", i)
	}
	// A gate whose options are bad fails every call with ErrInvalid.
	bad := readiness.Gate(check, readiness.WithStability(0, 0))
	require.ErrorIs(t, bad(testCtx(t)), readiness.ErrInvalid)
}

func TestAllListsEveryFailure(t *testing.T) {
	ok := readiness.Named("ok", readiness.CheckFunc(func(context.Context) error { return nil }))
	etcd := readiness.Named("etcd", readiness.CheckFunc(func(context.Context) error { return errors.New("no leader") }))
	api := readiness.Named("kube-apiserver", readiness.CheckFunc(func(context.Context) error { return errors.New("[-]etcd") }))
	ctx := testCtx(t)

	err := readiness.All(ok, etcd, api).Check(ctx)
	require.EqualError(t, err, "2 of 3 checks not ready: etcd: no leader; kube-apiserver: [-]etcd")
	require.NoError(t, readiness.All(ok, ok).Check(ctx))
	require.NoError(t, readiness.All().Check(ctx))

	require.NoError(t, readiness.Any(etcd, ok).Check(ctx))
	require.EqualError(t, readiness.Any(etcd, api).Check(ctx), "none of 2 checks ready: etcd: no leader; kube-apiserver: [-]etcd")

	// Permanence: All is permanent if any part is, Any only if all are.
	perm := readiness.CheckFunc(func(context.Context) error { return readiness.Permanent(errors.New("bad manifest")) })
	var pe *backoff.PermanentError
	err = readiness.All(etcd, perm).Check(ctx)
	require.ErrorAs(t, err, &pe)
	assert.EqualError(t, err, "2 of 2 checks not ready: etcd: no leader; bad manifest")
	assert.False(t, errors.As(readiness.Any(etcd, perm).Check(ctx), &pe), "Any with a transient failure must stay retryable")
	require.ErrorAs(t, readiness.Any(perm, perm).Check(ctx), &pe)

	// Under Wait, a permanent part stops All at once with every reason.
	err = readiness.Wait(ctx, readiness.All(etcd, perm))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "etcd: no leader; bad manifest")
}

func TestCompositesForwardWatch(t *testing.T) {
	inner := newPokeCheck()
	check := readiness.Named("wrapped", readiness.All(readiness.CheckFunc(func(context.Context) error { return nil }), inner))
	ctx := testCtx(t)
	opt, attempts := observer()
	done := goWait(ctx, check, opt, constant(10*time.Minute))
	awaitAttempt(t, attempts, done, "the first attempt fails", func(a readiness.Attempt) bool {
		return a.Err != nil && strings.Contains(a.Err.Error(), "wrapped: 1 of 2 checks not ready: not yet")
	})
	<-inner.watching
	inner.ready.Store(true)
	inner.poke <- struct{}{}
	require.NoError(t, awaitDone(t, done, "after the change signal"))
	assert.Zero(t, inner.watchers.Load())
}

// Named, All and Any are Watchers exactly when a check they wrap is, so
// that Wait starts no watch (and logs no "watch ended early") for plain
// checks.
func TestCompositesWatchOnlyWhenSomethingToWatch(t *testing.T) {
	plain := readiness.CheckFunc(func(context.Context) error { return nil })
	watched := newPokeCheck()
	tests := []struct {
		name    string
		check   readiness.Check
		watcher bool
	}{
		{"Named of a plain check", readiness.Named("x", plain), false},
		{"Named of nil", readiness.Named("x", nil), false},
		{"Named of a Watcher", readiness.Named("x", watched), true},
		{"All of plain checks", readiness.All(plain, plain), false},
		{"All of nothing", readiness.All(), false},
		{"All with a Watcher", readiness.All(plain, watched), true},
		{"Any of plain checks", readiness.Any(plain, nil), false},
		{"Any with a Watcher", readiness.Any(watched, plain), true},
		{"nested plain checks", readiness.Named("x", readiness.All(readiness.Any(plain), plain)), false},
		{"nested Watcher", readiness.Named("x", readiness.All(plain, readiness.Any(plain, readiness.Named("w", watched)))), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ok := tt.check.(readiness.Watcher)
			assert.Equal(t, tt.watcher, ok)
		})
	}
}

func TestBadInputIsAnErrorNotAPanic(t *testing.T) {
	ok := readiness.CheckFunc(func(context.Context) error { return nil })
	var nilCtx context.Context
	tests := []struct {
		name string
		err  func() error
	}{
		{"nil context", func() error { return readiness.Wait(nilCtx, ok) }},
		{"nil check", func() error { return readiness.Wait(testCtx(t), nil) }},
		{"nil CheckFunc", func() error { return readiness.Wait(testCtx(t), readiness.CheckFunc(nil)) }},
		{"nil option", func() error { return readiness.Wait(testCtx(t), ok, nil) }},
		{"zero passes", func() error { return readiness.Wait(testCtx(t), ok, readiness.WithStability(0, 0)) }},
		{"negative window", func() error { return readiness.Wait(testCtx(t), ok, readiness.WithStability(1, -time.Second)) }},
		{"zero attempt timeout", func() error { return readiness.Wait(testCtx(t), ok, readiness.WithAttemptTimeout(0)) }},
		{"nil backoff", func() error { return readiness.Wait(testCtx(t), ok, readiness.WithBackoff(nil)) }},
		{"backoff factory returns nil", func() error {
			return readiness.Wait(testCtx(t), ok, readiness.WithBackoff(func() backoff.BackOff { return nil }))
		}},
		{"nil observer", func() error { return readiness.Wait(testCtx(t), ok, readiness.WithObserver(nil)) }},
		{"nil clock", func() error { return readiness.Wait(testCtx(t), ok, readiness.WithClock(nil)) }},
		{"Named empty", func() error { return readiness.Wait(testCtx(t), readiness.Named("", ok)) }},
		{"Named nil", func() error { return readiness.Wait(testCtx(t), readiness.Named("x", nil)) }},
		{"All with nil", func() error { return readiness.Wait(testCtx(t), readiness.All(ok, nil)) }},
		{"Any empty", func() error { return readiness.Wait(testCtx(t), readiness.Any()) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.err()
			require.ErrorIs(t, err, readiness.ErrInvalid)
			var pe *backoff.PermanentError
			assert.False(t, errors.As(err, &pe), "the permanent mark must not leak out of Wait: %v", err)
		})
	}
}

// policyOf returns a policy that always answers d.
func policyOf(d time.Duration) readiness.Option {
	return readiness.WithBackoff(func() backoff.BackOff { return &fixedPolicy{d} })
}

type fixedPolicy struct{ d time.Duration }

func (p *fixedPolicy) Reset()                     {}
func (p *fixedPolicy) NextBackOff() time.Duration { return p.d }

// recordingClock is a fakeClock that records the delays it was asked for.
type recordingClock struct {
	*fakeClock
	mu     sync.Mutex
	delays []time.Duration
}

func (c *recordingClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.delays = append(c.delays, d)
	c.mu.Unlock()
	return c.fakeClock.After(d)
}

// A policy whose delays are zero, negative or tiny (not backoff.Stop)
// does not make Wait spin: every delay is raised to MinDelay, between
// failures and between passes alike. Counted, not timed: the attempts are
// at most one more than the elapsed time holds MinDelays (timers never
// fire early), and the delays Wait asks its clock for are never below
// MinDelay.
func TestWaitNonPositiveDelayDoesNotSpin(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second, time.Nanosecond} {
		t.Run(d.String(), func(t *testing.T) {
			var calls atomic.Int64
			check := readiness.CheckFunc(func(context.Context) error {
				calls.Add(1)
				return errors.New("not yet")
			})
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			opt, attempts := observer()
			err := readiness.Wait(ctx, check, policyOf(d), opt)
			var nr *readiness.NotReadyError
			require.ErrorAs(t, err, &nr)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			limit := int(nr.Elapsed/readiness.MinDelay) + 1
			assert.LessOrEqual(t, nr.Attempts, limit, "%d attempts in %s", nr.Attempts, nr.Elapsed)
			assert.Equal(t, int64(nr.Attempts), calls.Load())
			close(attempts)
			for a := range attempts {
				if a.Next != 0 {
					assert.Equal(t, readiness.MinDelay, a.Next, "attempt %d", a.N)
				}
			}

			// With a clock that records: failures, and passes that
			// are not yet stable, ask for MinDelay at least.
			clock := &recordingClock{fakeClock: newFakeClock()}
			s := &script{t: t, results: []error{errf("a"), errf("b"), nil, nil, nil}}
			require.NoError(t, readiness.Wait(testCtx(t), s, policyOf(d), readiness.WithClock(clock), readiness.WithStability(3, 0)))
			clock.mu.Lock()
			defer clock.mu.Unlock()
			require.Len(t, clock.delays, 4)
			for i, got := range clock.delays {
				assert.Equal(t, readiness.MinDelay, got, "delay %d", i+1)
			}
		})
	}
}

// Any knows its answer at the first pass: it does not wait for a
// sub-check that hangs (until its context ends), and that sub-check's
// context is cancelled before Any returns. The context here ends only at
// the test's guard.
func TestAnyReturnsAtFirstPass(t *testing.T) {
	ctx := testCtx(t)
	cancelled := make(chan struct{})
	hung := readiness.CheckFunc(func(ctx context.Context) error {
		<-ctx.Done()
		close(cancelled)
		return ctx.Err()
	})
	ok := readiness.CheckFunc(func(context.Context) error { return nil })
	require.NoError(t, readiness.Any(hung, ok).Check(ctx))
	select {
	case <-cancelled:
	default:
		t.Fatal("Any returned before the hung sub-check had returned")
	}
}
