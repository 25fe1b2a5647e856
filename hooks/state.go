package hooks

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// hookState is the Runner's record of one hook during a run, guarded by
// Runner.mu.
type hookState struct {
	state     State
	act       activity // what a Waiting or Running hook is doing
	lastErr   error    // actRetry: the attempt error being retried
	released  bool     // its dependencies succeeded; a goroutine runs it
	waiting   int      // dependencies not yet succeeded
	attempts  int
	gateWait  time.Duration
	running   time.Duration
	start     time.Duration
	end       time.Duration
	err       *HookError
	skippedBy string
}

type activity int

const (
	actNone activity = iota
	actGate
	actSlot
	actRetry
	actRun
)

// releaseLocked starts a goroutine for hook i, whose dependencies have all
// succeeded.
func (r *Runner) releaseLocked(ctx context.Context, i int) {
	s := &r.st[i]
	s.released = true
	s.start = r.now().Sub(r.start)
	r.group.Go(func() error {
		r.work(ctx, i)
		return nil
	})
}

// enter moves hook i to Waiting, doing act before attempt, and emits an
// event of kind, if kind is not zero. It returns the Runner's clock at the
// transition.
func (r *Runner) enter(i int, act activity, attempt int, kind EventKind) time.Time {
	r.mu.Lock()
	now := r.now()
	s := &r.st[i]
	s.state, s.act = Waiting, act
	if kind != 0 {
		r.eventLocked(Event{Time: now, Hook: r.hooks[i].Name, Kind: kind, Attempt: attempt})
	}
	r.mu.Unlock()
	r.emit()
	return now
}

// begin moves hook i to Running for attempt and emits EventStarted, unless
// the run has stopped: then it changes nothing and returns why (see
// stopped). It checks under mu, which a hook that aborts the run holds
// while it cancels the run's context, so that no attempt starts after an
// abort: an attempt either started before it, and sees its context end, or
// does not start. It returns the Runner's clock at the transition.
func (r *Runner) begin(ctx context.Context, i, attempt int) (time.Time, error) {
	r.mu.Lock()
	if err := stopped(ctx); err != nil {
		r.mu.Unlock()
		return time.Time{}, err
	}
	now := r.now()
	s := &r.st[i]
	s.state, s.act, s.attempts = Running, actRun, attempt
	r.eventLocked(Event{Time: now, Hook: r.hooks[i].Name, Kind: EventStarted, Attempt: attempt})
	r.mu.Unlock()
	r.emit()
	return now, nil
}

// retrying records that attempt failed with err and is retried after delay.
func (r *Runner) retrying(i, attempt int, err error, delay time.Duration) {
	r.mu.Lock()
	s := &r.st[i]
	s.state, s.act, s.lastErr = Waiting, actRetry, err
	r.eventLocked(Event{Hook: r.hooks[i].Name, Kind: EventAttemptFailed, Attempt: attempt, Delay: delay, Err: err})
	r.mu.Unlock()
	r.emit()
	r.log.Info("hook attempt failed; retrying", "hook", r.hooks[i].Name, "attempt", attempt, "retryIn", delay, "err", err)
}

// spent adds the time since t0 to the gate-wait or running total of hook i.
func (r *Runner) spent(i int, act activity, t0 time.Time) {
	r.mu.Lock()
	d := r.now().Sub(t0)
	if act == actGate {
		r.st[i].gateWait += d
	} else {
		r.st[i].running += d
	}
	r.mu.Unlock()
}

