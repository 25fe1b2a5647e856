package apiserverdisco_test

import (
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// countingPolicy returns a fixed delay and counts the attempts that asked
// for it, with the time of each.
type countingPolicy struct {
	b     broadcast
	delay time.Duration
	mu    sync.Mutex
	at    []time.Time
}

func (p *countingPolicy) NextBackOff() time.Duration {
	p.mu.Lock()
	p.at = append(p.at, time.Now())
	p.mu.Unlock()
	p.b.signal()
	return p.delay
}

func (p *countingPolicy) Reset() {}

func (p *countingPolicy) times() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.at...)
}

// TestBackoffFloor: a policy whose delays are zero, negative (but not
// backoff.Stop) or below MinRetryDelay must not make a retry loop spin.
// Every list fails at once (a request timeout of a microsecond), so the
// loop runs as fast as its delays allow; the attempts are counted.
func TestBackoffFloor(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	for name, delay := range map[string]time.Duration{
		"zero":       0,
		"negative":   -5 * time.Second,
		"nanosecond": time.Nanosecond,
		"just under": apiserverdisco.MinRetryDelay - time.Microsecond,
	} {
		t.Run(name, func(t *testing.T) {
			p := &countingPolicy{delay: delay}
			var errs errorLog
			w := newWatcher(t, ctx, apiserverdisco.EtcdPrefix(c.Client(), "/test/floor/"),
				apiserverdisco.WithRequestTimeout(time.Microsecond),
				apiserverdisco.WithBackoff(func() backoff.BackOff { return p }),
				apiserverdisco.WithErrorHandler(errs.handle))
			const attempts = 20
			awaitCond(t, &p.b, "20 failed attempts", func() bool { return len(p.times()) >= attempts })
			require.NoError(t, w.Close())
			at := p.times()
			// n attempts take at least (n-1) floors: count how many fit in
			// the time they really took (wall time only bounds from above,
			// so a slow machine cannot fail this).
			elapsed := at[len(at)-1].Sub(at[0])
			allowed := int(elapsed/apiserverdisco.MinRetryDelay) + 1
			require.LessOrEqual(t, len(at), allowed, "%d attempts in %s: the delay floor is %s", len(at), elapsed, apiserverdisco.MinRetryDelay)
			require.NotEmpty(t, errs.all(), "the failures were reported")
		})
	}
}
