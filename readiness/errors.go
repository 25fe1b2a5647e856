package readiness

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Sentinel errors. Callers branch on them with errors.Is; the errors that
// wrap them name the check, object or endpoint concerned.
var (
	// ErrInvalid: a Check or Wait was given bad input — a nil client or
	// check, an empty name, a malformed URL or address, a bad option, a
	// check returning a typed nil as its error — or a client rejected its
	// own configuration before sending anything (an endpoint or host
	// whose port is out of range, a URL that does not parse), which no
	// retry can fix. The error is permanent: Wait returns it at once
	// instead of retrying.
	ErrInvalid = errors.New("invalid input")

	// ErrGaveUp: the backoff policy given to WithBackoff returned
	// backoff.Stop, so Wait stopped before its context ended.
	ErrGaveUp = errors.New("backoff policy gave up")

	// ErrUnreachable: the server did not answer at all (connection
	// refused, no route, TLS handshake failure, no HTTP response), as
	// opposed to answering "not ready".
	ErrUnreachable = errors.New("unreachable")

	// ErrAccessDenied: the server answered 401 or 403 (or etcd "permission
	// denied"): a credential or RBAC problem, not a readiness one. Waiting
	// does not fix it unless someone grants the documented rules.
	ErrAccessDenied = errors.New("access denied (a credential or RBAC problem)")

	// ErrPanic is wrapped by the error of user code that panicked (or
	// called runtime.Goexit in a goroutine of this package): a check, a
	// Watcher's Watch, a backoff policy or its factory, an observer, a
	// clock, a logger's sink, a client implementation, HTTPGet's accept
	// function. The panic is recovered and reported as the failure of the
	// check concerned: it is permanent, so Wait stops and returns a
	// *NotReadyError whose Err wraps ErrPanic and names what panicked.
	// When the panic value is an error, errors.Is and errors.As see it
	// too.
	ErrPanic = errors.New("panicked")
)

// Permanent marks err so that Wait stops at once and returns it instead of
// retrying. Checks return it for failures no retry can fix, such as bad
// input. It is backoff.Permanent, so a *backoff.PermanentError is what
// errors.As finds. Permanent(nil) is nil.
func Permanent(err error) error { return backoff.Permanent(err) }

// isPermanent reports whether err is (or wraps) a permanent error and, if
// so, returns the error it marks.
func isPermanent(err error) (error, bool) {
	var p *backoff.PermanentError
	if errors.As(err, &p) {
		return p.Err, true
	}
	return nil, false
}

// invalid returns a permanent error wrapping ErrInvalid.
func invalid(format string, args ...any) error {
	return Permanent(fmt.Errorf("readiness: %w: "+format, append([]any{ErrInvalid}, args...)...))
}

// NotReadyError is what Wait returns when it stops before the check became
// stably ready: its context ended (Err is ctx.Err()), the backoff policy
// gave up (Err is ErrGaveUp), or the check returned a permanent error (Err
// is that error). errors.Is sees through it to Err and to Last, so
// errors.Is(err, context.DeadlineExceeded) holds after a timeout.
type NotReadyError struct {
	// Check names what was being waited for.
	Check string
	// Attempts is how many times the check was run.
	Attempts int
	// Passes is the number of consecutive passing attempts at the end:
	// the check was passing but not yet stable when Passes > 0.
	Passes int
	// Elapsed is how long Wait waited.
	Elapsed time.Duration
	// Last is the check's last failure (the last not-ready reason), or
	// nil if it never failed.
	Last error
	// Err says why Wait stopped.
	Err error
	// Abandoned is set when the check's Watch had not returned
	// WatchGracePeriod after Wait cancelled its context: Wait returned
	// without it, and its goroutine is left running until Watch returns.
	Abandoned bool
}

func (e *NotReadyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "readiness: waiting for %s: %s after %d attempt", e.Check, errString(e.Err), e.Attempts)
	if e.Attempts != 1 {
		b.WriteByte('s')
	}
	fmt.Fprintf(&b, " in %s", e.Elapsed.Round(time.Millisecond))
	if e.Passes > 0 {
		fmt.Fprintf(&b, "; passing %d time(s) in a row but not yet stable", e.Passes)
	}
	if e.Last != nil && !sameError(e.Last, e.Err) {
		fmt.Fprintf(&b, "; last not-ready reason: %s", errString(e.Last))
	}
	if e.Abandoned {
		fmt.Fprintf(&b, "; the check's Watch did not return within %s of its context ending and was abandoned (its goroutine is left running)", WatchGracePeriod)
	}
	return b.String()
}

// Unwrap returns Err and Last, so errors.Is and errors.As reach both.
func (e *NotReadyError) Unwrap() []error {
	var errs []error
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	if e.Last != nil && !sameError(e.Last, e.Err) {
		errs = append(errs, e.Last)
	}
	return errs
}

// multiError is the error of All and Any: every failing sub-check's error,
// in order, on one line.
type multiError struct {
	prefix string
	errs   []error
}

func (m *multiError) Error() string {
	parts := make([]string, len(m.errs))
	for i, err := range m.errs {
		parts[i] = errString(err)
	}
	return m.prefix + ": " + strings.Join(parts, "; ")
}

func (m *multiError) Unwrap() []error { return m.errs }
