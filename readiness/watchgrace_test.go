package readiness_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/readiness"
)

// stubbornWatcher is a Watcher whose Watch does not return when its
// context ends, only when the test releases it.
type stubbornWatcher struct {
	ready    bool
	release  chan struct{}
	returned chan struct{}
}

func newStubbornWatcher(ready bool) *stubbornWatcher {
	return &stubbornWatcher{ready: ready, release: make(chan struct{}), returned: make(chan struct{})}
}

func (s *stubbornWatcher) Check(context.Context) error {
	if s.ready {
		return nil
	}
	return errf("not yet")
}

func (s *stubbornWatcher) Watch(ctx context.Context, changed func()) error {
	defer close(s.returned)
	<-ctx.Done()
	<-s.release // slow to let go
	return nil
}

// finish releases the Watch and waits for it to return, so that nothing
// outlives the test.
func (s *stubbornWatcher) finish(t *testing.T) {
	t.Helper()
	close(s.release)
	<-s.returned
}

// A Watch that does not return when its context ends holds Wait for at
// most WatchGracePeriod: Wait then returns anyway, says the Watch was
// abandoned (a *NotReadyError with Abandoned set when not ready; nil when
// ready), and the Watch's goroutine goes on until Watch returns.
func TestWaitAbandonsWatchAfterGracePeriod(t *testing.T) {
	ctx := testCtx(t)

	t.Run("not ready", func(t *testing.T) {
		w := newStubbornWatcher(false)
		defer w.finish(t)
		short, cancel := context.WithCancel(ctx)
		attempt, attempts := observer()
		done := goWait(short, w, attempt)
		awaitAttempt(t, attempts, done, "an attempt fails", func(a readiness.Attempt) bool { return a.Err != nil })
		cancel()
		err := awaitDone(t, done, "a Watch that ignores its context")
		require.ErrorIs(t, err, context.Canceled)
		var nr *readiness.NotReadyError
		require.ErrorAs(t, err, &nr)
		assert.True(t, nr.Abandoned, "Abandoned: %v", err)
		assert.Contains(t, err.Error(), "the check's Watch did not return within "+readiness.WatchGracePeriod.String()+" of its context ending and was abandoned")
		select {
		case <-w.returned:
			t.Fatal("the Watch returned before it was released: the test proves nothing")
		default:
		}
	})

	t.Run("ready", func(t *testing.T) {
		w := newStubbornWatcher(true)
		defer w.finish(t)
		done := goWait(ctx, w)
		require.NoError(t, awaitDone(t, done, "a ready check whose Watch ignores its context"))
	})

	t.Run("Watch that honours its context", func(t *testing.T) {
		// Released before Wait ends: awaited, not abandoned.
		w := newStubbornWatcher(false)
		close(w.release)
		short, cancel := context.WithCancel(ctx)
		attempt, attempts := observer()
		done := goWait(short, w, attempt)
		awaitAttempt(t, attempts, done, "an attempt fails", func(a readiness.Attempt) bool { return a.Err != nil })
		cancel()
		err := awaitDone(t, done, "a Watch that honours its context")
		var nr *readiness.NotReadyError
		require.ErrorAs(t, err, &nr)
		assert.False(t, nr.Abandoned)
		assert.NotContains(t, err.Error(), "abandoned")
		select {
		case <-w.returned:
		default:
			t.Fatal("Wait returned before the Watch it started")
		}
	})
}
