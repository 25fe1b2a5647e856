package readiness

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
)

// Wait blocks until check passes and stays passing (see WithStability),
// then returns nil.
//
// Between failing attempts it sleeps according to the backoff policy
// (WithBackoff; by default exponential with jitter from 50 ms, capped at
// 2 s, or at DefaultWatchMaxDelay when everything check looks at is
// watched), never less than MinDelay. If check implements Watcher, Wait
// watches it for as long as it waits and re-checks at once on every
// change signal, so it reacts to events and the backoff is only the
// floor. Every attempt is bounded by WithAttemptTimeout.
//
// When ctx ends first, Wait returns promptly with a *NotReadyError whose
// Err is ctx.Err() (so errors.Is(err, context.DeadlineExceeded) works) and
// which carries the check's name, the last not-ready reason and the number
// of attempts. It returns a *NotReadyError too when the check returns a
// permanent error (Err is that error) or the backoff policy gives up (Err
// is ErrGaveUp), and when user code it runs panics — the check, its
// Watch, the backoff policy, the observer, the clock, the logger — (Err
// wraps ErrPanic and names what panicked; the panic goes no further). A
// nil ctx or check (a typed nil too), or a bad option, gives an
// ErrInvalid error naming the argument before any attempt.
//
// A check that returns a typed nil as its error (a non-nil error
// interface holding a nil pointer: "var e *MyErr; return e") fails with a
// permanent ErrInvalid error saying so; an error whose Error method
// panics is described, not called unguarded.
//
// Wait runs the check from one goroutine at a time. When it returns, it
// cancels the Watcher's context and waits for Watch to return, for at
// most WatchGracePeriod: a Watch that honours its context returns well
// within it, and then nothing Wait started outlives it. A Watch still
// running after the grace period is abandoned: Wait returns anyway (nil
// if the check was ready; otherwise a *NotReadyError with Abandoned set,
// whose message says so), logs that it did, and leaves the Watch's
// goroutine running until Watch returns. Wait may be called concurrently,
// with the same check and options, from many goroutines.
func Wait(ctx context.Context, check Check, opts ...Option) error {
	if isNil(ctx) {
		return unmark(nilArg("Wait", "context", ctx))
	}
	if isNil(check) {
		return unmark(nilArg("Wait", "check", check))
	}
	o, err := newOptions(opts)
	if err != nil {
		return unmark(err)
	}
	if o.newBackoff == nil {
		maxDelay := DefaultMaxDelay
		if watchesAll(check) {
			maxDelay = DefaultWatchMaxDelay
		}
		o.newBackoff = defaultBackoff(maxDelay)
	}
	w := &waiter{o: o, check: check}
	log := logr.FromContextOrDiscard(ctx)
	if o.logger != nil {
		log = *o.logger
	}
	log = safeLogger(log, func(v any) { w.fault.set(Permanent(&panicError{what: "the logger", value: v})) })
	w.name = w.nameOf(check)
	w.log = log.WithValues("check", w.name)
	// Checks and watchers log through the same logger, and share the
	// state of this wait's watches.
	return w.run(withSession(logr.NewContext(ctx, w.log)))
}

// Gate turns a readiness wait into the plain gate function other packages
// take (hooks.Hook.Gate, for one): each call of the returned function is
// Wait(ctx, check, opts...). The options are copied; the policy from
// WithBackoff is made afresh per call, so the gate may be called again and
// concurrently. Gate itself does not block.
//
//	hook := hooks.Hook{Name: "crds", Gate: readiness.Gate(apiserverReady, readiness.WithStability(3, 2*time.Second)), Run: applyCRDs}
func Gate(check Check, opts ...Option) func(ctx context.Context) error {
	opts = append([]Option(nil), opts...)
	return func(ctx context.Context) error { return Wait(ctx, check, opts...) }
}

// unmark strips the permanent mark from an error Wait returns to its
// caller: the mark only means something inside the retry loop.
func unmark(err error) error {
	if inner, ok := isPermanent(err); ok {
		return inner
	}
	return err
}

// WatchGracePeriod is how long Wait waits for a Watcher's Watch to
// return after cancelling its context, before it abandons the Watch's
// goroutine and returns (see Wait).
const WatchGracePeriod = 500 * time.Millisecond

