package readiness

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Check is one readiness probe. Check returns nil when the thing it probes
// is ready, and otherwise an error saying why not, naming the component
// and the reason ("mirror pod kube-system/kube-apiserver-node1: config
// hash abc, want def").
//
// Check blocks for one probe only; it must return promptly, with an
// error, when ctx ends (Wait bounds every attempt with WithAttemptTimeout
// through ctx). A check may return Permanent(err) for a failure no retry
// can fix; Wait then stops at once.
//
// A Check that also has a method Name() string is called by that name in
// Wait's errors and logs; Named adds one. A Check that also implements
// Watcher wakes Wait early when what it looks at changes.
//
// The built-in checks are safe for concurrent use; Wait calls a check from
// one goroutine at a time.
type Check interface {
	Check(ctx context.Context) error
}

// CheckFunc adapts a function to Check. A nil CheckFunc returns a
// permanent ErrInvalid error instead of panicking. If the function panics,
// Wait (or All, Any) recovers the panic and reports it as the check's
// failure, wrapping ErrPanic; called directly, Check lets it through.
type CheckFunc func(ctx context.Context) error

// Check calls f(ctx).
func (f CheckFunc) Check(ctx context.Context) error {
	if f == nil {
		return invalid("nil CheckFunc")
	}
	return f(ctx)
}

// Watcher is an optional interface of a Check whose inputs can be watched
// (a Kubernetes object, an etcd key). Wait runs Watch in a goroutine of
// its own for as long as it waits and re-checks at once whenever changed
// is called, instead of sleeping out the backoff delay: the backoff
// becomes only the floor.
//
// Watch blocks until ctx ends, calling changed whenever the state the
// check looks at may have changed — including once after (re-)establishing
// its watch, since changes made before that were not seen. Extra calls
// cost one extra check; missed ones cost a backoff delay. changed never
// blocks and may be called from any goroutine. Watch should retry broken
// watches itself and return only when ctx ends (returning earlier just
// leaves Wait polling). Watch must return promptly when ctx ends: Wait
// cancels ctx and waits for Watch to return before Wait itself returns,
// for at most WatchGracePeriod; a Watch still running then is abandoned
// (Wait returns, says so, and leaves its goroutine running). If Watch
// panics, Wait recovers the panic and returns an error wrapping ErrPanic.
type Watcher interface {
	Watch(ctx context.Context, changed func()) error
}

// nameOf returns the check's name, or "check" if it has none. The Name
// method is user code: callers guard it.
func nameOf(c Check) string {
	if n, ok := c.(interface{ Name() string }); ok {
		if s := n.Name(); s != "" {
			return s
		}
	}
	return "check"
}

// Named gives check a name: its errors are prefixed with "name: ", Wait's
// errors and logs use it, and the result is a Watcher exactly when check
// is one. Named with an empty name or a nil check (a typed nil too, such
// as a nil pointer or a nil CheckFunc) returns a check that fails with a
// permanent ErrInvalid error naming the argument. Named does not block;
// the result is as safe for concurrent use as check is.
func Named(name string, check Check) Check {
	n := &named{name: name, check: check}
	switch {
	case name == "":
		n.bad = invalid("Named: empty name")
	case isNil(check):
		n.bad = nilArg(fmt.Sprintf("Named(%q)", name), "check", check)
	}
	if n.bad != nil {
		return n
	}
	if w, ok := check.(Watcher); ok {
		return &watchingNamed{named: n, w: w}
	}
	return n
}

type named struct {
	name  string
	check Check
	bad   error
}

func (n *named) Name() string { return n.name }

func (n *named) Check(ctx context.Context) error {
	if n.bad != nil {
		return n.bad
	}
	if err := checkError(fmt.Sprintf("the check %q", n.name), n.check.Check(ctx)); err != nil {
		if inner, ok := isPermanent(err); ok {
			return Permanent(fmt.Errorf("%s: %w", n.name, inner))
		}
		return fmt.Errorf("%s: %w", n.name, err)
	}
	return nil
}

// watchingNamed is Named of a Watcher. A plain check gets a plain named,
// so that Wait does not start a watch that has nothing to watch.
type watchingNamed struct {
	*named
	w Watcher
}

func (n *watchingNamed) Watch(ctx context.Context, changed func()) error {
	return n.w.Watch(ctx, changed)
}

func (n *watchingNamed) watchesAll() bool { return watchesAll(n.check) }

// watchesAll reports whether everything c looks at is watched: c is a
// Watcher and, if it is a Named, All or Any, so is every check it wraps.
func watchesAll(c Check) bool {
	if _, ok := c.(Watcher); !ok {
		return false
	}
	if wa, ok := c.(interface{ watchesAll() bool }); ok {
		return wa.watchesAll()
	}
	return true
}

