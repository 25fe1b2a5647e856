package hooks

import (
	"fmt"
	"strings"
)

// The errors the Runner makes on its own goroutines, under Runner.mu or
// not. They wrap errors that may be the caller's (a hook's error, the
// cause of Run's context) without calling any of their methods: their
// messages are made when asked for, by whoever asks (the caller, the
// logger's sink, Check), never under the Runner's lock nor on a goroutine
// whose exit would fail a hook.

// wrapf is fmt.Errorf made lazily: format's %w verbs are formatted as %v
// when Error is called, and Unwrap returns every error among args, so
// every error argument must be formatted with %w.
func wrapf(format string, args ...any) error { return &wrapped{format: format, args: args} }

type wrapped struct {
	format string
	args   []any
}

func (e *wrapped) Error() string {
	return fmt.Sprintf(strings.ReplaceAll(e.format, "%w", "%v"), e.args...)
}

func (e *wrapped) Unwrap() []error {
	var errs []error
	for _, a := range e.args {
		if err, ok := a.(error); ok {
			errs = append(errs, err)
		}
	}
	return errs
}

// abortError is the cause a hook with the Abort policy cancels the run
// with: `run aborted: hook "a" failed: ...`. It wraps ErrAborted and the
// hook's *HookError.
type abortError struct{ he *HookError }

func (e *abortError) Error() string   { return ErrAborted.Error() + ": " + e.he.Error() }
func (e *abortError) Unwrap() []error { return []error{ErrAborted, e.he} }

// stopError says why the run stopped when its context's cause says more
// than its error: `shutting down (context canceled)`. It wraps both.
type stopError struct{ cause, err error }

func (e *stopError) Error() string   { return e.cause.Error() + " (" + e.err.Error() + ")" }
func (e *stopError) Unwrap() []error { return []error{e.cause, e.err} }

// notFinishedError is the error of a hook the run stopped before it was
// released: what it was doing, and why the run stopped.
type notFinishedError struct {
	st  status
	why error
}

func (e *notFinishedError) Error() string { return e.st.String() + ": " + e.why.Error() }
func (e *notFinishedError) Unwrap() error { return e.why }