// settle records the outcome of hook i after attempt: Succeeded if err is
// nil, else Canceled if the run has stopped, else Failed. It releases the
// dependants of a hook that succeeded, skips those of a hook that failed,
// and aborts the run if the failed hook's policy says so.
func (r *Runner) settle(ctx context.Context, i, attempt int, err error) {
	h := &r.hooks[i]
	r.mu.Lock()
	switch {
	case err == nil:
		r.endLocked(i, Succeeded, nil)
		if ctx.Err() == nil {
			for _, d := range r.graph.dependants[i] {
				s := &r.st[d]
				s.waiting--
				if s.waiting == 0 && s.state == Pending {
					r.releaseLocked(ctx, d)
				}
			}
		}
	case ctx.Err() != nil:
		r.endLocked(i, Canceled, err)
	default:
		r.endLocked(i, Failed, err)
		r.skipLocked(i)
		if h.OnFailure == Abort {
			r.cancel(fmt.Errorf("%w: %w", ErrAborted, r.st[i].err))
		}
	}
	final := r.st[i].err
	r.mu.Unlock()
	r.emit()

	switch {
	case final == nil:
		if log := r.log.V(1); log.Enabled() {
			log.Info("hook succeeded", "hook", h.Name, "attempts", attempt)
		}
	case final.State == Failed:
		r.log.Error(final, "hook failed", "hook", h.Name, "attempts", attempt, "onFailure", policyName(h.OnFailure))
	default:
		r.log.Info("hook canceled", "hook", h.Name, "err", final)
	}
}

// endLocked puts hook i in a final state, with err as its error unless it
// succeeded, and records the matching event.
func (r *Runner) endLocked(i int, state State, err error) {
	s := &r.st[i]
	now := r.now()
	s.state, s.act = state, actNone
	if s.released {
		s.end = now.Sub(r.start)
	}
	ev := Event{Time: now, Hook: r.hooks[i].Name, Kind: EventSucceeded, Attempt: s.attempts}
	if state != Succeeded {
		s.err = &HookError{Hook: r.hooks[i].Name, State: state, Err: err}
		ev.Err = s.err
		switch state {
		case Failed:
			ev.Kind = EventFailed
		case Skipped:
			ev.Kind = EventSkipped
		default:
			ev.Kind = EventCanceled
		}
	}
	r.eventLocked(ev)
}

// skipLocked skips every hook that depends, directly or not, on hook
// failed.
func (r *Runner) skipLocked(failed int) {
	stack := []int{failed}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, d := range r.graph.dependants[i] {
			if r.st[d].state != Pending || r.st[d].released {
				continue // already skipped through another dependency
			}
			r.st[d].skippedBy = r.hooks[i].Name
			r.endLocked(d, Skipped, fmt.Errorf("dependency %q %s", r.hooks[i].Name, r.st[i].state))
			stack = append(stack, d)
		}
	}
}

// eventLocked records ev, stamped, for emit to hand to the observer, if
// there is one. Recording under mu puts events in the order of the state
// changes they report, which is causal order: a hook is released, and its
// run aborted, under mu.
func (r *Runner) eventLocked(ev Event) {
	if r.opts.observer == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = r.now()
	}
	r.events = append(r.events, ev)
}

// describeLocked says what hook i is doing or did, for Check and for the
// errors of hooks canceled before they finished.
func (r *Runner) describeLocked(i int) string {
	if r.st == nil {
		return "not started: Run has not been called"
	}
	s := &r.st[i]
	switch s.state {
	case Pending:
		if s.released {
			return "starting"
		}
		var deps []string
		for _, d := range r.graph.deps[i] {
			if r.st[d].state != Succeeded {
				deps = append(deps, fmt.Sprintf("%q", r.hooks[d].Name))
			}
		}
		if len(deps) == 0 {
			return "not started"
		}
		return "not started, waiting for " + strings.Join(deps, ", ")
	case Waiting:
		switch s.act {
		case actGate:
			return fmt.Sprintf("waiting for its gate before attempt %d", s.attempts+1)
		case actSlot:
			return "waiting for a concurrency slot"
		case actRetry:
			return fmt.Sprintf("waiting to retry after %v", s.lastErr)
		}
	case Running:
		return fmt.Sprintf("running attempt %d", s.attempts)
	case Succeeded:
		return "succeeded"
	}
	if s.err != nil {
		return fmt.Sprintf("%s: %v", s.state, s.err.Err)
	}
	return s.state.String()
}

func policyName(p FailurePolicy) string {
	if p == Continue {
		return "Continue"
	}
	return "Abort"
}
