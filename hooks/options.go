package hooks

import (
	"fmt"
	"time"

	"github.com/go-logr/logr"
)

// Option configures a Runner; see New.
type Option func(*options) error

type options struct {
	concurrency int // 0: unlimited
	observer    func(Event)
	logger      *logr.Logger
	now         func() time.Time
	grace       time.Duration // 0: defaultGrace
}

// defaultGrace is how long the Runner waits, by default, for a hook's Run
// or Gate to return once its context has ended; see WithGracePeriod.
const defaultGrace = 10 * time.Second

func (o *options) gracePeriod() time.Duration {
	if o.grace > 0 {
		return o.grace
	}
	return defaultGrace
}

// WithConcurrency limits how many hooks run an attempt at the same time.
// Hooks waiting on their gate or between retries do not count, nor do
// abandoned calls (see WithGracePeriod): their slot is freed when the
// Runner stops waiting for them. Zero (the
// default) means no limit; a negative n is an error.
func WithConcurrency(n int) Option {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("hooks: %w: WithConcurrency(%d): the limit must not be negative", ErrInvalidInput, n)
		}
		o.concurrency = n
		return nil
	}
}

// WithObserver has the Runner call f with every Event of the run. Each call
// is made on a goroutine the Runner starts for it, one at a time (never
// concurrently), in causal order: a hook's own events in order, a hook's
// EventSucceeded before any event of a hook it released, and a hook's
// EventFailed before the skips and cancellations it caused. f must not
// block for long: the hook that emitted the event, and any other hook with
// an event to emit, waits for it. f may call the Runner's Check, Report
// and Plan methods. A panic in f, or runtime.Goexit, is recovered: it is
// logged, listed in Report.CallbackErrs, and the run goes on (f is called
// again for the next event). A nil f is an error wrapping ErrInvalidInput.
func WithObserver(f func(Event)) Option {
	return func(o *options) error {
		if f == nil {
			return fmt.Errorf("hooks: %w: WithObserver(nil): the observer func is nil", ErrInvalidInput)
		}
		o.observer = f
		return nil
	}
}

// WithLogger sets the logger the Runner logs hook progress to, and that
// each attempt's context carries (logr.FromContext) with the hook's name.
// Without it, the logger of Run's context is used, if any. The zero
// Logger discards. Every call of the logger's sink, the Runner's and the
// hooks' through their context's logger, is made on a goroutine of its
// own, so that a panic in the sink, or runtime.Goexit, can be recovered
// and listed in Report.CallbackErrs while the run goes on; call-site
// information a sink reads from the stack (logr's call depth) therefore
// does not name the caller. A Logger whose sink is a typed nil (a nil
// pointer in the LogSink interface) is an error wrapping ErrInvalidInput.
func WithLogger(l logr.Logger) Option {
	return func(o *options) error {
		if sink := l.GetSink(); sink != nil && isNil(sink) {
			return fmt.Errorf("hooks: %w: WithLogger: the logger's sink is a nil %T", ErrInvalidInput, sink)
		}
		o.logger = &l
		return nil
	}
}

// WithClock sets the clock used for event timestamps and report durations
// (not for timeouts or retry delays, which are real time). Tests use it
// for reproducible reports. The Runner calls now one call at a time
// (never concurrently), each on a goroutine of its own, holding no lock
// but the one that serializes the calls: now may call the Runner's Add,
// Check and Plan, but must not call Run or Report, which may wait for that
// lock. A panic in now, or runtime.Goexit, is recovered, the real clock
// stands in for that reading, and the panic is listed in
// Report.CallbackErrs. A nil now is an error wrapping ErrInvalidInput.
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return fmt.Errorf("hooks: %w: WithClock(nil): the clock func is nil", ErrInvalidInput)
		}
		o.now = now
		return nil
	}
}

// WithGracePeriod sets how long the Runner keeps waiting for a hook's Run
// (or Gate) to return once the context it was given has ended — because
// the attempt's Timeout passed, a hook aborted the run, or Run's context
// ended. The default is 10 s. A call still running after that is
// abandoned: the Runner stops waiting, the hook fails (or is Canceled, if
// the run had stopped) with an error wrapping ErrAbandoned, and is not
// retried, since a second attempt would run beside the first. The
// abandoned call's goroutine is left running the hook's function — the
// only goroutine of a run that may outlive Run — and ends when that
// function returns. A hook that honours its context is never abandoned:
// it returns well within the grace period. d must be positive; zero or a
// negative d is an error wrapping ErrInvalidInput.
func WithGracePeriod(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("hooks: %w: WithGracePeriod(%v): the grace period must be positive", ErrInvalidInput, d)
		}
		o.grace = d
		return nil
	}
}
