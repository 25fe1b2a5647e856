package hooks

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
)

// MinRetryDelay is the wait between two attempts of a hook when its Retry
// policy's NextBackOff returns zero or a negative delay other than
// backoff.Stop (backoff.ZeroBackOff does), so that such a policy cannot
// make a failing hook spin. Positive delays are waited as given.
// EventAttemptFailed reports the delay actually waited.
const MinRetryDelay = 10 * time.Millisecond

// work runs hook i to its outcome: gate, attempt, and retries, until it
// succeeds, fails for good, or the run stops. It runs on its own goroutine
// in r.group and records every step through the Runner's state.
func (r *Runner) work(ctx context.Context, i int) {
	h := &r.hooks[i] // not modified once Run has started
	attempt := 0
	settled, holding := false, false
	defer func() {
		// The user callbacks called here run on goroutines of their own
		// (call, isolate); this is the last line, for the user code that
		// runs on this goroutine: the Is, As and Unwrap methods of an
		// error a hook's Run returned, which errors.Is and errors.As call
		// (the errors made here wrap it with wrapf, calling no Error
		// method). A panic there, or runtime.Goexit, which unwinds through
		// here without a value, fails the hook. No lock is held here.
		v := recover()
		if holding {
			r.sem.Release(1)
		}
		if settled {
			if v != nil {
				err := r.cb.note("runner after hook "+strconv.Quote(h.Name)+" settled", v)
				r.log.Error(err, "panic recovered", "hook", h.Name, "stack", string(debug.Stack()))
			}
			return
		}
		if v == nil {
			v = goexit{}
		}
		err := &panicError{what: "a callback of the hook", value: v}
		r.log.Error(err, "panic recovered", "hook", h.Name, "stack", string(debug.Stack()))
		r.settle(ctx, i, attempt, err)
	}()
	finish := func(err error) {
		settled = true
		r.settle(ctx, i, attempt, err)
	}

	// notStarted finishes the hook, Canceled, without calling Run for
	// attempt: the run stopped before it could start.
	notStarted := func(why error) {
		err := wrapf("attempt %d not started: %w", attempt, why)
		attempt-- // Run was not called
		finish(err)
	}
	releaseSlot := func() {
		if holding {
			r.sem.Release(1)
			holding = false
		}
	}

	var policy backoff.BackOff
	for attempt = 1; ; attempt++ {
		if err := stopped(ctx); err != nil {
			notStarted(err)
			return
		}
		if h.Gate != nil {
			t0 := r.enter(i, actGate, attempt, EventGateWaiting)
			err := r.call(ctx, h.Name, "gate", h.Gate).err
			r.spent(i, actGate, t0)
			if err != nil {
				attempt-- // Run was not called
				finish(wrapf("gate: %w", err))
				return
			}
		}
		if r.sem != nil {
			r.enter(i, actSlot, attempt, 0)
			if err := r.sem.Acquire(ctx, 1); err != nil {
				if why := stopped(ctx); why != nil {
					err = why
				}
				notStarted(wrapf("waiting for a concurrency slot: %w", err))
				return
			}
			holding = true
		}
		if policy == nil {
			// Made (and Reset) as the first attempt starts, not at
			// release: an elapsed-time limit does not count the wait
			// for the first gate or slot.
			var err error
			if policy, err = r.retryPolicy(h); err != nil {
				releaseSlot()
				attempt-- // Run was not called
				finish(err)
				return
			}
		}
		// The gate may have opened, or the slot come free, as the run
		// stopped: begin checks again, and starts nothing once it has.
		t0, err := r.begin(ctx, i, attempt)
		if err != nil {
			releaseSlot()
			notStarted(err)
			return
		}
		out := r.attempt(ctx, h)
		r.spent(i, actRun, t0)
		releaseSlot()
		switch {
		case out.err == nil:
			finish(nil)
			return
		case out.err == errGoexit:
			finish(errGoexit)
			return
		}
		err = wrapf("attempt %d: %w", attempt, out.err)
		if out.abandoned {
			// Its goroutine still runs Run: no second attempt beside it.
			finish(err)
			return
		}
		var permanent *backoff.PermanentError
		delay := backoff.Stop
		if ctx.Err() == nil && !errors.As(err, &permanent) {
			delay, err = r.nextBackOff(h, policy, err)
		}
		if delay == backoff.Stop {
			finish(err)
			return
		}
		if delay <= 0 {
			delay = MinRetryDelay
		}
		r.retrying(i, attempt, err, delay)
		if !sleep(ctx, delay) {
			finish(wrapf("waiting to retry after %w: %w", err, stopped(ctx)))
			return
		}
	}
}

