package hooks

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
)

// work runs hook i to its outcome: gate, attempt, and retries, until it
// succeeds, fails for good, or the run stops. It runs on its own goroutine
// in r.group and records every step through the Runner's state.
func (r *Runner) work(ctx context.Context, i int) {
	h := &r.hooks[i] // not modified once Run has started
	attempt := 0
	settled, holding := false, false
	defer func() {
		// A hook that calls runtime.Goexit (t.FailNow, say) unwinds
		// through here without settling: free its slot and record it,
		// rather than leave the hook running forever in the report.
		if holding {
			r.sem.Release(1)
		}
		if !settled {
			r.settle(ctx, i, attempt, errors.New("the hook's goroutine exited without returning (runtime.Goexit)"))
		}
	}()
	finish := func(err error) {
		settled = true
		r.settle(ctx, i, attempt, err)
	}

	// notStarted finishes the hook, Canceled, without calling Run for
	// attempt: the run stopped before it could start.
	notStarted := func(why error) {
		err := fmt.Errorf("attempt %d not started: %w", attempt, why)
		attempt-- // Run was not called
		finish(err)
	}

	var policy backoff.BackOff
	for attempt = 1; ; attempt++ {
		if err := stopped(ctx); err != nil {
			notStarted(err)
			return
		}
		if h.Gate != nil {
			t0 := r.enter(i, actGate, attempt, EventGateWaiting)
			err := r.call(ctx, h.Name, "gate", h.Gate)
			r.spent(i, actGate, t0)
			if err != nil {
				attempt-- // Run was not called
				finish(fmt.Errorf("gate: %w", err))
				return
			}
		}
		if r.sem != nil {
			r.enter(i, actSlot, attempt, 0)
			if err := r.sem.Acquire(ctx, 1); err != nil {
				if why := stopped(ctx); why != nil {
					err = why
				}
				notStarted(fmt.Errorf("waiting for a concurrency slot: %w", err))
				return
			}
			holding = true
		}
		// The gate may have opened, or the slot come free, as the run
		// stopped: begin checks again, and starts nothing once it has.
		t0, err := r.begin(ctx, i, attempt)
		if err != nil {
			if holding {
				r.sem.Release(1)
				holding = false
			}
			notStarted(err)
			return
		}
		if policy == nil {
			// Made (and Reset) as the first attempt starts, not at
			// release: an elapsed-time limit does not count the wait
			// for the first gate or slot.
			policy = retryPolicy(h)
		}
		err = r.attempt(ctx, h)
		r.spent(i, actRun, t0)
		if holding {
			r.sem.Release(1)
			holding = false
		}
		if err == nil {
			finish(nil)
			return
		}
		err = fmt.Errorf("attempt %d: %w", attempt, err)
		var permanent *backoff.PermanentError
		delay := backoff.Stop
		if ctx.Err() == nil && !errors.As(err, &permanent) {
			delay = policy.NextBackOff()
		}
		if delay == backoff.Stop {
			finish(err)
			return
		}
		r.retrying(i, attempt, err, delay)
		if !sleep(ctx, delay) {
			finish(fmt.Errorf("waiting to retry after %w: %w", err, stopped(ctx)))
			return
		}
	}
}

// attempt calls h.Run once, bounded by h.Timeout. An error after the
// timeout passed wraps ErrTimeout and says the timeout.
func (r *Runner) attempt(ctx context.Context, h *Hook) error {
	if r.log.GetSink() != nil {
		ctx = logr.NewContext(ctx, r.log.WithValues("hook", h.Name))
	}
	if h.Timeout <= 0 {
		return r.call(ctx, h.Name, "Run", h.Run)
	}
	actx, cancel := context.WithTimeoutCause(ctx, h.Timeout,
		fmt.Errorf("hook %q: %w after %v", h.Name, ErrTimeout, h.Timeout))
	defer cancel()
	err := r.call(actx, h.Name, "Run", h.Run)
	if err != nil && ctx.Err() == nil && actx.Err() != nil && !errors.Is(err, ErrTimeout) {
		err = fmt.Errorf("%w after %v: %w", ErrTimeout, h.Timeout, err)
	}
	return err
}

// call calls f (a hook's Gate or Run), turning a panic into a permanent
// error so that a bug in one hook cannot take the process down.
func (r *Runner) call(ctx context.Context, hook, what string, f func(context.Context) error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			r.log.Error(fmt.Errorf("panic: %v", v), "hook panicked", "hook", hook, "in", what, "stack", string(debug.Stack()))
			err = Permanent(fmt.Errorf("%s panicked: %v", what, v))
		}
	}()
	return f(ctx)
}

// retryPolicy returns h's fresh, reset backoff policy, or one that never
// retries.
func retryPolicy(h *Hook) backoff.BackOff {
	if h.Retry != nil {
		if b := h.Retry(); b != nil {
			b.Reset()
			return b
		}
	}
	return &backoff.StopBackOff{}
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
// ctx.Err() together with context.Cause(ctx) when the cause says more (a
// hook aborted the run, or Run's context was cancelled with a cause).
func stopped(ctx context.Context) error {
	err := ctx.Err()
	if err == nil {
		return nil
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, err) {
		return fmt.Errorf("%w (%w)", cause, err)
	}
	return err
}
