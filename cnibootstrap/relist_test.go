package cnibootstrap_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// parkPolicy answers an hour, and says whether it was asked: a loop that
// asks it is parked for the rest of the test.
type parkPolicy struct{ asked atomic.Bool }

func (p *parkPolicy) NextBackOff() time.Duration { p.asked.Store(true); return time.Hour }
func (*parkPolicy) Reset()                       {}

// parkFactory gives each loop a policy of its own and counts those asked.
type parkFactory struct {
	mu       sync.Mutex
	policies []*parkPolicy
}

func (f *parkFactory) new() backoff.BackOff {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := &parkPolicy{}
	f.policies = append(f.policies, p)
	return p
}

func (f *parkFactory) parked() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, p := range f.policies {
		if p.asked.Load() {
			n++
		}
	}
	return n
}

// stubAPI is an apiserver stand-in (pure client-side logic: how the
// waiter's loops pace themselves against answers a real apiserver gives
// only in rare races) that counts each distinct request.
type stubAPI struct {
	mode  string
	total atomic.Int64
	mu    sync.Mutex
	hits  map[string]int
}

func (s *stubAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.total.Add(1)
	watching := r.URL.Query().Get("watch") == "true"
	key := r.Method + " " + r.URL.Path
	switch {
	case watching:
		key += " watch " + r.URL.Query().Get("fieldSelector") + r.URL.Query().Get("labelSelector")
	case r.Method == http.MethodGet:
		key += " list " + r.URL.Query().Get("fieldSelector") + r.URL.Query().Get("labelSelector") + r.URL.Query().Get("limit")
	}
	s.mu.Lock()
	s.hits[key]++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	gone := func(reason string) {
		w.WriteHeader(http.StatusGone)
		fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":%q,"code":410,"message":"injected"}`, reason)
	}
	switch {
	case s.mode == "gone":
		gone("Gone")
	case r.Method == http.MethodPost: // a SubjectAccessReview: denied
		fmt.Fprint(w, `{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","status":{"allowed":false}}`)
	case !watching:
		fmt.Fprint(w, `{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":"5"},"items":[]}`)
	case s.mode == "watch expires":
		fmt.Fprintln(w, `{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Expired","code":410,"message":"too old resource version"}}`)
	case s.mode == "watch closes":
		fmt.Fprintln(w, `{"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"6"}}}`)
	}
}

// TestExpiredNeverSpins: no list-and-watch loop retries without its
// backoff floor. A 410 Gone from a list (which a list without a
// resourceVersion never gets from a real apiserver) goes through the
// floor like any error; a watch that expires is relisted at once only
// once in a row without events in between; a watch the server ends at
// once is re-opened after the floor. Every loop here (two objects, two
// RBAC watches, a review, an EndpointSlice set, the credential check)
// must park in its hour-long floor after at most its bound of requests
// (a relist after an expired RBAC watch also re-runs the review: events
// may have been missed).
func TestExpiredNeverSpins(t *testing.T) {
	for _, tc := range []struct {
		mode                             string
		maxLists, maxWatches, maxReviews int
	}{
		{mode: "gone", maxLists: 1, maxReviews: 1},
		{mode: "watch expires", maxLists: 2, maxWatches: 2, maxReviews: 3},
		{mode: "watch closes", maxLists: 1, maxWatches: 1, maxReviews: 1},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			stub := &stubAPI{mode: tc.mode, hits: map[string]int{}}
			srv := httptest.NewServer(stub)
			defer srv.Close()
			c, err := cnibootstrap.NewClients(&rest.Config{Host: srv.URL, QPS: -1})
			require.NoError(t, err)
			var f parkFactory
			w, err := cnibootstrap.New(c, []cnibootstrap.Requirement{
				cnibootstrap.ObjectExists{GVR: configMapGVR, Namespace: "ns", Object: "x"},
				cnibootstrap.ClusterRoleExists{Role: "r"},
				cnibootstrap.Allowed{ServiceAccount: types.NamespacedName{Namespace: "ns", Name: "sa"}, Verb: "list", Resource: "pods"},
				cnibootstrap.ServiceReady{Namespace: "ns", Service: "svc"},
			}, cnibootstrap.WithBackoff(f.new))
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), guard)
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- w.Wait(ctx) }()
			// 7 loops, each parked once it asks its policy; a loop that
			// spins never asks, and its requests pile up.
			const loops = 7
			testenv.Eventually(t, guard, 5*time.Millisecond, func() error {
				if p, n := f.parked(), stub.total.Load(); p < loops && n < 500 {
					return fmt.Errorf("%d loops parked, %d requests", p, n)
				}
				return nil
			})
			cancel()
			require.ErrorIs(t, <-errc, context.Canceled)
			stub.mu.Lock()
			defer stub.mu.Unlock()
			assert.Equal(t, loops, f.parked(), "loops parked (%d requests: %v)", stub.total.Load(), stub.hits)
			for key, n := range stub.hits {
				switch {
				case strings.HasPrefix(key, "POST "):
					assert.LessOrEqual(t, n, tc.maxReviews, "%s", key)
				case strings.Contains(key, " watch "):
					assert.LessOrEqual(t, n, tc.maxWatches, "%s", key)
				default:
					assert.LessOrEqual(t, n, tc.maxLists, "%s", key)
				}
			}
		})
	}
}
