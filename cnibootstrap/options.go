package cnibootstrap

import (
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
)

// Option configures a Waiter; see New.
type Option func(*options) error

type options struct {
	progress   func([]Unmet)
	newBackoff func() backoff.BackOff
	logger     *logr.Logger
}

// WithProgress has Wait call f with the requirements not met yet each
// time that set or a reason in it changes, and a last time with an empty
// set just before Wait returns nil. f runs on Wait's goroutine, one call at
// a time and never after Wait returns; it must not block for long, since
// Wait reacts to nothing while f runs. The slice is f's to keep. A nil f is
// an error.
func WithProgress(f func(unmet []Unmet)) Option {
	return func(o *options) error {
		if f == nil {
			return invalid("WithProgress(nil)")
		}
		o.progress = f
		return nil
	}
}

// WithBackoff sets the policy of the backoff floor: the retries after a
// failed list or watch, and the re-runs of SubjectAccessReviews and
// discovery lookups when no event prompts them. newBackOff is called once
// per watch and per probe, from their goroutines; each policy is reset
// after a watch delivers events or a change triggers a re-run, so re-runs
// after a change come quickly. A policy that returns backoff.Stop ends
// that floor (events still count). The default is exponential from 250 ms,
// doubling, with 20% jitter, capped at 30 s, never giving up. A nil
// newBackOff is an error.
func WithBackoff(newBackOff func() backoff.BackOff) Option {
	return func(o *options) error {
		if newBackOff == nil {
			return invalid("WithBackoff(nil)")
		}
		o.newBackoff = newBackOff
		return nil
	}
}

// WithLogger sets the logger; by default Wait uses
// logr.FromContextOrDiscard(ctx). Failed requests are logged at V(1).
func WithLogger(l logr.Logger) Option {
	return func(o *options) error {
		o.logger = &l
		return nil
	}
}

func defaultBackoff() backoff.BackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(250*time.Millisecond),
		backoff.WithRandomizationFactor(0.2),
		backoff.WithMultiplier(2),
		backoff.WithMaxInterval(30*time.Second),
		backoff.WithMaxElapsedTime(0),
	)
}
