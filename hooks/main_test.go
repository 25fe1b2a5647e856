package hooks_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kubeboot/kubeboot/hooks"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// guard bounds every wait in these tests. It is a failure guard, not a
// timing assertion: nothing should come close to it.
const guard = 20 * time.Second

// await waits for ch to be closed (or to deliver), for ctx to end, or for
// the guard to pass, and says which in its error.
func await(ctx context.Context, ch <-chan struct{}, what string) error {
	t := time.NewTimer(guard)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
	case <-t.C:
		return fmt.Errorf("waiting for %s: test guard of %v passed", what, guard)
	}
}

// mustAwait is await for the test goroutine.
func mustAwait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	require.NoError(t, await(context.Background(), ch, what))
}

// runAsync starts r.Run on its own goroutine; the channel delivers its
// result.
func runAsync(ctx context.Context, r *hooks.Runner) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()
	return errc
}

// result waits for Run's result within the guard.
func result(t *testing.T, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(guard):
		t.Fatalf("Run did not return within the test guard of %v", guard)
		return nil
	}
}

func newRunner(t *testing.T, opts ...hooks.Option) *hooks.Runner {
	t.Helper()
	r, err := hooks.New(opts...)
	require.NoError(t, err)
	return r
}

func ok(context.Context) error { return nil }

// byName indexes a report's hooks.
func byName(rep hooks.Report) map[string]hooks.HookReport {
	m := make(map[string]hooks.HookReport, len(rep.Hooks))
	for _, h := range rep.Hooks {
		m[h.Name] = h
	}
	return m
}

// states maps each hook of a report to its state.
func states(rep hooks.Report) map[string]hooks.State {
	m := make(map[string]hooks.State, len(rep.Hooks))
	for _, h := range rep.Hooks {
		m[h.Name] = h.State
	}
	return m
}

// recorder collects observer events; the Runner calls it one event at a
// time, but tests read it from their own goroutine.
type recorder struct {
	mu     sync.Mutex
	events []hooks.Event
	on     map[string]chan struct{} // "hook kind" → closed at the first such event
}

func newRecorder() *recorder { return &recorder{on: map[string]chan struct{}{}} }

func (rec *recorder) observe(ev hooks.Event) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.events = append(rec.events, ev)
	key := ev.Hook + " " + ev.Kind.String()
	if ch, ok := rec.on[key]; ok {
		close(ch)
		delete(rec.on, key)
	}
}

// when returns a channel closed at the first event of kind for hook. It
// must be called before the run.
func (rec *recorder) when(hook string, kind hooks.EventKind) <-chan struct{} {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	ch := make(chan struct{})
	rec.on[hook+" "+kind.String()] = ch
	return ch
}

// all returns every event, in order.
func (rec *recorder) all() []hooks.Event {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]hooks.Event(nil), rec.events...)
}

// of returns the events of one hook, in order.
func (rec *recorder) of(hook string) []hooks.Event {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var evs []hooks.Event
	for _, ev := range rec.events {
		if ev.Hook == hook {
			evs = append(evs, ev)
		}
	}
	return evs
}

func kinds(evs []hooks.Event) []string {
	s := make([]string, len(evs))
	for i, ev := range evs {
		s[i] = fmt.Sprintf("%s/%d", ev.Kind, ev.Attempt)
	}
	return s
}

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 7, 9, 20, 9, 55, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// runError extracts the *RunError from Run's error.
func runError(t *testing.T, err error) *hooks.RunError {
	t.Helper()
	var re *hooks.RunError
	require.ErrorAs(t, err, &re)
	return re
}

var errBoom = errors.New("boom")
