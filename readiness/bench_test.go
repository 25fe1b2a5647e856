package readiness_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
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

// steadyWindow is how long each iteration of the reaction benchmark
// counts the waiter's requests once its wait is in steady state.
const steadyWindow = 10 * time.Second

// BenchmarkStaticPodReadyReaction measures, on a real kube-apiserver, the
// time from the UpdateStatus that makes the mirror pod Ready to Wait
// returning, and the requests the waiting client sends while it waits:
//
//   - watch-default: StaticPodReady under Wait with default options, so
//     Wait reacts through its watch and judges the pods its events carry;
//   - poll-500ms: the same check with its watch hidden and a constant
//     500 ms backoff, the way kubeadm polls.
//
// Each iteration lets the wait settle (its watch is up, or the poller is
// polling), then counts the requests of a steadyWindow (steady-req/min),
// then makes the update at a random point of the poller's 500 ms cycle.
// ns/op counts only the reaction span; median-ms is its median;
// requests/wait all requests of one Wait, setup included.
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
		opts  []readiness.Option
	}{
		{"watch-default", watched, nil},
		{"poll-500ms", polled, []readiness.Option{constant(500 * time.Millisecond)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var spans []time.Duration
			var perWait []int64
			var perMinute []float64
			b.StopTimer()
			for i := range b.N {
				if err := setPodStatus(ctx, admin, false); err != nil {
					b.Fatal(err)
				}
				opt, attempts := observer()
				requests.Store(0)
				done := goWait(ctx, bc.check, append([]readiness.Option{opt}, bc.opts...)...)
				awaitAttempt(b, attempts, done, "the pod is not ready", failsWith("condition Ready is False"))
				if bc.check == watched {
					// Let the watch get established: two label changes,
					// each seen through it.
					for j := range 2 {
						patch := fmt.Sprintf(`{"metadata":{"labels":{"ping":"%d-%d"}}}`, i, j)
						if _, err := admin.CoreV1().Pods(podNS).Patch(ctx, podName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
							b.Fatal(err)
						}
						awaitAttempt(b, attempts, done, "the ping is seen", failsWith("condition Ready is False"))
					}
				}
				// Steady state: count the requests of a window.
				before := requests.Load()
				time.Sleep(steadyWindow)
				perMinute = append(perMinute, float64(requests.Load()-before)*float64(time.Minute)/float64(steadyWindow))

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
			slices.Sort(perMinute)
			b.ReportMetric(float64(spans[len(spans)/2].Microseconds())/1000, "median-ms")
			b.ReportMetric(perMinute[len(perMinute)/2], "steady-req/min")
			var total int64
			for _, n := range perWait {
				total += n
			}
			b.ReportMetric(float64(total)/float64(len(perWait)), "requests/wait")
		})
	}
}

// BenchmarkEtcdHealthyOneDown measures one EtcdHealthy check on a real
// three-member etcd cluster with all members up, then with one stopped,
// with and without WithMemberQuorum, side by side with an anchor that
// does what the check did before it answered early (and what a
// wait-for-every-endpoint probe does): Status of every endpoint through
// clientv3 (which waits for a connection to a dead member until the
// deadline), the read and the alarm list, all awaited, under the default
// 5 s attempt timeout. median-ms is the median check latency;
// x-all-up is its ratio to the same variant's all-up median.
func BenchmarkEtcdHealthyOneDown(b *testing.B) {
	c := testenv.NewCluster(b, testenv.WithMembers(3))
	ctx := testCtx(b)
	cli := c.Client()
	anchor := readiness.CheckFunc(func(ctx context.Context) error {
		var wg sync.WaitGroup
		errs := make([]error, len(cli.Endpoints())+2)
		for i, ep := range cli.Endpoints() {
			wg.Go(func() { _, errs[i] = cli.Status(ctx, ep) })
		}
		wg.Go(func() { _, errs[len(errs)-2] = cli.Get(ctx, readiness.DefaultHealthKey) })
		wg.Go(func() { _, errs[len(errs)-1] = cli.AlarmList(ctx) })
		wg.Wait()
		if errs[len(errs)-2] != nil {
			return errs[len(errs)-2]
		}
		for _, err := range errs[:len(errs)-2] {
			if err == nil {
				return nil
			}
		}
		return errors.New("no endpoint answered")
	})
	variants := []struct {
		name  string
		check readiness.Check
	}{
		{"EtcdHealthy", readiness.EtcdHealthy(cli)},
		{"EtcdHealthy-quorum", readiness.EtcdHealthy(cli, readiness.WithMemberQuorum())},
		{"anchor-await-all", anchor},
	}
	allUp := map[string]float64{}
	for _, state := range []string{"all-up", "one-down"} {
		if state == "one-down" {
			if err := c.Member(1).Stop(); err != nil {
				b.Fatal(err)
			}
		}
		for _, v := range variants {
			b.Run(state+"/"+v.name, func(b *testing.B) {
				var spans []time.Duration
				for range b.N {
					actx, cancel := context.WithTimeout(ctx, readiness.DefaultAttemptTimeout)
					start := time.Now()
					err := v.check.Check(actx)
					spans = append(spans, time.Since(start))
					cancel()
					if err != nil {
						b.Fatalf("%s, %s: %v", state, v.name, err)
					}
				}
				slices.Sort(spans)
				median := float64(spans[len(spans)/2].Microseconds()) / 1000
				b.ReportMetric(median, "median-ms")
				if state == "all-up" {
					allUp[v.name] = median
				} else if up := allUp[v.name]; up > 0 {
					b.ReportMetric(median/up, "x-all-up")
				}
			})
		}
	}
	if err := c.Member(1).Restart(ctx); err != nil {
		b.Fatal(err)
	}
}
