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
// failed list or watch (a 410 Gone included: only the first relist after
// a watch whose resourceVersion expired is immediate, as in informers; a
// second expiry in a row without an event in between, or a 410 answered
// to a list, waits for the floor), the re-opening of a watch the server
// closed less than a second after opening it, the re-runs of
// SubjectAccessReviews and discovery lookups when no event prompts them,
// and the credential re-validation (see Waiter.Wait). newBackOff is called once by New, to check it, and
// then once per watch, per probe and for the credential check of each
// Wait, from their goroutines; each policy but the credential check's is
// reset after a watch delivers events or a change triggers a re-run, so
// re-runs after a change come quickly. A delay below MinDelay (zero or
// negative included) counts as MinDelay, so no policy can make the waiter
// spin. A policy that returns backoff.Stop does not end the retries,
// since giving up would leave a requirement unmet that a fresh Check finds
// met: the waiter goes on at the last delay the policy answered, capped at
// 30 s (30 s if it never answered one). The default is
// exponential from 250 ms, doubling, with 20% jitter, capped at 30 s. A
// nil newBackOff is an error, and so is (from New) a factory that returns
// a nil policy or panics; a panic of a policy ends Wait (see PanicError).
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
// logr.FromContextOrDiscard(ctx). Failed requests are logged at V(1). The
// zero Logger discards; a Logger whose sink is a typed nil (a nil pointer
// in the LogSink interface) is an error. The sink is called under
// recover: a panic in it ends Wait with an error wrapping a *PanicError.
// Wait does not call the sink's Init again (the logger it came from did):
// it derives a sink with WithCallDepth(1) when the sink implements
// logr.CallDepthLogSink, so the caller reported is this package's line,
// and leaves the caller's sink unchanged. The same holds for a logger
// from ctx.
func WithLogger(l logr.Logger) Option {
	return func(o *options) error {
		if s := l.GetSink(); s != nil && isNil(s) {
			return invalid("WithLogger: the logger's sink is a nil %T", s)
		}
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
