package hooks

import (
	"fmt"
	"time"
)

// State is where a hook is in its run.
type State int

const (
	// Pending: not started; its dependencies have not all succeeded yet
	// (or Run has not been called).
	Pending State = iota
	// Waiting: released by its dependencies, waiting on its Gate, for a
	// concurrency slot, or for the delay before a retry.
	Waiting
	// Running: an attempt of Run is in progress.
	Running
	// Succeeded: an attempt returned nil. Final.
	Succeeded
	// Failed: the last attempt (or the Gate) returned an error and no
	// retry is left. Final.
	Failed
	// Skipped: never started, because a dependency failed or was skipped.
	// Final.
	Skipped
	// Canceled: the run stopped (its context ended, or a hook aborted it)
	// before the hook finished. Final.
	Canceled
)

var stateNames = [...]string{
	Pending:   "pending",
	Waiting:   "waiting",
	Running:   "running",
	Succeeded: "succeeded",
	Failed:    "failed",
	Skipped:   "skipped",
	Canceled:  "canceled",
}

// String returns the state in lower case, "succeeded" for example.
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// final reports whether s is a state a hook never leaves.
func (s State) final() bool { return s >= Succeeded }

// Report is a snapshot of a run: every hook's state and timings, and the
// critical path. Durations and offsets come from the Runner's clock.
type Report struct {
	// Hooks holds one entry per hook, in the order they were added.
	Hooks []HookReport
	// Duration is the run's wall time so far (all of it, once Run has
	// returned). Zero before Run.
	Duration time.Duration
	// CriticalPath names the chain of hooks that set the run's length:
	// the hook that finished last, the dependency that released it (the
	// one that finished last among its After hooks), and so on back to a
	// hook with no dependencies. Only finished hooks are considered.
	CriticalPath []string
	// CallbackErrs lists the Runner's callbacks that panicked without
	// failing a hook — the observer, the clock (WithClock), the logger —
	// one error per callback, wrapping ErrPanic, with the first panic and
	// how many calls panicked. Nil if none did.
	CallbackErrs []error
}

// HookReport is the state and timings of one hook.
type HookReport struct {
	Name  string
	State State
	// Err is set for Failed, Skipped and Canceled hooks.
	Err *HookError
	// SkippedBy names, for a Skipped hook, the dependency that did not
	// succeed.
	SkippedBy string
	// Attempts counts the calls of Run.
	Attempts int
	// GateWait is the total time spent waiting on the Gate, and Running
	// the total time spent in Run, over all attempts.
	GateWait, Running time.Duration
	// Start is when the hook's dependencies released it and End when it
	// finished, as offsets from the start of the run. Both are zero for a
	// hook that was never released.
	Start, End time.Duration
}

// criticalPath walks back from the hook that finished last through the
// latest-finishing dependency of each. Ties go to the earlier-added hook.
func criticalPath(g *graph, hooks []Hook, st []hookState) []string {
	last := -1
	for i := range st {
		if st[i].released && st[i].state.final() && (last < 0 || st[i].end > st[last].end) {
			last = i
		}
	}
	var path []string
	for i := last; i >= 0; {
		path = append(path, hooks[i].Name)
		next := -1
		for _, d := range g.deps[i] {
			if st[d].released && st[d].state.final() &&
				(next < 0 || st[d].end > st[next].end || st[d].end == st[next].end && d < next) {
				next = d
			}
		}
		i = next
	}
	for l, r := 0, len(path)-1; l < r; l, r = l+1, r-1 {
		path[l], path[r] = path[r], path[l]
	}
	return path
}
