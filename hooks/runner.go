package hooks

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
)

// Runner runs a graph of hooks once: each hook starts as soon as every hook
// in its After list has succeeded and its Gate has opened, independent hooks
// run concurrently, and Run reports what ran, when, and why anything did
// not.
//
// Use New, or the zero Runner, which has the default options. A Runner is
// goroutine-safe: Add, Check, Report and Plan may be called at any time
// from any goroutine, including from hooks and from the observer (Add then
// fails with ErrStarted), and Add, Check and Plan from the clock set
// WithClock. The Runner calls no user code while it holds a lock of its
// own, except on another goroutine and with the lock released by defer.
type Runner struct {
	opts options

	mu    sync.Mutex
	hooks []Hook         // in Add order; not modified once Run has started
	index map[string]int // name → position in hooks

	// Set when Run starts (graph != nil means started).
	graph  *graph
	st     []hookState // guarded by mu
	cancel context.CancelCauseFunc
	group  errgroup.Group
	sem    *semaphore.Weighted // nil: no concurrency limit
	log    logr.Logger
	start  time.Time
	end    time.Time // set, with done, when Run concludes
	done   bool

	events []Event    // guarded by mu: recorded, not yet emitted
	obsMu  sync.Mutex // serializes observer calls; taken before clockMu

	// clockMu serializes the readings of a clock set WithClock with the
	// state changes they stamp (see record); taken before mu.
	clockMu sync.Mutex

	cb contained // panics of the observer, clock and logger
}

// errNilRunner is the error of every method called on a nil *Runner.
func errNilRunner(method string) error {
	return fmt.Errorf("hooks: %w: %s called on a nil *Runner", ErrInvalidInput, method)
}

