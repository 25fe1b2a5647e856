package readiness

import (
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
)

// Defaults used by Wait when no option overrides them.
const (
	// DefaultAttemptTimeout bounds each attempt of a check.
	DefaultAttemptTimeout = 5 * time.Second
	// DefaultInitialDelay and DefaultMaxDelay shape the default backoff:
	// exponential with jitter from DefaultInitialDelay, doubling, capped
	// at DefaultMaxDelay, never giving up (Wait's ctx decides that).
	DefaultInitialDelay = 50 * time.Millisecond
	DefaultMaxDelay     = 2 * time.Second
	// DefaultWatchMaxDelay replaces DefaultMaxDelay as the cap of the
	// default backoff when everything the check looks at is watched (the
	// check is a Watcher and, for Named, All and Any, so is every check
	// they wrap): the watch wakes Wait on every change, so the backoff is
	// only a rarely needed floor, and a long one keeps the requests of a
	// long wait constant.
	DefaultWatchMaxDelay = 30 * time.Second
	// MinDelay is the shortest delay Wait sleeps between attempts: a
	// shorter one from the backoff policy (zero and negative ones
	// included, backoff.Stop excepted) or from the stability window is
	// raised to MinDelay, so that no policy can make Wait spin. A change
	// signal from a Watcher still wakes Wait at once.
	MinDelay = 10 * time.Millisecond
)

// Option configures Wait and Gate. Options are applied in order; a bad
// option makes Wait fail at once with an ErrInvalid error.
type Option func(*options) error

type options struct {
	newBackoff func() backoff.BackOff
	passes     int
	window     time.Duration
	timeout    time.Duration
	observer   func(Attempt)
	logger     *logr.Logger
	clock      Clock
}

func newOptions(opts []Option) (*options, error) {
	o := &options{
		passes:  1,
		timeout: DefaultAttemptTimeout,
	}
	if err := applyOptions("Wait", o, opts); err != nil {
		return nil, err
	}
	return o, nil
}

// applyOptions applies opts to target in order and stops at the first one
// that is nil or fails, returning a permanent ErrInvalid error that names
// who (the function the options were given to) and the option. It is
// shared by Wait's Option, EtcdOption and PodOption.
func applyOptions[T any, O ~func(T) error](who string, target T, opts []O) error {
	for i, opt := range opts {
		if opt == nil {
			return invalid("%s: option %d is nil", who, i+1)
		}
		if err := opt(target); err != nil {
			return Permanent(fmt.Errorf("readiness: %w: %s: %w", ErrInvalid, who, err))
		}
	}
	return nil
}

// defaultBackoff returns the default policy, capped at maxDelay.
func defaultBackoff(maxDelay time.Duration) func() backoff.BackOff {
	return func() backoff.BackOff {
		return backoff.NewExponentialBackOff(
			backoff.WithInitialInterval(DefaultInitialDelay),
			backoff.WithMultiplier(2),
			backoff.WithRandomizationFactor(0.3),
			backoff.WithMaxInterval(maxDelay),
			backoff.WithMaxElapsedTime(0),
		)
	}
}

// WithBackoff replaces the default backoff (exponential with jitter, 50 ms
// growing to a 2 s cap, or to DefaultWatchMaxDelay when everything the
// check looks at is watched) with a policy from newPolicy, which Wait
// calls once per call, so one Gate may be used concurrently. The policy's
// delays separate failing attempts and it is Reset whenever the check
// passes; a delay shorter than MinDelay (zero and negative ones included)
// is raised to MinDelay; if it returns backoff.Stop, Wait returns a
// *NotReadyError wrapping ErrGaveUp. A Watcher check's change signal cuts
// a delay short, so with such checks the policy is only the floor. A nil
// newPolicy is an error; so is a policy function that returns nil (a
// typed nil too), which Wait reports before any attempt. A panic in
// newPolicy or the policy's methods ends Wait with an error wrapping
// ErrPanic.
//
//	readiness.WithBackoff(func() backoff.BackOff { return backoff.NewConstantBackOff(5 * time.Second) })
func WithBackoff(newPolicy func() backoff.BackOff) Option {
	return func(o *options) error {
		if newPolicy == nil {
			return errors.New("WithBackoff(nil)")
		}
		o.newBackoff = newPolicy
		return nil
	}
}

