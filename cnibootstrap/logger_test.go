package cnibootstrap_test

import (
	"context"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/cnibootstrap"
)

// countingSink counts the calls of Init and WithCallDepth on a sink the
// caller owns, and the depth it was last derived with.
type countingSink struct {
	inits, derived atomic.Int32
	depth          int
}

func (s *countingSink) Init(logr.RuntimeInfo)          { s.inits.Add(1) }
func (*countingSink) Enabled(int) bool                 { return true }
func (*countingSink) Info(int, string, ...any)         {}
func (*countingSink) Error(error, string, ...any)      {}
func (s *countingSink) WithValues(...any) logr.LogSink { return s }
func (s *countingSink) WithName(string) logr.LogSink   { return s }
func (s *countingSink) WithCallDepth(d int) logr.LogSink {
	s.derived.Add(1)
	return &countingSink{depth: s.depth + d}
}

// TestLoggerNotReinitialised: the waiter wraps the caller's logger (from
// WithLogger or from ctx) without calling its sink's Init again — Init may
// mutate state the caller shares (funcr's adds to its call depth, so
// concurrent Waits raced there and each Wait shifted the caller's depth)
// — and tells the sink its one extra frame with WithCallDepth, so the
// caller a sink reports is the line of this package that logged.
func TestLoggerNotReinitialised(t *testing.T) {
	var lists, reviews atomic.Int64
	c := failingClients(&lists, &reviews)
	reqs := []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: configMapGVR, Namespace: "ns", Object: "x"}}
	short := func(ctx context.Context) (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, 50*time.Millisecond)
	}

	t.Run("init once", func(t *testing.T) {
		sink := &countingSink{}
		l := logr.New(sink) // the caller's Init
		w, err := cnibootstrap.New(c, reqs, cnibootstrap.WithLogger(l), cnibootstrap.WithBackoff(nopPolicy))
		require.NoError(t, err)
		for range 3 {
			ctx, cancel := short(context.Background())
			require.Error(t, w.Wait(ctx))
			cancel()
		}
		// From the context, through the package-level Wait.
		for range 2 {
			ctx, cancel := short(logr.NewContext(context.Background(), l))
			require.Error(t, cnibootstrap.Wait(ctx, c, reqs, cnibootstrap.WithBackoff(nopPolicy)))
			cancel()
		}
		assert.EqualValues(t, 1, sink.inits.Load(), "the caller's LogSink.Init")
		assert.EqualValues(t, 5, sink.derived.Load(), "WithCallDepth once per Wait")
		assert.Equal(t, 0, sink.depth, "the caller's sink keeps its depth")
	})

	t.Run("funcr concurrent, caller reported", func(t *testing.T) {
		var mu sync.Mutex
		var lines []string
		l := funcr.New(func(prefix, args string) {
			mu.Lock()
			defer mu.Unlock()
			lines = append(lines, args)
		}, funcr.Options{Verbosity: 1, LogCaller: funcr.All})
		w, err := cnibootstrap.New(c, reqs, cnibootstrap.WithLogger(l), cnibootstrap.WithBackoff(nopPolicy))
		require.NoError(t, err)
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				ctx := context.Background()
				if i%2 == 1 {
					ctx = logr.NewContext(ctx, l)
					ctx, cancel := short(ctx)
					defer cancel()
					assert.Error(t, cnibootstrap.Wait(ctx, c, reqs, cnibootstrap.WithBackoff(nopPolicy)))
					return
				}
				ctx, cancel := short(ctx)
				defer cancel()
				assert.Error(t, w.Wait(ctx))
			})
		}
		wg.Wait()
		// The caller's own logger still reports its caller.
		l.Info("from the test")
		mu.Lock()
		defer mu.Unlock()
		callerOf := regexp.MustCompile(`"caller"=\{"file"="([^"]+)"`)
		var failed int
		for _, line := range lines {
			m := callerOf.FindStringSubmatch(line)
			require.NotNil(t, m, "no caller in %s", line)
			switch {
			case regexp.MustCompile(`"msg"="watch failed; retrying"`).MatchString(line):
				failed++
				assert.Equal(t, "watch.go", m[1], "%s", line)
			case regexp.MustCompile(`"msg"="from the test"`).MatchString(line):
				assert.Equal(t, "logger_test.go", m[1], "%s", line)
			}
		}
		assert.Positive(t, failed, "no 'watch failed' line in %q", lines)
	})
}