// New returns a Runner with the given options. It returns an error
// wrapping ErrInvalidInput, naming the option, if an option is nil or
// invalid. New does not block.
func New(opts ...Option) (*Runner, error) {
	r := &Runner{}
	for k, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("hooks: %w: New: option #%d is nil", ErrInvalidInput, k+1)
		}
		if err := opt(&r.opts); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Add adds hooks to the Runner. It checks each on its own (a non-empty
// unique name, a non-nil Run, a non-negative Timeout, a known OnFailure
// policy, no empty After names) and adds either all of them or, if any is
// invalid, none; the error then wraps ErrInvalidHook or ErrDuplicateHook
// for each bad hook, naming it. After names are checked by Run and Plan, so
// hooks may be added in any order. Add after Run has started returns an
// error wrapping ErrStarted, and Add on a nil *Runner one wrapping
// ErrInvalidInput. Add does not block.
func (r *Runner) Add(hooks ...Hook) error {
	if r == nil {
		return errNilRunner("Add")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.graph != nil {
		return fmt.Errorf("hooks: Add %s: %w", hookNames(hooks), ErrStarted)
	}
	var errs []error
	batch := make(map[string]int, len(hooks))
	for k := range hooks {
		h := &hooks[k]
		pos := len(r.hooks) + k + 1
		if err := h.validate(pos); err != nil {
			errs = append(errs, fmt.Errorf("hooks: %w", err))
			continue
		}
		earlier, dup := r.index[h.Name]
		if !dup {
			earlier, dup = batch[h.Name]
		}
		if dup {
			errs = append(errs, fmt.Errorf("hooks: %w: hook #%d is named %q like hook #%d, added earlier",
				ErrDuplicateHook, pos, h.Name, earlier+1))
			continue
		}
		batch[h.Name] = pos - 1
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if r.index == nil {
		r.index = make(map[string]int, len(hooks))
	}
	for _, h := range hooks {
		r.index[h.Name] = len(r.hooks)
		r.hooks = append(r.hooks, h.clone())
	}
	return nil
}

// Run validates the graph and runs it; it may be called once.
//
// If an After name is unknown or the graph has a cycle, Run runs nothing
// and returns an error wrapping ErrUnknownDependency and/or ErrCycle; the
// Runner stays unstarted, so hooks may be added and Run called again.
// Otherwise Run starts each hook as soon as all of its After hooks have
// succeeded, waits on its Gate before every attempt, and retries it by its
// Retry policy. A hook that fails for good with the Continue policy has its
// dependants skipped; with the Abort policy it also cancels the context of
// every in-flight hook, with a cause wrapping ErrAborted and its
// *HookError, and nothing more starts.
//
// Run blocks until every started hook has returned, or been abandoned:
// a Run or Gate call still running a grace period (WithGracePeriod, 10 s
// by default) after its context ended is abandoned, failing its hook
// without a retry (see ErrAbandoned). An abandoned call's goroutine is the
// only goroutine of the run that may outlive Run; it ends when the hook's
// function returns. Hooks that honour their context are never abandoned.
// When ctx ends, in-flight hooks and gates see their context end, no
// further gate or attempt starts, and Run returns as soon as they have
// returned (or been abandoned). A hook stopped before its first attempt is
// Canceled with Attempts 0.
//
// Every user callback Run calls is contained, and runtime.Goexit in one
// (t.FailNow, say) is handled as a panic: a panic in a hook's Run, Gate or
// Retry factory, in its policy's Reset or NextBackOff, or in the Is, As
// or Unwrap method of an error its Run returned (which the Runner calls to
// tell a permanent error or a timeout), fails that hook without a retry
// (or cancels it, if the run has stopped), with an error wrapping
// ErrPanic; a panic in the observer, the clock or the logger is recovered
// and listed in Report.CallbackErrs, and the run goes on. The Runner calls
// no other method of a caller's error (a hook's, or the cause of ctx)
// itself: the errors it makes wrap them unformatted, and only the
// logger's sink (whose panics are the logger's) and Check (see Check)
// format them. None of these callbacks
// reaches the caller's goroutine, kills the process, or leaves a lock of
// the Runner held.
//
// Run returns nil if every hook succeeded, and otherwise a *RunError that
// lists every failed hook with its error, every skipped hook with the
// dependency that did not succeed, and every hook canceled unfinished, and
// carries the full Report. A second Run returns an error wrapping
// ErrStarted. A nil ctx (or an interface holding a nil pointer), or a nil
// *Runner, gives an error wrapping ErrInvalidInput and runs nothing.
func (r *Runner) Run(ctx context.Context) error {
	if r == nil {
		return errNilRunner("Run")
	}
	if isNil(ctx) {
		return fmt.Errorf("hooks: %w: Run: nil context", ErrInvalidInput)
	}
	if r.started() {
		// Before any user code: a clock or observer that calls Run gets
		// its answer without waiting for a lock held for it.
		return fmt.Errorf("hooks: Run: %w", ErrStarted)
	}
	// The user code of starting a run — ctx's methods, the logger sink's —
	// runs here, before any lock is taken.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	log := logr.FromContextOrDiscard(ctx)
	if r.opts.logger != nil {
		log = *r.opts.logger
	}
	log = safeLogger(log, func(v any) { r.cb.note("logger", v) })
	var err error
	r.record(func(now time.Time) {
		if r.graph != nil {
			err = fmt.Errorf("hooks: Run: %w", ErrStarted)
			return
		}
		var g *graph
		if g, err = newGraph(r.hooks); err != nil {
			return
		}
		r.graph, r.cancel, r.log = g, cancel, log
		r.st = make([]hookState, len(r.hooks))
		if r.opts.concurrency > 0 {
			r.sem = semaphore.NewWeighted(int64(r.opts.concurrency))
		}
		r.start = now
		for i := range r.st {
			r.st[i].waiting = len(g.deps[i])
			if r.st[i].waiting == 0 {
				r.releaseLocked(ctx, i, now)
			}
		}
	})
	if err != nil {
		return err
	}

	r.log.V(1).Info("hook run started", "hooks", len(r.hooks))
	// The workers return no error: outcomes are recorded in r.st.
	_ = r.group.Wait()
	return r.conclude(ctx)
}

// conclude marks every hook that never got to finish as Canceled, freezes
// the report, and builds Run's result.
func (r *Runner) conclude(ctx context.Context) error {
	var cause error
	var rep Report
	r.record(func(now time.Time) {
		if ctx.Err() != nil {
			cause = context.Cause(ctx)
		}
		for i := range r.st {
			if r.st[i].state.final() {
				continue
			}
			// Only hooks whose dependencies never all succeeded get here:
			// every released hook is settled by its own goroutine.
			why := ctx.Err()
			if why == nil {
				why = errors.New("internal error: hook never released")
			}
			r.endLocked(i, Canceled, &notFinishedError{r.statusLocked(i), why}, now)
		}
		r.end, r.done = now, true
		rep = r.reportLocked(now)
	})
	r.emit()

	for _, h := range rep.Hooks {
		if h.State != Succeeded {
			err := &RunError{Cause: cause, Report: rep}
			r.log.Info("hook run did not succeed", "err", err)
			return err
		}
	}
	r.log.V(1).Info("hook run succeeded", "hooks", len(rep.Hooks), "duration", rep.Duration)
	return nil
}

// Report returns a snapshot of the run: complete once Run has returned,
// partial while it runs, and every hook Pending before. It does not block
// (beyond a short lock, and while the run is in progress a reading of the
// clock set WithClock) and is goroutine-safe. A nil *Runner has an empty
// Report.
func (r *Runner) Report() Report {
	if r == nil {
		return Report{}
	}
	var rep Report
	if func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.graph != nil && !r.done {
			return false // in progress: Duration needs the clock
		}
		rep = r.reportLocked(time.Time{})
		return true
	}() {
		return rep
	}
	r.record(func(now time.Time) { rep = r.reportLocked(now) })
	return rep
}

// started reports whether Run has started.
func (r *Runner) started() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.graph != nil
}

// reportLocked builds the report; now is the clock's reading, used for the
// duration of a run in progress.
func (r *Runner) reportLocked(now time.Time) Report {
	rep := Report{Hooks: make([]HookReport, len(r.hooks))}
	for i, h := range r.hooks {
		hr := HookReport{Name: h.Name}
		if r.st != nil {
			s := &r.st[i]
			hr.State, hr.Err, hr.SkippedBy = s.state, s.err, s.skippedBy
			hr.Attempts, hr.GateWait, hr.Running = s.attempts, s.gateWait, s.running
			hr.Start, hr.End = s.start, s.end
		}
		rep.Hooks[i] = hr
	}
	if r.graph != nil {
		end := r.end
		if !r.done {
			end = now
		}
		rep.Duration = end.Sub(r.start)
		rep.CriticalPath = criticalPath(r.graph, r.hooks, r.st)
	}
	rep.CallbackErrs = r.cb.errs()
	return rep
}

// now reads the clock set WithClock, or the real clock, on a goroutine of
// its own (see record, its only caller, which holds clockMu). A panic in
// the clock, or runtime.Goexit, is recorded and the real clock stands in.
func (r *Runner) now() time.Time {
	if r.opts.now == nil {
		return time.Now()
	}
	var t time.Time
	if f := isolate(func() { t = r.opts.now() }); f != nil {
		r.cb.note("clock", f.value)
		return time.Now()
	}
	return t
}

// emit hands the recorded events to the observer, one call at a time and
// in the order they were recorded, and returns once the events its caller
// recorded have been handed over, by this call or by another that held
// obsMu first. It must be called without mu or clockMu held: the observer
// may call Check or Report.
func (r *Runner) emit() {
	if r.opts.observer == nil {
		return
	}
	r.obsMu.Lock()
	defer r.obsMu.Unlock()
	for {
		evs := r.takeEvents()
		if len(evs) == 0 {
			return
		}
		for _, ev := range evs {
			r.observe(ev)
		}
	}
}

// takeEvents returns the events recorded and not yet emitted.
func (r *Runner) takeEvents() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := r.events
	r.events = nil
	return evs
}

// observe hands ev to the observer on a goroutine of its own, recovering
// (logging and recording) a panic or runtime.Goexit so that the run goes
// on.
func (r *Runner) observe(ev Event) {
	if f := isolate(func() { r.opts.observer(ev) }); f != nil {
		err := r.cb.note("observer", f.value)
		r.log.Error(err, "observer panicked; the run goes on", "hook", ev.Hook, "event", ev.Kind.String(), "stack", string(f.stack))
	}
}

func hookNames(hooks []Hook) string {
	names := make([]string, len(hooks))
	for i, h := range hooks {
		names[i] = fmt.Sprintf("%q", h.Name)
	}
	return strings.Join(names, ", ")
}