// attempt calls h.Run once, bounded by h.Timeout. An attempt that ends
// after its timeout passed — with an error, or with nil from a Run that
// ignored its context — fails with an error that wraps ErrTimeout and
// says the timeout.
func (r *Runner) attempt(ctx context.Context, h *Hook) outcome {
	if r.log.GetSink() != nil {
		ctx = logr.NewContext(ctx, r.log.WithValues("hook", h.Name))
	}
	if h.Timeout <= 0 {
		return r.call(ctx, h.Name, "Run", h.Run)
	}
	actx, cancel := context.WithTimeoutCause(ctx, h.Timeout,
		fmt.Errorf("hook %q: %w after %v", h.Name, ErrTimeout, h.Timeout))
	defer cancel()
	out := r.call(actx, h.Name, "Run", h.Run)
	if ctx.Err() != nil || out.abandoned || errors.Is(out.err, ErrTimeout) {
		// The run stopped (not a timeout), or the error says so already.
		return out
	}
	switch {
	case out.err == nil && out.late:
		// Run returned nil, but only after its deadline: the work may be
		// done, yet the attempt took longer than Timeout allows.
		out.err = fmt.Errorf("%w after %v: Run returned nil after its deadline (it ignored its context)", ErrTimeout, h.Timeout)
	case out.err != nil && out.err != errGoexit && actx.Err() != nil:
		out.err = wrapf("%w after %v: %w", ErrTimeout, h.Timeout, out.err)
	}
	return out
}

// outcome is the result of one call of a hook's Run or Gate.
type outcome struct {
	err       error
	late      bool // it returned after its context had ended
	abandoned bool // it had not returned a grace period after its context ended
}

// call calls f (a hook's Gate or Run) on a goroutine of its own and waits
// for it to return. A panic in f becomes a permanent error wrapping
// ErrPanic, and runtime.Goexit errGoexit, so that a bug in one hook cannot
// take the process down. If f has not returned a grace period after ctx
// ended, call stops waiting and reports it abandoned, with an error
// wrapping ErrAbandoned and why ctx ended; f's goroutine is left to end
// when f returns.
func (r *Runner) call(ctx context.Context, hook, what string, f func(context.Context) error) outcome {
	done := make(chan outcome, 1) // never blocks the goroutine, even if abandoned
	go func() {
		returned := false
		defer func() {
			if returned {
				return
			}
			if v := recover(); v != nil {
				err := &panicError{what: what, value: v}
				r.log.Error(err, "hook panicked", "hook", hook, "in", what, "stack", string(debug.Stack()))
				done <- outcome{err: Permanent(err)}
				return
			}
			done <- outcome{err: errGoexit}
		}()
		err := f(ctx)
		returned = true
		done <- outcome{err: err, late: ctx.Err() != nil}
	}()
	select {
	case out := <-done:
		return out
	case <-ctx.Done():
	}
	grace := r.opts.gracePeriod()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case out := <-done:
		return out
	case <-t.C:
	}
	err := wrapf("%s %w: still running %v after its context ended: %w", what, ErrAbandoned, grace, stopped(ctx))
	r.log.Error(err, "hook abandoned; its goroutine is left running", "hook", hook, "in", what)
	return outcome{err: err, abandoned: true}
}

// retryPolicy returns h's fresh, reset backoff policy, or one that never
// retries if h has no Retry factory or it returns nil. A typed-nil policy
// is an error wrapping ErrInvalidHook; a panic (or runtime.Goexit) in the
// factory or in Reset, which run on a goroutine of their own, one wrapping
// ErrPanic.
func (r *Runner) retryPolicy(h *Hook) (backoff.BackOff, error) {
	if h.Retry == nil {
		return &backoff.StopBackOff{}, nil
	}
	var b backoff.BackOff
	what := "Retry"
	if f := isolate(func() {
		if b = h.Retry(); !isNil(b) {
			what = "the Retry policy's Reset"
			b.Reset()
		}
	}); f != nil {
		err := &panicError{what: what, value: f.value}
		r.log.Error(err, "hook's retry policy panicked", "hook", h.Name, "stack", string(f.stack))
		return nil, err
	}
	switch {
	case b == nil:
		return &backoff.StopBackOff{}, nil
	case isNil(b):
		return nil, fmt.Errorf("%w: hook %q: Retry returned a nil %T", ErrInvalidHook, h.Name, b)
	}
	return b, nil
}

// nextBackOff asks policy for the delay before the next attempt, on a
// goroutine of its own. A panic (or runtime.Goexit) in NextBackOff ends
// the retries: it returns backoff.Stop and attemptErr joined with the
// panic.
func (r *Runner) nextBackOff(h *Hook, policy backoff.BackOff, attemptErr error) (time.Duration, error) {
	if _, never := policy.(*backoff.StopBackOff); never {
		return backoff.Stop, attemptErr // the backoff package's, not user code
	}
	var d time.Duration
	if f := isolate(func() { d = policy.NextBackOff() }); f != nil {
		perr := &panicError{what: "the Retry policy's NextBackOff", value: f.value}
		r.log.Error(perr, "hook's retry policy panicked", "hook", h.Name, "stack", string(f.stack))
		return backoff.Stop, wrapf("%w; no retry: %w", attemptErr, perr)
	}
	return d, attemptErr
}

// sleep waits for d, reporting false if ctx ended first or by the time d
// passed (select picks at random when both are ready).
func sleep(ctx context.Context, d time.Duration) bool {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return ctx.Err() == nil
}

// stopped returns nil while the run goes on and, once it has stopped, why:
// ctx.Err(), or ctx.Err() together with context.Cause(ctx) when the cause
// is another error (a hook aborted the run, or Run's context was cancelled
// with a cause). It calls no method of the cause.
func stopped(ctx context.Context) error {
	err := ctx.Err()
	if err == nil {
		return nil
	}
	// err is one of the context package's errors, of a comparable type: ==
	// cannot panic.
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return &stopError{cause: cause, err: err}
	}
	return err
}
