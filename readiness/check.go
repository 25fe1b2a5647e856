package readiness

import (
	"context"
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

// CheckFunc adapts a function to Check. A nil CheckFunc returns an
// ErrInvalid error instead of panicking.
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
// leaves Wait polling). Wait cancels ctx and waits for Watch to return
// before Wait itself returns, so no goroutine a Watch started may outlive
// it.
type Watcher interface {
	Watch(ctx context.Context, changed func()) error
}

// nameOf returns the check's name, or "check" if it has none.
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
// is one. Named with an empty name or a nil check returns a check that
// fails with a permanent ErrInvalid error. Named does not block; the
// result is as safe for concurrent use as check is.
func Named(name string, check Check) Check {
	n := &named{name: name, check: check}
	if w, ok := check.(Watcher); ok {
		return &watchingNamed{named: n, w: w}
	}
	return n
}

type named struct {
	name  string
	check Check
}

func (n *named) Name() string { return n.name }

func (n *named) Check(ctx context.Context) error {
	if n.name == "" {
		return invalid("Named: empty name")
	}
	if n.check == nil {
		return invalid("Named(%q): nil check", n.name)
	}
	if err := n.check.Check(ctx); err != nil {
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

// All passes when every check passes. It runs them concurrently, waits for
// all of them, and its error lists every failing one ("2 of 3 checks not
// ready: etcd not healthy: ...; kube-apiserver not ready: ..."). It is
// permanent if any sub-check's error is. All() with no checks passes; a
// nil check fails it with a permanent ErrInvalid error. All is a Watcher
// when a sub-check is, and then watches every sub-check that is a
// Watcher. Safe for concurrent use if the sub-checks are.
func All(checks ...Check) Check {
	return newComposite(true, checks)
}

// Any passes when at least one check passes. It runs them concurrently and
// waits for all of them; when none passes, its error lists every failure
// ("none of 2 checks ready: ...") and is permanent only if every failure
// is. Any() with no checks fails with a permanent ErrInvalid error, as
// does a nil check. Any is a Watcher when a sub-check is, and then watches
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
}

func (c *composite) kind() string {
	if c.all {
		return "All"
	}
	return "Any"
}

func (c *composite) Check(ctx context.Context) error {
	for i, ch := range c.checks {
		if ch == nil {
			return invalid("%s: check %d of %d is nil", c.kind(), i+1, len(c.checks))
		}
	}
	if len(c.checks) == 0 {
		if c.all {
			return nil
		}
		return invalid("Any: no checks")
	}
	errs := make([]error, len(c.checks))
	var wg sync.WaitGroup
	for i, ch := range c.checks {
		wg.Go(func() { errs[i] = ch.Check(ctx) })
	}
	wg.Wait()

	var failed []error
	permanent := 0
	for _, err := range errs {
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
	if (c.all && permanent > 0) || permanent == len(c.checks) {
		err = Permanent(err)
	}
	return err
}

// watchingComposite is a composite with at least one Watcher among its
// sub-checks.
type watchingComposite struct{ *composite }

// Watch runs the Watch of every sub-check that is a Watcher until ctx
// ends, and returns when all of them have returned.
func (c *watchingComposite) Watch(ctx context.Context, changed func()) error {
	var wg sync.WaitGroup
	for _, ch := range c.checks {
		if w, ok := ch.(Watcher); ok {
			wg.Go(func() { _ = w.Watch(ctx, changed) })
		}
	}
	wg.Wait()
	return ctx.Err()
}