// All passes when every check passes. It runs them concurrently, waits for
// all of them, and its error lists every failing one ("2 of 3 checks not
// ready: etcd not healthy: ...; kube-apiserver not ready: ..."). It is
// permanent if any sub-check's error is. All() with no checks passes; a
// nil check (a typed nil too) fails it with a permanent ErrInvalid error
// naming its position. A sub-check that panics fails with a permanent
// error wrapping ErrPanic. All is a Watcher
// when a sub-check is, and then watches every sub-check that is a
// Watcher. Safe for concurrent use if the sub-checks are.
func All(checks ...Check) Check {
	return newComposite(true, checks)
}

// Any passes when at least one check passes. It runs them concurrently and
// returns as soon as one passes, cancelling the context of the others and
// waiting for them to return; when none passes, it has waited for all of
// them, and its error lists every failure
// ("none of 2 checks ready: ...") and is permanent only if every failure
// is, or a sub-check panicked (its failure wraps ErrPanic). Any() with no
// checks fails with a permanent ErrInvalid error, as does a nil check (a
// typed nil too). Any is a Watcher when a sub-check is, and then watches
// every sub-check that is a Watcher. Safe for concurrent use if the
// sub-checks are.
func Any(checks ...Check) Check {
	return newComposite(false, checks)
}

// newComposite returns a composite, one that is also a Watcher when a
// sub-check is: a composite of plain checks has nothing to watch, and
// Wait should not start a watch for it.
func newComposite(all bool, checks []Check) Check {
	c := &composite{all: all, checks: append([]Check(nil), checks...)}
	for i, ch := range c.checks {
		if isNil(ch) {
			c.bad = nilArg(c.kind(), fmt.Sprintf("check %d of %d", i+1, len(c.checks)), ch)
			return c
		}
	}
	for _, ch := range c.checks {
		if _, ok := ch.(Watcher); ok {
			return &watchingComposite{c}
		}
	}
	return c
}

type composite struct {
	all    bool
	checks []Check
	bad    error
}

func (c *composite) kind() string {
	if c.all {
		return "All"
	}
	return "Any"
}

func (c *composite) Check(ctx context.Context) error {
	if c.bad != nil {
		return c.bad
	}
	if len(c.checks) == 0 {
		if c.all {
			return nil
		}
		return invalid("Any: no checks")
	}
	errs := make([]error, len(c.checks))
	// Any knows its answer at the first pass: the checks still running
	// are cancelled (and awaited, so nothing outlives the call).
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i, ch := range c.checks {
		wg.Go(func() {
			part := c.part(i, ch)
			guarded(part, func() error { return checkError(part, ch.Check(sctx)) }, func(err error) {
				errs[i] = err
				if err == nil && !c.all {
					cancel()
				}
			})
		})
	}
	wg.Wait()

	var failed []error
	permanent, panicked := 0, false
	for _, err := range errs {
		var pe *panicError
		if errors.As(err, &pe) {
			panicked = true
		}
		if err == nil {
			if !c.all {
				return nil
			}
			continue
		}
		// Keep every reason, drop the marks: whether the whole is
		// permanent is decided below.
		if inner, ok := isPermanent(err); ok {
			permanent++
			err = inner
		}
		failed = append(failed, err)
	}
	if len(failed) == 0 {
		return nil
	}
	var err error
	if c.all {
		err = &multiError{prefix: fmt.Sprintf("%d of %d checks not ready", len(failed), len(c.checks)), errs: failed}
	} else {
		err = &multiError{prefix: fmt.Sprintf("none of %d checks ready", len(c.checks)), errs: failed}
	}
	if (c.all && permanent > 0) || permanent == len(c.checks) || panicked {
		err = Permanent(err)
	}
	return err
}

// part names sub-check i for a panic: "check 2 of 3 (etcd)".
func (c *composite) part(i int, ch Check) string {
	name := "check"
	_ = protect("", func() error { name = nameOf(ch); return nil })
	return fmt.Sprintf("%s: check %d of %d (%s)", c.kind(), i+1, len(c.checks), name)
}

// watchingComposite is a composite with at least one Watcher among its
// sub-checks.
type watchingComposite struct{ *composite }

// Watch runs the Watch of every sub-check that is a Watcher until ctx
// ends, and returns when all of them have returned. If one panics, Watch
// returns its error (wrapping ErrPanic) once the others have returned,
// having cancelled them. A nil changed is a permanent ErrInvalid error.
func (c *watchingComposite) Watch(ctx context.Context, changed func()) error {
	if changed == nil {
		return invalid("%s: Watch: nil changed func", c.kind())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		panicked error
	)
	for i, ch := range c.checks {
		if w, ok := ch.(Watcher); ok {
			wg.Go(func() {
				guarded(c.part(i, ch)+" Watch", func() error { return w.Watch(ctx, changed) }, func(err error) {
					if safeIs(err, ErrPanic) {
						mu.Lock()
						if panicked == nil {
							panicked = err
						}
						mu.Unlock()
						cancel()
					}
				})
			})
		}
	}
	wg.Wait()
	if panicked != nil {
		return panicked
	}
	return ctx.Err()
}

func (c *watchingComposite) watchesAll() bool {
	for _, ch := range c.checks {
		if !watchesAll(ch) {
			return false
		}
	}
	return true
}
