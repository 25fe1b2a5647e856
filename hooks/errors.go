package hooks

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Callers branch on them with errors.Is; the errors that
// wrap them name the hook (or hooks) concerned.
var (
	// ErrInvalidInput is wrapped by every error about bad input to this
	// package: a nil or invalid Option given to New, a nil or typed-nil
	// context given to Run, a method called on a nil *Runner, a hook
	// Add refuses (ErrInvalidHook wraps it too), and a Retry factory that
	// returns a typed-nil policy. The errors name the argument or hook.
	ErrInvalidInput = errors.New("invalid input")

	// ErrInvalidHook: Add was given a hook with an empty name, a nil Run,
	// a negative Timeout, an unknown OnFailure policy or an empty name in
	// After; or a hook's Retry factory returned a typed-nil policy (the
	// hook then fails without an attempt). It wraps ErrInvalidInput.
	ErrInvalidHook error = &subError{"invalid hook", ErrInvalidInput}

	// ErrDuplicateHook: Add was given a name that is already taken. The
	// error names the earlier hook by its position.
	ErrDuplicateHook = errors.New("duplicate hook name")

	// ErrUnknownDependency: Run or Plan found After names that no hook
	// has. The error lists each of them with the hook that named it.
	ErrUnknownDependency = errors.New("unknown dependency")

	// ErrCycle: Run or Plan found a dependency cycle. The error shows
	// one cycle as a path in run order, "a → b → c → a".
	ErrCycle = errors.New("dependency cycle")

	// ErrStarted: Add or Run was called after Run had started. A Runner
	// runs once.
	ErrStarted = errors.New("runner already started")

	// ErrAborted is the cause given to every in-flight hook's context when
	// a hook with the Abort policy fails; the cause also wraps that hook's
	// *HookError.
	ErrAborted = errors.New("run aborted")

	// ErrTimeout: an attempt ran longer than its hook's Timeout. The
	// attempt's context is cancelled with a cause that names the hook and
	// the timeout, and the attempt's error wraps ErrTimeout.
	ErrTimeout = errors.New("timed out")

	// ErrNotDone is wrapped by Check's error while any hook has not
	// succeeded.
	ErrNotDone = errors.New("not done")

	// ErrPanic is wrapped by the error of a user callback that panicked
	// (or called runtime.Goexit, which is handled as a panic): a hook's
	// Run, Gate or Retry factory, its policy's Reset or NextBackOff, or
	// the Is, As or Unwrap method of an error its Run returned — these
	// fail the hook, without a retry — and the observer, clock or logger,
	// whose panics are recovered, logged where possible, and listed in
	// Report.CallbackErrs while the run goes on. When the panic value is
	// an error, errors.Is and errors.As see it too.
	ErrPanic = errors.New("panicked")

	// ErrAbandoned: a hook's Run or Gate had not returned a grace period
	// (WithGracePeriod) after its context ended, so the Runner stopped
	// waiting for it. The hook fails (or is Canceled, if the run had
	// stopped) without a retry; the error also wraps why the context
	// ended (ErrTimeout, ErrAborted, or the run's context error).
	ErrAbandoned = errors.New("abandoned")
)

// subError is a sentinel that is also its parent sentinel for errors.Is,
// with a message of its own.
type subError struct {
	msg    string
	parent error
}

func (e *subError) Error() string { return e.msg }
func (e *subError) Unwrap() error { return e.parent }

// HookError is the final error of one hook that did not succeed: it failed
// (its last attempt's error or its gate's error), was skipped (because a
// dependency did not succeed) or was canceled (the run stopped before it
// finished). Err is never nil.
type HookError struct {
	Hook  string
	State State // Failed, Skipped or Canceled
	Err   error
}

// Error says the hook, what became of it and why:
// `hook "cni" skipped: dependency "crds" failed`.
func (e *HookError) Error() string {
	return fmt.Sprintf("hook %q %s: %v", e.Hook, e.State, e.Err)
}

// Unwrap returns Err.
func (e *HookError) Unwrap() error { return e.Err }

// RunError is Run's error when the run did not succeed as a whole: at least
// one hook failed, was skipped or was canceled. Report holds the final state
// of every hook; errors.As(err, &runErr) gives it to the caller.
//
// Unwrap returns Cause (when set) and every unsuccessful hook's *HookError,
// so errors.Is(err, context.Canceled) or errors.Is(err, ErrTimeout) see
// through a RunError.
type RunError struct {
	// Cause is why the run stopped early: an error wrapping ErrAborted
	// and the aborting hook's *HookError, or the cause of Run's context.
	// It is nil when the run went to its end (failures with Continue).
	Cause  error
	Report Report
}

// Error counts the hooks that did not succeed, says why the run stopped
// early (if it did), and lists each such hook with its error, in the
// order the hooks were added. It calls the Error methods of Cause (unless
// a hook aborted the run) and of the hooks' errors, and no other method of
// theirs.
func (e *RunError) Error() string {
	var b strings.Builder
	bad := e.unsuccessful()
	fmt.Fprintf(&b, "hooks: %d of %d hooks did not succeed", len(bad), len(e.Report.Hooks))
	if e.Cause != nil {
		// A type check, not errors.Is: Cause may be the caller's error,
		// whose Is or Unwrap method may panic.
		if ae, ok := e.Cause.(*abortError); ok {
			fmt.Fprintf(&b, " (run aborted by hook %q)", ae.he.Hook)
		} else {
			fmt.Fprintf(&b, " (run stopped: %v)", e.Cause)
		}
	}
	for i, he := range bad {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(he.Error())
	}
	return b.String()
}

// Unwrap returns Cause (when set) followed by every unsuccessful hook's
// *HookError, in the order the hooks were added.
func (e *RunError) Unwrap() []error {
	var errs []error
	if e.Cause != nil {
		errs = append(errs, e.Cause)
	}
	for _, he := range e.unsuccessful() {
		errs = append(errs, he)
	}
	return errs
}

func (e *RunError) unsuccessful() []*HookError {
	var bad []*HookError
	for _, h := range e.Report.Hooks {
		if h.Err != nil {
			bad = append(bad, h.Err)
		}
	}
	return bad
}
