package apiserverdisco

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// MinRetryDelay is the shortest wait between two attempts of any retry
// loop in this package. A WithBackoff policy's delay below it — zero, or
// negative other than backoff.Stop — is raised to it, so a policy that
// returns 0 cannot make a loop spin.
const MinRetryDelay = 10 * time.Millisecond

// stopDelay is the wait used when a WithBackoff policy returns
// backoff.Stop: the loops in this package never give up on their own.
const stopDelay = 30 * time.Second

func defaultBackoff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 250 * time.Millisecond
	b.Multiplier = 2
	b.RandomizationFactor = 0.5
	b.MaxInterval = 30 * time.Second
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

// retrier is one retry sequence of the caller's backoff policy, made safe:
// a factory or policy that panics or returns a nil policy is reported and
// replaced by the default policy for the rest of the sequence, and delays
// are clamped by clampDelay. It is used from one goroutine.
type retrier struct {
	b      backoff.BackOff
	report func(error) // reports a *PanicError or a nil policy
}

// newRetrier calls the factory for a fresh policy.
func newRetrier(factory func() backoff.BackOff, report func(error)) *retrier {
	r := &retrier{report: report}
	err := protect("the WithBackoff factory", func() error {
		r.b = factory()
		return nil
	})
	if err == nil && isNil(r.b) {
		err = newPanicError("the WithBackoff factory", errNilPolicy)
	}
	if err != nil {
		r.fallBack(err)
	}
	return r
}

func (r *retrier) fallBack(err error) {
	r.report(err)
	r.b = defaultBackoff()
}

// next returns the wait before the next attempt: at least MinRetryDelay,
// stopDelay for backoff.Stop.
func (r *retrier) next() time.Duration {
	var d time.Duration
	if err := protect("NextBackOff of the WithBackoff policy", func() error {
		d = r.b.NextBackOff()
		return nil
	}); err != nil {
		r.fallBack(err)
		d = r.b.NextBackOff()
	}
	return clampDelay(d)
}

// reset starts the policy over after a success.
func (r *retrier) reset() {
	if err := protect("Reset of the WithBackoff policy", func() error {
		r.b.Reset()
		return nil
	}); err != nil {
		r.fallBack(err)
	}
}

// clampDelay applies MinRetryDelay and stopDelay to a policy's delay.
func clampDelay(d time.Duration) time.Duration {
	switch {
	case d == backoff.Stop:
		return stopDelay
	case d < MinRetryDelay:
		return MinRetryDelay
	}
	return d
}

// sleepCtx waits for d or until ctx ends, reporting which.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
