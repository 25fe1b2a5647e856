package readiness_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeboot/kubeboot/internal/testenv"
	"github.com/kubeboot/kubeboot/readiness"
)

// countingTransport counts the requests a client sends.
type countingTransport struct {
	next http.RoundTripper
	n    *atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(r)
}

// BenchmarkStaticPodReadyReaction measures the time from the UpdateStatus
// that makes the mirror pod Ready on a real kube-apiserver to Wait
// returning:
//
//   - watch: StaticPodReady as is, with a 5 s backoff floor, so Wait
//     reacts through its watch;
//   - poll-500ms: the same check with its watch hidden and a constant
//     500 ms backoff, the way kubeadm polls.
//
// The update is made at a random point of the poller's 500 ms cycle, as it
// would be for a waiter that has been waiting a while. ns/op counts only
// the measured span; median-ms is its median, requests/wait the apiserver
// requests the waiting client made per Wait.
func BenchmarkStaticPodReadyReaction(b *testing.B) {
	a := testenv.NewAPIServer(b)
	ctx := testCtx(b)
	admin, err := a.Clientset()
	if err != nil {
		b.Fatal(err)
	}
	var requests atomic.Int64
	cfg := a.Config()
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{next: rt, n: &requests} })
	waiter, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	createMirrorPod(ctx, b, admin, "bbbb", false)
	watched := readiness.StaticPodReady(waiter, podNS, podName, readiness.WithExpectedHash("bbbb"))
	polled := readiness.CheckFunc(watched.Check) // the same probe, without Watch

	for _, bc := range []struct {
		name  string
		check readiness.Check
		floor time.Duration
	}{
		{"watch", watched, 5 * time.Second},
		{"poll-500ms", polled, 500 * time.Millisecond},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var spans []time.Duration
			var perWait []int64
			b.StopTimer()
			for i := range b.N {
				if err := setPodStatus(ctx, admin, false); err != nil {
					b.Fatal(err)
				}
				opt, attempts := observer()
				requests.Store(0)
				done := goWait(ctx, bc.check, opt, constant(bc.floor))
				awaitAttempt(b, attempts, done, "the pod is not ready", failsWith("condition Ready is False"))
				if bc.check == watched {
					// Let the watch get established: two label changes,
					// each re-checked through it.
					for j := range 2 {
						patch := fmt.Sprintf(`{"metadata":{"labels":{"ping":"%d-%d"}}}`, i, j)
						if _, err := admin.CoreV1().Pods(podNS).Patch(ctx, podName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
							b.Fatal(err)
						}
						awaitAttempt(b, attempts, done, "the ping is seen", failsWith("condition Ready is False"))
					}
				}
				// A random phase of the poller's cycle.
				time.Sleep(rand.N(500 * time.Millisecond))
				pod, err := admin.CoreV1().Pods(podNS).Get(ctx, podName, metav1.GetOptions{})
				if err != nil {
					b.Fatal(err)
				}
				pod.Status = podStatus(true)

				b.StartTimer()
				start := time.Now()
				if _, err := admin.CoreV1().Pods(podNS).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
					b.Fatal(err)
				}
				err = awaitDone(b, done, "pod ready")
				span := time.Since(start)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				spans = append(spans, span)
				perWait = append(perWait, requests.Load())
			}
			slices.Sort(spans)
			b.ReportMetric(float64(spans[len(spans)/2].Microseconds())/1000, "median-ms")
			var total int64
			for _, n := range perWait {
				total += n
			}
			b.ReportMetric(float64(total)/float64(len(perWait)), "requests/wait")
		})
	}
}
