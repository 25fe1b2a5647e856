package cnibootstrap_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// BenchmarkWaitReaction measures, against a real kube-apiserver with
// Calico's CRD, typha's role and binding in place:
//
//   - reaction: the time from the last prerequisite (ClusterInformation
//     with datastoreReady true) being created to Wait returning, beside a
//     waiter that polls discovery and the object every second (the Tigera
//     operator's floor). Both wait for the same creation, which happens at
//     a random moment of the poller's period. Reported: the medians in ms
//     and their ratio.
//   - requests: the requests one Wait makes while it cannot finish,
//     counted with a rest.Config transport wrapper at 5 s and 20 s (and at
//     the end of a longer window set with KUBEBOOT_BENCH_WINDOW, e.g.
//     60s), split into lists and watches, and SubjectAccessReviews, beside
//     the 1 s poller's count over the same window; once with only the
//     object missing, once with nothing there yet.
func BenchmarkWaitReaction(b *testing.B) {
	a, c := server(b)
	ctx := context.Background()
	cs, err := a.Clientset()
	require.NoError(b, err)
	_, err = cs.CoreV1().ServiceAccounts("kube-system").Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "calico-typha", Namespace: "kube-system"}}, metav1.CreateOptions{})
	require.NoError(b, err)
	require.NoError(b, a.BindClusterRules(ctx, "kube-system", "calico-typha", "calico-typha", typhaRules))
	create(b, c.Dynamic, crdGVR, calicoCRD("clusterinformations", "ClusterInformation"))
	// Everything but the object holds (the CRD is served, typha's
	// permission has reached the authorizer) before measuring.
	testenv.Eventually(b, guard, 100*time.Millisecond, func() error {
		w, err := cnibootstrap.New(c, calicoRequirements("bench-settle"))
		if err != nil {
			return err
		}
		err = w.Check(ctx)
		var ue *cnibootstrap.UnmetError
		if !errors.As(err, &ue) || !slices.Equal(names(ue.Unmet), []string{strings.Replace(nameObject, "default", "bench-settle", 1)}) {
			return fmt.Errorf("not settled: %v", err)
		}
		return nil
	})

	var seq atomic.Int64
	b.Run("reaction", func(b *testing.B) {
		var watchMS, pollMS []float64
		for range b.N {
			name := fmt.Sprintf("bench-%d", seq.Add(1))
			dw, dp := reactOnce(b, c, name)
			watchMS = append(watchMS, ms(dw))
			pollMS = append(pollMS, ms(dp))
		}
		mw, mp := median(watchMS), median(pollMS)
		b.ReportMetric(mw, "watch-median-ms")
		b.ReportMetric(mp, "poll1s-median-ms")
		b.ReportMetric(mp/mw, "poll/watch")
		b.ReportMetric(0, "ns/op")
	})

	window := 20 * time.Second
	if s := os.Getenv("KUBEBOOT_BENCH_WINDOW"); s != "" {
		d, err := time.ParseDuration(s)
		require.NoError(b, err)
		window = max(d, window)
	}
	marks := []time.Duration{5 * time.Second, 20 * time.Second}
	if window > marks[len(marks)-1] {
		marks = append(marks, window)
	}
	for _, sc := range []struct {
		name string
		reqs func(n int64) []cnibootstrap.Requirement
	}{
		// Only the object is missing: the common wait of a CNI pod.
		{"requests/object-missing", func(n int64) []cnibootstrap.Requirement {
			return calicoRequirements(fmt.Sprintf("never-%d", n))
		}},
		// Nothing exists yet (no CRD, no role, permission denied): the
		// object and the review also run on the backoff floor.
		{"requests/nothing-yet", func(n int64) []cnibootstrap.Requirement {
			plural := fmt.Sprintf("felixconfigurations%d", n)
			return []cnibootstrap.Requirement{
				cnibootstrap.CRDEstablished{CRD: plural + ".crd.projectcalico.org"},
				cnibootstrap.ObjectExists{GVR: clusterInformationGVR.GroupVersion().WithResource(plural), Object: "default"},
				cnibootstrap.ClusterRoleExists{Role: plural},
				cnibootstrap.Allowed{ServiceAccount: typhaSA, Verb: "list", Group: "crd.projectcalico.org", Resource: plural},
			}
		}},
	} {
		b.Run(sc.name, func(b *testing.B) {
			sum := map[string]float64{}
			for range b.N {
				countOnce(b, a.Config(), sc.reqs(seq.Add(1)), window, marks, sum)
			}
			for unit, v := range sum {
				b.ReportMetric(v/float64(b.N), unit)
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// reactOnce starts a Wait and a 1 s poller for object name, creates the
// object at a random moment of the poller's period, and returns how long
// after the creation each returned.
func reactOnce(b *testing.B, c cnibootstrap.Clients, name string) (watch, poll time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	rec := newRecorder()
	w, err := cnibootstrap.New(c, calicoRequirements(name), cnibootstrap.WithProgress(rec.progress))
	require.NoError(b, err)

	var wg sync.WaitGroup
	defer wg.Wait()
	var watchDone, pollDone time.Time
	var watchErr, pollErr error
	wg.Go(func() { watchErr = w.Wait(ctx); watchDone = time.Now() })
	polling := make(chan struct{})
	wg.Go(func() { pollErr = pollEverySecond(ctx, c, name, polling); pollDone = time.Now() })

	require.NoError(b, rec.await("waiting for the object only", func(u []cnibootstrap.Unmet) bool {
		return len(u) == 1 && u[0].Reason == "not found"
	}))
	<-polling
	time.Sleep(rand.N(time.Second)) // the prerequisite arrives at a random moment of the poll period
	created := time.Now()
	_, err = c.Dynamic.Resource(clusterInformationGVR).Create(ctx, clusterInformation(name, true), metav1.CreateOptions{})
	require.NoError(b, err)
	wg.Wait()
	require.NoError(b, watchErr)
	require.NoError(b, pollErr)
	return watchDone.Sub(created), pollDone.Sub(created)
}

// pollEverySecond is the operator-style waiter: every second, read the
// discovery document of crd.projectcalico.org/v1 and, when it lists
// clusterinformations, get the object and look at datastoreReady. It
// closes started after its first poll.
func pollEverySecond(ctx context.Context, c cnibootstrap.Clients, name string, started chan<- struct{}) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for first := true; ; first = false {
		if pollOnce(ctx, c, name) {
			return nil
		}
		if first {
			close(started)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func pollOnce(ctx context.Context, c cnibootstrap.Clients, name string) bool {
	raw, err := c.Kube.Discovery().RESTClient().Get().AbsPath("/apis/crd.projectcalico.org/v1").Do(ctx).Raw()
	if err != nil {
		return false
	}
	var list metav1.APIResourceList
	if json.Unmarshal(raw, &list) != nil || !slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == "clusterinformations" }) {
		return false
	}
	obj, err := c.Dynamic.Resource(clusterInformationGVR).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	ready, _, _ := unstructured.NestedBool(obj.Object, "spec", "datastoreReady")
	return ready
}

// counter counts requests by kind.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		kind := "other"
		switch {
		case req.URL.Path == "/version":
			kind = "credcheck"
		case req.Method == http.MethodGet && req.URL.Query().Get("watch") == "true":
			kind = "watch"
		case req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/subjectaccessreviews"):
			kind = "sar"
		case req.Method == http.MethodGet:
			kind = "get/list"
		}
		c.mu.Lock()
		c.n[kind]++
		c.n["total"]++
		c.mu.Unlock()
		return rt.RoundTrip(req)
	})
}

func (c *counter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int, len(c.n))
	for k, v := range c.n {
		m[k] = v
	}
	return m
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// countOnce runs one Wait that cannot finish (the object never comes) and
// a 1 s poller beside it, each through its own counting transport, and
// adds their request counts at each of marks to sum.
func countOnce(b *testing.B, admin *rest.Config, reqs []cnibootstrap.Requirement, window time.Duration, marks []time.Duration, sum map[string]float64) {
	clientsFor := func(cnt *counter) cnibootstrap.Clients {
		cfg := rest.CopyConfig(admin)
		cfg.WrapTransport = cnt.wrap
		c, err := cnibootstrap.NewClients(cfg)
		require.NoError(b, err)
		return c
	}
	waiter, poller := &counter{n: map[string]int{}}, &counter{n: map[string]int{}}
	w, err := cnibootstrap.New(clientsFor(waiter), reqs)
	require.NoError(b, err)
	pc := clientsFor(poller)

	ctx, cancel := context.WithTimeout(context.Background(), window)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Wait(ctx) })
	wg.Go(func() { _ = pollEverySecond(ctx, pc, "never", make(chan struct{})) })

	start := time.Now()
	for _, at := range marks {
		// Snapshots just before the window's end, while Wait still runs.
		at = min(at, window-100*time.Millisecond)
		time.Sleep(time.Until(start.Add(at)))
		ws, ps := waiter.snapshot(), poller.snapshot()
		sec := int(at.Round(time.Second).Seconds())
		sum[fmt.Sprintf("waiter-req@%ds", sec)] += float64(ws["total"])
		sum[fmt.Sprintf("waiter-listwatch@%ds", sec)] += float64(ws["get/list"] + ws["watch"])
		sum[fmt.Sprintf("waiter-sar@%ds", sec)] += float64(ws["sar"])
		sum[fmt.Sprintf("waiter-credcheck@%ds", sec)] += float64(ws["credcheck"])
		sum[fmt.Sprintf("poll1s-req@%ds", sec)] += float64(ps["total"])
	}
	cancel()
	wg.Wait()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
