package cnibootstrap

import (
	"context"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// MinDelay is the shortest pause the waiter makes between two retries of
// the same request, whatever its backoff policy says: a policy that
// returns zero or a negative delay (other than backoff.Stop) gets
// MinDelay, so a broken policy cannot make the waiter spin.
const MinDelay = 10 * time.Millisecond

// stoppedDelay is the pause after a policy said backoff.Stop without
// having answered any delay before: the waiter never stops retrying while
// Wait runs, since a requirement that a fresh Check finds met must not
// stay unmet for want of a retry.
const stoppedDelay = 30 * time.Second

// policy is one backoff policy from the WithBackoff factory, whose calls
// are protected (a panic is an error) and whose delays are floored.
type policy struct {
	b    backoff.BackOff
	last time.Duration // the last delay answered, 0 before any
}

// newPolicy calls the factory under recover; a nil policy is an error
// wrapping ErrInvalidInput.
func newPolicy(factory func() backoff.BackOff) (*policy, error) {
	var b backoff.BackOff
	if err := protect("the WithBackoff factory", func() error { b = factory(); return nil }); err != nil {
		return nil, err
	}
	if isNil(b) {
		return nil, fmt.Errorf("%w: the WithBackoff factory returned a nil policy", ErrInvalidInput)
	}
	return &policy{b: b}, nil
}

// next returns the policy's next delay, at least MinDelay. When the
// policy says Stop it returns the last delay it answered, or stoppedDelay
// if none, at most stoppedDelay.
func (p *policy) next() (time.Duration, error) {
	var d time.Duration
	if err := protect("NextBackOff of the WithBackoff policy", func() error { d = p.b.NextBackOff(); return nil }); err != nil {
		return 0, err
	}
	switch {
	case d == backoff.Stop && p.last == 0:
		return stoppedDelay, nil
	case d == backoff.Stop:
		return min(p.last, stoppedDelay), nil
	case d < MinDelay:
		d = MinDelay
	}
	p.last = d
	return d, nil
}

// reset resets the policy.
func (p *policy) reset() error {
	return protect("Reset of the WithBackoff policy", func() error { p.b.Reset(); return nil })
}

// pause waits for the policy's next delay. It returns ctx's error if ctx
// ends first, or the policy's error.
func pause(ctx context.Context, p *policy) error {
	d, err := p.next()
	if err != nil {
		return err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
