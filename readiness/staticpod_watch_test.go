package readiness_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/kubeboot/kubeboot/internal/testenv"
	"github.com/kubeboot/kubeboot/readiness"
)

// setPodCondition writes the mirror pod's status as the kubelet would,
// with reason on the Ready condition, so that each write is told apart in
// the check's failure ("condition Ready is False (reason)").
func setPodCondition(ctx context.Context, cs kubernetes.Interface, ready bool, reason string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := cs.CoreV1().Pods(podNS).Get(ctx, podName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod.Status = podStatus(ready)
		pod.Status.Conditions[0].Reason = reason
		_, err = cs.CoreV1().Pods(podNS).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
}

func patchPodLabel(ctx context.Context, t testing.TB, cs kubernetes.Interface, value string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{"ping":%q}}}`, value)
	_, err := cs.CoreV1().Pods(podNS).Patch(ctx, podName, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	require.NoError(t, err)
}

func passes(n int) func(readiness.Attempt) bool {
	return func(a readiness.Attempt) bool { return a.Err == nil && a.Passes == n }
}

// slowGets delays the client's GETs of single objects (not lists or
// watches) by delay: a slow read path.
type slowGets struct {
	next  http.RoundTripper
	delay time.Duration
}

func (s slowGets) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && r.URL.Query().Get("watch") != "true" && !strings.HasSuffix(r.URL.Path, "/pods") {
		t := time.NewTimer(s.delay)
		defer t.Stop()
		select {
		case <-r.Context().Done():
			return nil, r.Context().Err()
		case <-t.C:
		}
	}
	return s.next.RoundTrip(r)
}

// A NotReady blip between two watch events (Ready → NotReady → Ready,
// written back to back through UpdateStatus) is seen: it fails an attempt
// and restarts WithStability's count, so Wait does not return across it.
// The waiter's reads of the pod are slowed down, so a check that re-read
// the pod on each change signal would read the second Ready and count it
// as the second pass; one that judges the pod its events carry does not
// read.
//
// The pod is made by hand: the test needs two status writes back to back,
// closer together than any read, at a moment it chooses. A kubelet writes
// a pod's status when a probe or the runtime changes it (a probe runs at
// most once a second), so it cannot produce that blip on cue.
// TestStaticPodReadyRealKubeletUpgrade shows the same on a real kubelet,
// holding Wait while the kubelet's probe flips the pod NotReady and back.
func TestStaticPodReadySeesBlip(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	a := testenv.NewAPIServer(t)
	ctx := testCtx(t)
	cs, err := a.Clientset()
	require.NoError(t, err)
	createMirrorPod(ctx, t, cs, "bbbb", false)
	cfg := a.Config()
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return slowGets{next: rt, delay: time.Second} })
	waiter, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)

	check := readiness.StaticPodReady(waiter, podNS, podName, readiness.WithExpectedHash("bbbb"))
	opt, attempts := observer()
	// Two passes; with a ten-minute floor only watch events make Wait
	// look again.
	done := goWait(ctx, check, opt, tenMinutes, readiness.WithStability(2, 0))
	awaitAttempt(t, attempts, done, "the pod is not ready", failsWith("condition Ready is False"))
	// The watch is up: a change is seen through it.
	require.NoError(t, setPodCondition(ctx, cs, false, "WatchUp"))
	awaitAttempt(t, attempts, done, "the change is seen", failsWith("condition Ready is False (WatchUp)"))

	require.NoError(t, setPodCondition(ctx, cs, true, ""))
	awaitAttempt(t, attempts, done, "the first pass", passes(1))
	stillWaiting(t, done, "one pass of two")

	// The blip: two writes back to back.
	pod, err := cs.CoreV1().Pods(podNS).Get(ctx, podName, metav1.GetOptions{})
	require.NoError(t, err)
	pod.Status = podStatus(false)
	pod.Status.Conditions[0].Reason = "Blip"
	pod, err = cs.CoreV1().Pods(podNS).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	require.NoError(t, err)
	pod.Status = podStatus(true)
	_, err = cs.CoreV1().Pods(podNS).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	require.NoError(t, err)
	blip := awaitAttempt(t, attempts, done, "the blip is seen", failsWith("condition Ready is False (Blip)"))
	assert.Zero(t, blip.Passes)
	awaitAttempt(t, attempts, done, "Ready again after the blip", passes(1))
	stillWaiting(t, done, "one pass of two after the blip")

	// Another event: the second pass since the blip.
	patchPodLabel(ctx, t, cs, "after-blip")
	require.NoError(t, awaitDone(t, done, "stable after the blip"))
	last := awaitAttempt(t, attempts, nil, "the stable attempt", func(a readiness.Attempt) bool { return a.Stable })
	assert.Equal(t, 2, last.Passes)
}

// requestCounter counts a client's requests to the apiserver by kind.
type requestCounter struct {
	next http.RoundTripper
	mu   sync.Mutex
	n    map[string]int
}

func (c *requestCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	kind := r.Method
	switch {
	case r.Method != http.MethodGet:
	case r.URL.Query().Get("watch") == "true":
		kind = "WATCH"
	case strings.HasSuffix(r.URL.Path, "/pods"):
		kind = "LIST"
	}
	c.mu.Lock()
	c.n[kind]++
	c.mu.Unlock()
	return c.next.RoundTrip(r)
}

func (c *requestCounter) counts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// Under Wait with default options, the requests StaticPodReady makes do
// not grow with the wait: one list and one watch, and a GET only before
// the watch is up, however many attempts the changes and the backoff
// cause. The pod is a real kubelet's mirror pod, kept not Ready by its
// failing readiness probe; the changes are label patches on it, each
// awaited as an attempt. Counted at the client's transport, not timed.
func TestStaticPodReadyRequestsBounded(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	a := testenv.NewAPIServer(t)
	n := newNode(t, a, "node1")
	ctx := testCtx(t)
	admin, err := a.Clientset()
	require.NoError(t, err)
	probe := newProbeServer(t)
	require.NoError(t, n.WriteStaticPod(staticPod("kube-apiserver", "registry.k8s.io/kube-apiserver:v1.36.3", probe, "/readyz")))
	pod := awaitPod(ctx, t, admin, podNS, podName, func(p *corev1.Pod) error {
		if p == nil || p.Status.Phase != corev1.PodRunning {
			return errors.New("mirror pod not there or not Running")
		}
		return nil
	})

	counter := &requestCounter{n: map[string]int{}}
	cfg := a.Config()
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { counter.next = rt; return counter })
	waiter, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)

	check := readiness.StaticPodReady(waiter, podNS, podName, readiness.WithExpectedHash(pod.Annotations[hashAnnotation]))
	opt, attempts := observer()
	done := goWait(ctx, check, opt)
	last := awaitAttempt(t, attempts, done, "the pod is not ready", failsWith("condition Ready is False"))
	const changes = 30
	for i := range changes {
		patchPodLabel(ctx, t, admin, fmt.Sprintf("change-%d", i))
		last = awaitAttempt(t, attempts, done, fmt.Sprintf("change %d is seen", i), func(a readiness.Attempt) bool { return a.N > last.N })
	}
	probe.set("/readyz", true)
	require.NoError(t, awaitDone(t, done, "pod ready"))
	close(attempts)
	total := 0 // the attempts: the N of the last one
	for a := range attempts {
		total = a.N
	}

	got := counter.counts()
	t.Logf("%d attempts, requests: %v", total, got)
	require.Greater(t, total, changes, "every change made an attempt")
	assert.LessOrEqual(t, got["GET"], 2, "GETs of the pod: only before the watch is up")
	assert.LessOrEqual(t, got["LIST"], 2)
	assert.LessOrEqual(t, got["WATCH"], 2)
	assert.Zero(t, got["POST"]+got["PUT"]+got["PATCH"]+got["DELETE"])
}
