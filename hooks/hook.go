package hooks

import (
	"context"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Hook is one unit of startup work: a name, the hooks it runs after, an
// optional gate it waits for before every attempt, and the work itself.
//
// A Hook is a plain value; Add copies it, so changing it afterwards has no
// effect on a Runner.
type Hook struct {
	// Name identifies the hook in After lists, errors, events and reports.
	// It must be non-empty and unique within a Runner.
	Name string

	// After names the hooks that must succeed before this one starts.
	// Order and repetitions do not matter.
	After []string

	// Gate, if set, blocks until the hook may run, returning nil; it is
	// called before the first attempt and again before every retry, so a
	// condition that regressed since the last attempt (the apiserver is
	// being restarted) makes the hook wait instead of fail. A readiness
	// wait that returns when a condition holds, and holds steadily, fits
	// here. The Gate must return promptly, with an error, when ctx ends;
	// one still running a grace period later is abandoned (see
	// WithGracePeriod). A Gate error while the run goes on fails the hook
	// without a retry: the gate does its own waiting. Time spent in the
	// Gate does not count against Timeout. A panic in the Gate is
	// recovered and fails the hook with an error wrapping ErrPanic.
	Gate func(ctx context.Context) error

	// Run does the work. It must honour ctx: the context ends when the
	// attempt's Timeout passes, when another hook aborts the run, or when
	// Run's context ends, and context.Cause(ctx) then says which. Run may
	// return Permanent(err) (or backoff.Permanent(err)) to stop retries.
	// A panic in Run (or runtime.Goexit) is recovered and fails the hook
	// without a retry, with an error wrapping ErrPanic. Run is called on
	// a goroutine of its own, one attempt at a time.
	Run func(ctx context.Context) error

	// Timeout bounds each attempt of Run separately. Zero means no bound.
	//
	// When it passes, the attempt's context ends with a cause wrapping
	// ErrTimeout, and the attempt counts as timed out whatever Run
	// returns: an error, or nil from a Run that ignored its context and
	// finished late. A timed-out attempt fails with an error wrapping
	// ErrTimeout and is retried by the Retry policy like any failure —
	// Run should therefore be idempotent. The Runner waits for a late Run
	// for a grace period (WithGracePeriod) and then abandons it: the hook
	// fails with an error wrapping ErrAbandoned and ErrTimeout, without a
	// retry, since the abandoned call may still be running.
	Timeout time.Duration

	// Retry returns a fresh backoff policy for this hook. The Runner calls
	// it at most once per run, as the first attempt starts (after the Gate
	// first opened and a concurrency slot came free), and Resets the
	// policy then. The policy's delays separate the attempts and its
	// backoff.Stop ends them. Nil (or a factory that returns a nil
	// interface) means a single attempt. A delay of zero or less, other
	// than backoff.Stop, is waited as MinRetryDelay. A factory that
	// returns a typed nil (a nil *backoff.ExponentialBackOff, say) fails
	// the hook without an attempt, with an error wrapping ErrInvalidHook
	// that names it; a panic in the factory, in Reset or in NextBackOff
	// fails the hook, without a further attempt, with an error wrapping
	// ErrPanic.
	//
	// A policy's elapsed-time limit (backoff.ExponentialBackOff's
	// MaxElapsedTime, 15 minutes by default) therefore does not count the
	// wait before the first attempt, but counts everything after it: the
	// attempts, the delays, and the Gate waits before retries. A Gate that
	// waits out a slow or restarting apiserver between attempts spends
	// that budget, and the next attempt to fail is then the last. For a
	// hook with a Gate, bound retries by count with backoff.WithMaxRetries
	// and set MaxElapsedTime to 0:
	//
	//	Retry: func() backoff.BackOff {
	//		b := backoff.NewExponentialBackOff()
	//		b.MaxElapsedTime = 0 // the Gate does the waiting
	//		return backoff.WithMaxRetries(b, 5)
	//	},
	Retry func() backoff.BackOff

	// OnFailure says what a final failure of this hook does to the run.
	// The zero value is Abort.
	OnFailure FailurePolicy
}

// FailurePolicy says what a hook's final failure does to the rest of the run.
type FailurePolicy int

const (
	// Abort cancels the contexts of all in-flight hooks with a cause
	// wrapping ErrAborted and the failed hook's *HookError, and starts
	// nothing more. It is the default.
	Abort FailurePolicy = iota

	// Continue skips the failed hook's dependants (transitively) and lets
	// every independent branch go on. Run still returns an error.
	Continue
)

// Permanent wraps err so that the hook returning it is not retried,
// whatever its Retry policy. It is backoff.Permanent, here so that hooks
// need not import the backoff package. Permanent(nil) is nil.
func Permanent(err error) error { return backoff.Permanent(err) }

// validate checks what Add can check about one hook on its own; pos is its
// 1-based position in the Runner.
func (h *Hook) validate(pos int) error {
	switch {
	case h.Name == "":
		return fmt.Errorf("%w: hook #%d has an empty name", ErrInvalidHook, pos)
	case h.Run == nil:
		return fmt.Errorf("%w: hook %q has a nil Run", ErrInvalidHook, h.Name)
	case h.Timeout < 0:
		return fmt.Errorf("%w: hook %q has a negative Timeout %v", ErrInvalidHook, h.Name, h.Timeout)
	case h.OnFailure != Abort && h.OnFailure != Continue:
		return fmt.Errorf("%w: hook %q has an unknown OnFailure policy %d", ErrInvalidHook, h.Name, h.OnFailure)
	}
	for _, a := range h.After {
		if a == "" {
			return fmt.Errorf("%w: hook %q has an empty name in After", ErrInvalidHook, h.Name)
		}
	}
	return nil
}

// clone returns a copy of h that shares no memory with the caller, with
// duplicate After entries removed.
func (h Hook) clone() Hook {
	after := make([]string, 0, len(h.After))
	seen := make(map[string]bool, len(h.After))
	for _, a := range h.After {
		if !seen[a] {
			seen[a] = true
			after = append(after, a)
		}
	}
	h.After = after
	return h
}