type waiter struct {
	o         *options
	check     Check
	name      string
	log       logr.Logger
	fault     fault  // the first panic of the Watcher or the logger
	stage     string // the user code Wait's goroutine is running, for a panic
	abandoned bool   // the Watch outlived its grace period

	start     time.Time
	attempts  int
	passes    int
	firstPass time.Time
	last      error
}

// nameOf is the check's name (see nameOf), with a panic of its Name
// method recorded as the wait's fault.
func (w *waiter) nameOf(c Check) (name string) {
	name = "check"
	if err := protect("the check's Name method", func() error { name = nameOf(c); return nil }); err != nil {
		w.fault.set(err)
	}
	return name
}

func (w *waiter) now() time.Time {
	if w.o.clock != nil {
		w.stage = "the clock's Now"
		return w.o.clock.Now()
	}
	return time.Now()
}

func (w *waiter) run(ctx context.Context) (err error) {
	// The single place where the panics of user code called from this
	// goroutine end: the check, the backoff policy, the observer, the
	// clock. The deferred watch cleanup below has run by then.
	defer func() {
		if v := recover(); v != nil {
			err = w.notReady(Permanent(&panicError{what: w.stage, value: v}))
		}
	}()
	w.start = w.now()
	w.stage = "the backoff policy function"
	policy := w.o.newBackoff()
	if isNil(policy) {
		return unmark(invalid("WithBackoff: the policy function returned nil%s", typeOfNil(policy)))
	}
	w.stage = "the backoff policy's Reset"
	policy.Reset()

	// The change signal: one pending wake-up at most, so a burst of
	// changes costs one re-check, and a change during an attempt is not
	// lost.
	wake := make(chan struct{}, 1)
	signal := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	if wt, ok := w.check.(Watcher); ok {
		wctx, cancel := context.WithCancel(ctx)
		watchDone := make(chan struct{})
		defer func() {
			cancel()
			if w.awaitWatch(watchDone) {
				return
			}
			// Say so in what Wait returns: err is set already, unless a
			// panic is on its way to the recovery above, whose
			// notReady sees w.abandoned.
			var nr *NotReadyError
			if errors.As(err, &nr) {
				nr.Abandoned = true
			}
		}()
		go func() {
			defer close(watchDone)
			guarded("the check's Watch", func() error { return wt.Watch(wctx, signal) }, func(err error) {
				if safeIs(err, ErrPanic) {
					w.fault.set(err)
					signal()
					return
				}
				if wctx.Err() == nil {
					w.log.V(1).Info("change watch ended early; polling only", "err", errString(err))
				}
			})
		}()
	}

	for {
		if err := ctx.Err(); err != nil {
			return w.notReady(err)
		}
		if err := w.fault.get(); err != nil {
			return w.notReady(err)
		}
		select { // this attempt sees every change signalled so far
		case <-wake:
		default:
		}
		w.attempts++
		began := w.now()
		err, permanent := w.attempt(ctx)
		took := w.now().Sub(began)
		if ferr := w.fault.get(); ferr != nil {
			return w.notReady(ferr)
		}

		if err != nil && ctx.Err() != nil {
			// Cut short by ctx: keep the earlier, more telling reason.
			if w.last == nil {
				w.last = err
			}
			w.observe(Attempt{Err: err, Took: took})
			return w.notReady(ctx.Err())
		}

		var next time.Duration
		if err == nil {
			if w.passes == 0 {
				w.firstPass = w.now()
				w.stage = "the backoff policy's Reset"
				policy.Reset()
			}
			w.passes++
			span := w.now().Sub(w.firstPass)
			if w.passes >= w.o.passes && span >= w.o.window {
				w.observe(Attempt{Stable: true, Took: took})
				if ferr := w.fault.get(); ferr != nil {
					return w.notReady(ferr)
				}
				w.log.Info("ready", "attempts", w.attempts, "elapsed", w.now().Sub(w.start))
				if ferr := w.fault.get(); ferr != nil {
					return w.notReady(ferr)
				}
				return nil
			}
			next = max(w.passDelay(span, policy), MinDelay)
			w.observe(Attempt{Took: took, Next: next})
			w.log.V(1).Info("passing, not yet stable", "attempt", w.attempts, "passes", w.passes, "next", next)
		} else {
			w.passes = 0
			if permanent {
				w.last = err
				w.observe(Attempt{Err: err, Took: took})
				return w.notReady(err)
			}
			w.last = err
			w.stage = "the backoff policy's NextBackOff"
			next = policy.NextBackOff()
			if next == backoff.Stop {
				w.observe(Attempt{Err: err, Took: took})
				return w.notReady(ErrGaveUp)
			}
			next = max(next, MinDelay)
			w.observe(Attempt{Err: err, Took: took, Next: next})
			w.log.V(1).Info("not ready", "attempt", w.attempts, "reason", errString(err), "next", next)
		}

		if err := w.sleep(ctx, next, wake); err != nil {
			return w.notReady(err)
		}
	}
}

