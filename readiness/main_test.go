package readiness_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kubeboot/kubeboot/internal/testenv"
	"github.com/kubeboot/kubeboot/readiness"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

// guard bounds every wait in these tests. It is a failure guard, not a
// timing assertion: nothing should come close to it.
const guard = 90 * time.Second

// testCtx returns a context that ends at the guard or with the test.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	t.Cleanup(cancel)
	return ctx
}

// fakeClock is a readiness.Clock whose delays pass at once, moving its time
// forward by the delay.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

// observer collects Wait's attempts on a channel large enough that Wait
// never blocks on it in these tests.
func observer() (readiness.Option, chan readiness.Attempt) {
	ch := make(chan readiness.Attempt, 10000)
	return readiness.WithObserver(func(a readiness.Attempt) { ch <- a }), ch
}

// awaitAttempt reads attempts until one satisfies match, failing the test
// if Wait returns first (done) or the guard passes.
func awaitAttempt(t testing.TB, attempts <-chan readiness.Attempt, done <-chan error, what string, match func(readiness.Attempt) bool) readiness.Attempt {
	t.Helper()
	timer := time.NewTimer(guard)
	defer timer.Stop()
	var last readiness.Attempt
	for {
		select {
		case a := <-attempts:
			if match(a) {
				return a
			}
			last = a
		case err := <-done:
			t.Fatalf("waiting for an attempt where %s: Wait returned %v (last attempt: %+v)", what, err, last)
		case <-timer.C:
			t.Fatalf("waiting for an attempt where %s: guard of %s passed (last attempt: %+v)", what, guard, last)
		}
	}
}

// awaitDone waits for Wait's result, failing the test at the guard.
func awaitDone(t testing.TB, done <-chan error, what string) error {
	t.Helper()
	timer := time.NewTimer(guard)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		t.Fatalf("%s: Wait did not return within the guard of %s", what, guard)
		return nil
	}
}

// stillWaiting fails the test if Wait has returned.
func stillWaiting(t testing.TB, done <-chan error, when string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s: Wait returned %v, want it still waiting", when, err)
	default:
	}
}

// goWait runs Wait in a goroutine and returns its result channel; the test
// must receive from it before it ends.
func goWait(ctx context.Context, check readiness.Check, opts ...readiness.Option) <-chan error {
	done := make(chan error, 1)
	go func() { done <- readiness.Wait(ctx, check, opts...) }()
	return done
}

// errf is fmt.Errorf, short for scripted checks.
var errf = fmt.Errorf
