package hooks

import (
	"errors"
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
}

// WithConcurrency limits how many hooks run an attempt at the same time.
// Hooks waiting on their gate or between retries do not count. Zero (the
// default) means no limit; a negative n is an error.
func WithConcurrency(n int) Option {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("hooks: WithConcurrency(%d): the limit must not be negative", n)
		}
		o.concurrency = n
		return nil
	}
}

// WithObserver has the Runner call f with every Event of the run. Calls are
// made from the Runner's goroutines, one at a time (never concurrently),
// in causal order: a hook's own events in order, a hook's EventSucceeded
// before any event of a hook it released, and a hook's EventFailed before
// the skips and cancellations it caused. f must not block for long: the
// hook that emitted the event, and any other hook with an event to emit,
// waits for it. f may call the Runner's Check and Report methods. A nil f
// is an error.
func WithObserver(f func(Event)) Option {
	return func(o *options) error {
		if f == nil {
			return errors.New("hooks: WithObserver(nil)")
		}
		o.observer = f
		return nil
	}
}

// WithLogger sets the logger the Runner logs hook progress to, and that
// each attempt's context carries (logr.FromContext) with the hook's name.
// Without it, the logger of Run's context is used, if any.
func WithLogger(l logr.Logger) Option {
	return func(o *options) error {
		o.logger = &l
		return nil
	}
}

// WithClock sets the clock used for event timestamps and report durations
// (not for timeouts or retry delays, which are real time). Tests use it
// for reproducible reports. A nil now is an error.
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return errors.New("hooks: WithClock(nil)")
		}
		o.now = now
		return nil
	}
}
