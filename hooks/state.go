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

// record reads the Runner's clock and calls f with the reading while
// holding mu, which it releases by defer whatever f does. f must call no
// user code. A clock set WithClock is user code: it is read before mu is
// taken, through now, under clockMu (released by defer), so that readings
// are taken one at a time and in the order of the state changes they
// stamp. The real clock is read under mu.
func (r *Runner) record(f func(now time.Time)) {
	if r.opts.now != nil {
		r.clockMu.Lock()
		defer r.clockMu.Unlock()
		now := r.now()
		r.mu.Lock()
		defer r.mu.Unlock()
		f(now)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	f(time.Now())
}

// releaseLocked starts a goroutine for hook i, whose dependencies have all
// succeeded, at time now.
func (r *Runner) releaseLocked(ctx context.Context, i int, now time.Time) {
	s := &r.st[i]
	s.released = true
	s.start = now.Sub(r.start)
	r.group.Go(func() error {
		r.work(ctx, i)
		return nil
	})
}

// enter moves hook i to Waiting, doing act before attempt, and emits an
// event of kind, if kind is not zero. It returns the Runner's clock at the
// transition.
func (r *Runner) enter(i int, act activity, attempt int, kind EventKind) (at time.Time) {
	r.record(func(now time.Time) {
		at = now
		s := &r.st[i]
		s.state, s.act = Waiting, act
		if kind != 0 {
			r.eventLocked(Event{Time: now, Hook: r.hooks[i].Name, Kind: kind, Attempt: attempt})
		}
	})
	r.emit()
	return at
}

// begin moves hook i to Running for attempt and emits EventStarted, unless
// the run has stopped: then it changes nothing and returns why (see
// stopped). It checks under mu, which a hook that aborts the run holds
// while it cancels the run's context, so that no attempt starts after an
// abort: an attempt either started before it, and sees its context end, or
// does not start. It returns the Runner's clock at the transition.
func (r *Runner) begin(ctx context.Context, i, attempt int) (at time.Time, err error) {
	if ctx.Err() != nil {
		return time.Time{}, stopped(ctx) // no clock reading for nothing
	}
	began := false
	r.record(func(now time.Time) {
		if ctx.Err() != nil {
			return
		}
		began, at = true, now
		s := &r.st[i]
		s.state, s.act, s.attempts = Running, actRun, attempt
		r.eventLocked(Event{Time: now, Hook: r.hooks[i].Name, Kind: EventStarted, Attempt: attempt})
	})
	if !began {
		// stopped calls no method of the context's cause; it is called
		// without mu all the same.
		return time.Time{}, stopped(ctx)
	}
	r.emit()
	return at, nil
}

// retrying records that attempt failed with err and is retried after delay.
func (r *Runner) retrying(i, attempt int, err error, delay time.Duration) {
	r.record(func(now time.Time) {
		s := &r.st[i]
		s.state, s.act, s.lastErr = Waiting, actRetry, err
		r.eventLocked(Event{Time: now, Hook: r.hooks[i].Name, Kind: EventAttemptFailed, Attempt: attempt, Delay: delay, Err: err})
	})
	r.emit()
	r.log.Info("hook attempt failed; retrying", "hook", r.hooks[i].Name, "attempt", attempt, "retryIn", delay, "err", err)
}

// spent adds the time since t0 to the gate-wait or running total of hook i.
func (r *Runner) spent(i int, act activity, t0 time.Time) {
	r.record(func(now time.Time) {
		d := now.Sub(t0)
		if act == actGate {
			r.st[i].gateWait += d
		} else {
			r.st[i].running += d
		}
	})
}

// settle records the outcome of hook i after attempt: Succeeded if err is
// nil, else Canceled if the run has stopped, else Failed. It releases the
// dependants of a hook that succeeded, skips those of a hook that failed,
// and aborts the run if the failed hook's policy says so.
func (r *Runner) settle(ctx context.Context, i, attempt int, err error) {
	h := &r.hooks[i]
	var final *HookError
	r.record(func(now time.Time) {
		switch {
		case err == nil:
			r.endLocked(i, Succeeded, nil, now)
			if ctx.Err() == nil {
				for _, d := range r.graph.dependants[i] {
					s := &r.st[d]
					s.waiting--
					if s.waiting == 0 && s.state == Pending {
						r.releaseLocked(ctx, d, now)
					}
				}
			}
		case ctx.Err() != nil:
			r.endLocked(i, Canceled, err, now)
		default:
			r.endLocked(i, Failed, err, now)
			r.skipLocked(i, now)
			if h.OnFailure == Abort {
				r.cancel(&abortError{r.st[i].err})
			}
		}
		final = r.st[i].err
	})
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

// endLocked puts hook i in a final state at time now, with err as its
// error unless it succeeded, and records the matching event.
func (r *Runner) endLocked(i int, state State, err error, now time.Time) {
	s := &r.st[i]
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

// skipLocked skips, at time now, every hook that depends, directly or
// not, on hook failed.
func (r *Runner) skipLocked(failed int, now time.Time) {
	stack := []int{failed}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, d := range r.graph.dependants[i] {
			if r.st[d].state != Pending || r.st[d].released {
				continue // already skipped through another dependency
			}
			r.st[d].skippedBy = r.hooks[i].Name
			r.endLocked(d, Skipped, fmt.Errorf("dependency %q %s", r.hooks[i].Name, r.st[i].state), now)
			stack = append(stack, d)
		}
	}
}

// eventLocked records ev for emit to hand to the observer, if there is
// one. Recording under mu puts events in the order of the state changes
// they report, which is causal order: a hook is released, and its run
// aborted, under mu.
func (r *Runner) eventLocked(ev Event) {
	if r.opts.observer == nil {
		return
	}
	r.events = append(r.events, ev)
}

// status is what a hook is doing or did, copied from its hookState under
// mu so that it can be described (String) without mu: its errors may be
// the caller's, with Error methods of their own.
type status struct {
	started   bool // Run has been called
	state     State
	act       activity
	released  bool
	attempts  int
	lastErr   error    // Waiting, actRetry: the attempt error being retried
	err       error    // final: the hook's error, if any
	waitingOn []string // Pending: its dependencies that have not succeeded
}

// statusLocked returns the status of hook i.
func (r *Runner) statusLocked(i int) status {
	if r.st == nil {
		return status{}
	}
	s := &r.st[i]
	st := status{started: true, state: s.state, act: s.act, released: s.released, attempts: s.attempts, lastErr: s.lastErr}
	if s.err != nil {
		st.err = s.err.Err
	}
	if s.state == Pending && !s.released {
		for _, d := range r.graph.deps[i] {
			if r.st[d].state != Succeeded {
				st.waitingOn = append(st.waitingOn, r.hooks[d].Name)
			}
		}
	}
	return st
}

// String says what the hook is doing or did, for Check and for the errors
// of hooks canceled before they finished. It calls the Error method of the
// hook's error through errText.
func (st status) String() string {
	if !st.started {
		return "not started: Run has not been called"
	}
	switch st.state {
	case Pending:
		if st.released {
			return "starting"
		}
		if len(st.waitingOn) == 0 {
			return "not started"
		}
		deps := make([]string, len(st.waitingOn))
		for k, d := range st.waitingOn {
			deps[k] = fmt.Sprintf("%q", d)
		}
		return "not started, waiting for " + strings.Join(deps, ", ")
	case Waiting:
		switch st.act {
		case actGate:
			return fmt.Sprintf("waiting for its gate before attempt %d", st.attempts+1)
		case actSlot:
			return "waiting for a concurrency slot"
		case actRetry:
			return "waiting to retry after " + errText(st.lastErr)
		}
	case Running:
		return fmt.Sprintf("running attempt %d", st.attempts)
	case Succeeded:
		return "succeeded"
	}
	if st.err != nil {
		return fmt.Sprintf("%s: %s", st.state, errText(st.err))
	}
	return st.state.String()
}

func policyName(p FailurePolicy) string {
	if p == Continue {
		return "Continue"
	}
	return "Abort"
}
