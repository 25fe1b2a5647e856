package readiness_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubeboot/kubeboot/internal/testenv"
	"github.com/kubeboot/kubeboot/readiness"
)

func TestAPIServerReadyNamesFailingChecks(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	c := testenv.NewCluster(t)
	p := testenv.NewProxyFor(t, c.Member(0).Endpoint())
	a := testenv.NewAPIServer(t, testenv.WithEtcd(c), testenv.WithEtcdServers("http://"+p.Addr()))
	ctx := testCtx(t)
	cs, err := a.Clientset()
	require.NoError(t, err)
	check := readiness.APIServerReady(cs.Discovery().RESTClient())
	require.NoError(t, readiness.Wait(ctx, check))

	// Cut etcd off: the apiserver's etcd readiness check fails after its
	// own timeout, a few seconds later.
	p.Blackhole(true)
	var last error
	testenv.Eventually(t, guard, 200*time.Millisecond, func() error {
		actx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		last = check.Check(actx)
		var re *readiness.ReadyzError
		if errors.As(last, &re) && slices.ContainsFunc(re.Failing, func(n string) bool { return strings.HasPrefix(n, "etcd") }) {
			return nil
		}
		return fmt.Errorf("no failing etcd check named yet: %v", last)
	})
	t.Logf("with etcd blackholed: %v", last)
	var re *readiness.ReadyzError
	require.ErrorAs(t, last, &re)
	assert.Equal(t, http.StatusInternalServerError, re.StatusCode)
	assert.Contains(t, last.Error(), "kube-apiserver not ready (HTTP 500): ")
	assert.Contains(t, last.Error(), "[-]etcd")
	assert.NotErrorIs(t, last, readiness.ErrAccessDenied)
	assert.NotErrorIs(t, last, readiness.ErrUnreachable)

	// Wait, giving up, carries the same reason. (With etcd silent, one
	// /readyz takes the apiserver's own etcd timeouts, a few seconds.)
	short, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = readiness.Wait(short, check, readiness.WithAttemptTimeout(8*time.Second))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "waiting for kube-apiserver")
	assert.Contains(t, err.Error(), "[-]etcd")

	// Reconnect etcd (cutting the connections whose bytes were dropped):
	// ready again.
	p.Pass()
	p.ResetAll()
	require.NoError(t, readiness.Wait(ctx, check))
}

// fakeReadyz is an HTTP server answering /readyz the way a kube-apiserver
// does in the given mode, recording the query strings it was sent.
type fakeReadyz struct {
	mu      sync.Mutex
	mode    string
	queries []url.Values
}

func (f *fakeReadyz) set(mode string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mode, f.queries = mode, nil
}

func (f *fakeReadyz) seen() []url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries
}

func (f *fakeReadyz) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	mode := f.mode
	f.queries = append(f.queries, r.URL.Query())
	f.mu.Unlock()
	if r.URL.Path != "/readyz" {
		http.NotFound(w, r)
		return
	}
	const list = "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n[+]informer-sync ok\n[-]poststarthook/rbac/bootstrap-roles failed: reason withheld\n"
	_, verbose := r.URL.Query()["verbose"]
	switch mode {
	case "ok":
		_, _ = w.Write([]byte("ok"))
	case "listed":
		http.Error(w, list+"readyz check failed", http.StatusInternalServerError)
	case "verbose-only":
		if verbose {
			http.Error(w, list+"readyz check failed", http.StatusInternalServerError)
			return
		}
		http.Error(w, "readyz check failed", http.StatusInternalServerError)
	case "unlisted":
		http.Error(w, "overloaded, try later", http.StatusServiceUnavailable)
	case "401":
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
	case "403":
		http.Error(w, `forbidden: User "system:anonymous" cannot get path "/readyz"`, http.StatusForbidden)
	}
}

func TestAPIServerReadyClassifiesAnswers(t *testing.T) {
	f := &fakeReadyz{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	require.NoError(t, err)
	check := readiness.APIServerReady(cs.Discovery().RESTClient(), "poststarthook/start-apiextensions-controllers", "informer-sync")
	ctx := testCtx(t)

	tests := []struct {
		mode     string
		want     string // the error, "" for ready
		is       error
		failing  []string
		requests int
	}{
		{mode: "ok", requests: 1},
		{mode: "listed", want: "kube-apiserver not ready (HTTP 500): [-]etcd, [-]poststarthook/rbac/bootstrap-roles",
			failing: []string{"etcd", "poststarthook/rbac/bootstrap-roles"}, requests: 1},
		{mode: "verbose-only", want: "kube-apiserver not ready (HTTP 500): [-]etcd, [-]poststarthook/rbac/bootstrap-roles",
			failing: []string{"etcd", "poststarthook/rbac/bootstrap-roles"}, requests: 2},
		{mode: "unlisted", want: "kube-apiserver not ready (HTTP 503): overloaded, try later", requests: 2},
		{mode: "401", want: "kube-apiserver /readyz: HTTP 401: access denied (a credential or RBAC problem)", is: readiness.ErrAccessDenied, requests: 1},
		{mode: "403", want: "kube-apiserver /readyz: HTTP 403: access denied (a credential or RBAC problem)", is: readiness.ErrAccessDenied, requests: 1},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			f.set(tt.mode)
			err := check.Check(ctx)
			queries := f.seen()
			require.Len(t, queries, tt.requests)
			for _, q := range queries {
				assert.Equal(t, []string{"poststarthook/start-apiextensions-controllers", "informer-sync"}, q["exclude"])
			}
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			if tt.is != nil {
				assert.ErrorIs(t, err, tt.is)
			}
			if tt.failing != nil {
				var re *readiness.ReadyzError
				require.ErrorAs(t, err, &re)
				assert.Equal(t, tt.failing, re.Failing)
			}
		})
	}

	t.Run("connection refused", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		cs, err := kubernetes.NewForConfig(&rest.Config{Host: dead.URL})
		require.NoError(t, err)
		err = readiness.APIServerReady(cs.Discovery().RESTClient()).Check(ctx)
		require.ErrorIs(t, err, readiness.ErrUnreachable)
		assert.Contains(t, err.Error(), "connection refused")
		assert.NotErrorIs(t, err, readiness.ErrAccessDenied)
	})

	t.Run("bad input", func(t *testing.T) {
		var nilREST *rest.RESTClient
		for _, c := range []readiness.Check{
			readiness.APIServerReady(nil),
			readiness.APIServerReady(nilREST),
			readiness.APIServerReady(cs.Discovery().RESTClient(), ""),
			readiness.APIServerReady(cs.Discovery().RESTClient(), "etcd ok"),
		} {
			require.ErrorIs(t, readiness.Wait(ctx, c), readiness.ErrInvalid)
		}
	})
}
