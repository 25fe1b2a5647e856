package hooks

import (
	"fmt"
	"time"
)

// EventKind says what happened to a hook.
type EventKind int

const (
	// EventGateWaiting: the hook is about to wait on its Gate, before
	// attempt Event.Attempt.
	EventGateWaiting EventKind = iota + 1
	// EventStarted: attempt Event.Attempt of Run has started.
	EventStarted
	// EventAttemptFailed: attempt Event.Attempt failed with Event.Err and
	// will be retried after Event.Delay (and the Gate, if any).
	EventAttemptFailed
	// EventSucceeded: the hook succeeded on attempt Event.Attempt.
	EventSucceeded
	// EventFailed: the hook failed for good; Event.Err is its *HookError.
	EventFailed
	// EventSkipped: the hook will not run because a dependency did not
	// succeed; Event.Err is its *HookError, naming the dependency.
	EventSkipped
	// EventCanceled: the run stopped before the hook finished; Event.Err
	// is its *HookError.
	EventCanceled
)

var eventKindNames = [...]string{
	EventGateWaiting:   "gate-waiting",
	EventStarted:       "started",
	EventAttemptFailed: "attempt-failed",
	EventSucceeded:     "succeeded",
	EventFailed:        "failed",
	EventSkipped:       "skipped",
	EventCanceled:      "canceled",
}

// String returns the kind in kebab case, "attempt-failed" for example.
func (k EventKind) String() string {
	if k > 0 && int(k) < len(eventKindNames) {
		return eventKindNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one step of one hook, passed to the observer set WithObserver.
type Event struct {
	Time    time.Time // from the Runner's clock
	Hook    string
	Kind    EventKind
	Attempt int           // the attempt concerned, from 1; 0 for EventSkipped and for hooks canceled before their first attempt
	Delay   time.Duration // EventAttemptFailed: the wait before the next attempt
	Err     error         // EventAttemptFailed: the attempt's error; EventFailed, EventSkipped, EventCanceled: the *HookError
}

// String renders the event on one line, without its time:
// "crds attempt-failed attempt=1 retry-in=2s: attempt 1: connection refused".
func (e Event) String() string {
	s := fmt.Sprintf("%s %s", e.Hook, e.Kind)
	if e.Attempt > 0 {
		s += fmt.Sprintf(" attempt=%d", e.Attempt)
	}
	if e.Kind == EventAttemptFailed {
		s += fmt.Sprintf(" retry-in=%v", e.Delay)
	}
	if e.Err != nil {
		s += fmt.Sprintf(": %v", e.Err)
	}
	return s
}
