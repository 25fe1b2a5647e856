package readiness

import (
	"testing"
	"time"
)

// The pod watch must come back within seconds of a restarted apiserver,
// however many reconnects failed while it was down.
func TestPodWatchRetryIsCapped(t *testing.T) {
	const limit = 3 * time.Second // podWatchRetryMax plus half of it in jitter, as documented
	retry := newPodWatchRetry()
	retry.Reset()
	for i := range 100 { // far past the point where doubling from 100 ms would exceed it
		if d := retry.NextBackOff(); d <= 0 || d > limit {
			t.Fatalf("reconnect delay %d is %s, want in (0, %s]", i+1, d, limit)
		}
	}
}