// WithStability makes Wait return only after passes consecutive passing
// attempts spanning at least window (from the first of them to the last):
// "3 passes spanning at least 2 s". Any failure starts the count again.
// This rides out a component that is up for a moment and then replaced.
//
// While passing but not yet stable, Wait spaces the remaining passes
// evenly over what is left of window; once the window is covered (or with
// a zero window) it uses the backoff policy's delays, restarted at the
// first pass; never less than MinDelay. A Watcher's change signal re-checks at
// once. The default is one pass and no window. passes must be at least 1
// and window not negative.
func WithStability(passes int, window time.Duration) Option {
	return func(o *options) error {
		if passes < 1 {
			return fmt.Errorf("WithStability(%d, %s): passes must be at least 1", passes, window)
		}
		if window < 0 {
			return fmt.Errorf("WithStability(%d, %s): window must not be negative", passes, window)
		}
		o.passes, o.window = passes, window
		return nil
	}
}

// WithAttemptTimeout bounds each attempt (default DefaultAttemptTimeout):
// the check's context ends after d, so a hung probe does not hold Wait up
// for longer (provided the check honours its context, as the built-ins
// do), and the attempt's failure ends "(attempt cut off by its d
// timeout)". d must be positive.
func WithAttemptTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("WithAttemptTimeout(%s): must be positive", d)
		}
		o.timeout = d
		return nil
	}
}

// Attempt describes one attempt of a check, for WithObserver.
type Attempt struct {
	// Check names the check.
	Check string
	// N counts attempts from 1.
	N int
	// Err is the attempt's failure, nil if it passed.
	Err error
	// Passes is the number of consecutive passes including this one.
	Passes int
	// Stable is true on the attempt that completes the stability
	// requirement; Wait returns nil right after.
	Stable bool
	// Took is how long the attempt ran.
	Took time.Duration
	// Next is the delay before the next attempt (a change signal may cut
	// it short); zero when Wait is about to return.
	Next time.Duration
}

// WithObserver has Wait call f after every attempt (progress displays,
// metrics). f is called synchronously from Wait's goroutine, so calls are
// never concurrent and Wait waits for f: it must not block for long. A
// nil f is an error. If f panics, Wait returns a *NotReadyError whose Err
// wraps ErrPanic and names the observer.
func WithObserver(f func(Attempt)) Option {
	return func(o *options) error {
		if f == nil {
			return errors.New("WithObserver(nil)")
		}
		o.observer = f
		return nil
	}
}

// WithLogger sets the logger Wait logs to: failing attempts at V(1), the
// outcome at V(0). Without it, Wait uses logr.FromContextOrDiscard(ctx).
// A logger whose sink is a typed nil is an error; a zero logr.Logger
// discards. A panic in the logger's sink ends Wait with an error
// wrapping ErrPanic.
func WithLogger(l logr.Logger) Option {
	return func(o *options) error {
		if sink := l.GetSink(); sink != nil && isNil(sink) {
			return fmt.Errorf("WithLogger: the logger's sink is a nil %T", sink)
		}
		o.logger = &l
		return nil
	}
}

// Clock is the time source for Wait's delays and stability window. The
// real clock is the default; tests inject a fake one with WithClock to
// step through delays without sleeping. Implementations must be safe for
// concurrent use.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

// WithClock replaces the real clock for Wait's delays and stability
// window. Attempt timeouts and the contexts given to checks still use
// real time. A nil clock (a typed nil too) is an error. If the clock
// panics, or After returns a nil channel, Wait returns a *NotReadyError
// whose Err names the clock.
func WithClock(c Clock) Option {
	return func(o *options) error {
		if isNil(c) {
			if c == nil {
				return errors.New("WithClock(nil)")
			}
			return fmt.Errorf("WithClock: a nil %T", c)
		}
		o.clock = c
		return nil
	}
}