// typeOfNil says which typed nil v is, for error messages.
func typeOfNil(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprintf(" (a nil %T)", v)
}

// attempt runs the check once under the attempt timeout and sorts its
// error while a panic is still blamed on the check (the Unwrap, Is and
// As methods of its error are its code too): it returns the error and
// whether it is permanent (then the error is the one the mark wraps). A
// typed-nil error is the check's permanent ErrInvalid failure.
func (w *waiter) attempt(ctx context.Context) (err error, permanent bool) {
	actx, cancel := context.WithTimeout(ctx, w.o.timeout)
	defer cancel()
	w.stage = "the check"
	err = checkError("the check", w.check.Check(actx))
	if err == nil {
		return nil, false
	}
	if inner, ok := isPermanent(err); ok {
		return inner, true
	}
	if ctx.Err() == nil && actx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w (attempt cut off by its %s timeout)", err, w.o.timeout), false
	}
	return err, false
}

// awaitWatch waits for the Watch goroutine to finish (done closed), for
// at most WatchGracePeriod, and reports whether it did. If it did not,
// the goroutine is abandoned: that is logged and recorded in w.abandoned.
func (w *waiter) awaitWatch(done <-chan struct{}) bool {
	t := time.NewTimer(WatchGracePeriod)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	}
	w.abandoned = true
	w.log.Info("the check's Watch did not return within the grace period after its context was cancelled; abandoned, its goroutine is left running", "grace", WatchGracePeriod)
	return false
}

// passDelay spaces the passes still needed over what is left of the
// stability window, or uses the policy's delay when the window is over.
func (w *waiter) passDelay(span time.Duration, policy backoff.BackOff) time.Duration {
	if remaining := w.o.window - span; remaining > 0 {
		left := max(w.o.passes-w.passes, 1)
		return remaining / time.Duration(left)
	}
	w.stage = "the backoff policy's NextBackOff"
	d := policy.NextBackOff()
	if d == backoff.Stop {
		return 0
	}
	return d
}

// sleep waits for d, a change signal or the end of ctx, and returns
// ctx.Err() in the last case.
func (w *waiter) sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) error {
	var fire <-chan time.Time
	if w.o.clock != nil {
		w.stage = "the clock's After"
		fire = w.o.clock.After(d)
		if fire == nil {
			return Permanent(fmt.Errorf("readiness: %w: the clock's After(%s) returned a nil channel", ErrInvalid, d))
		}
	} else {
		t := time.NewTimer(d)
		defer t.Stop()
		fire = t.C
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-wake:
	case <-fire:
	}
	return nil
}

func (w *waiter) observe(a Attempt) {
	if w.o.observer == nil {
		return
	}
	a.Check, a.N, a.Passes = w.name, w.attempts, w.passes
	w.stage = "the observer"
	w.o.observer(a)
}

// notReady returns the *NotReadyError for why. It is called from the
// recovery of a panic too, so it calls no user code that may panic again
// unrecovered: the clock and the logger are guarded.
func (w *waiter) notReady(why error) error {
	if inner, ok := isPermanent(why); ok {
		why = inner
	}
	end := time.Now()
	if w.o.clock != nil {
		_ = protect("the clock's Now", func() error { end = w.o.clock.Now(); return nil })
	}
	err := &NotReadyError{
		Check:     w.name,
		Attempts:  w.attempts,
		Passes:    w.passes,
		Elapsed:   end.Sub(w.start),
		Last:      w.last,
		Err:       why,
		Abandoned: w.abandoned,
	}
	w.log.Info("not ready", "attempts", w.attempts, "err", err.Error())
	return err
}
