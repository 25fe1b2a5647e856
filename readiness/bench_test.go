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

	"github.com/cenkalti/backoff/v4"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

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

// phasedPoll is a poller's backoff: a first delay drawn uniformly from
// [0, period), so that the poller's cycle has a random phase against the
// moment the pod turns Ready, then period, constant.
type phasedPoll struct {
	period time.Duration
	first  bool
}

func (p *phasedPoll) Reset() { p.first = true }

func (p *phasedPoll) NextBackOff() time.Duration {
	if p.first {
		p.first = false
		return rand.N(p.period)
	}
	return p.period
}

// reactionWaiter is one waiter of BenchmarkStaticPodReadyReaction and its
// measurements.
type reactionWaiter struct {
	name   string
	period time.Duration // 0: the watch
	cs     kubernetes.Interface
	reqs   atomic.Int64
	spans  []time.Duration
	perMin []float64
}

// BenchmarkStaticPodReadyReaction measures, on a real (hollow) kubelet,
// how fast a wait for a replaced static pod returns: each iteration
// rewrites the manifest of a static pod whose mirror pod is Ready, and
// three waiters, started on the old pod, wait for the new one with
// WithHashChangedFrom at the same time:
//
//   - watch: StaticPodReady under Wait with default options, reacting
//     through its watch;
//   - poll-500ms: the same check with its watch hidden and a constant
//     500 ms backoff, the way kubeadm polls;
//   - poll-20s: the same with 20 s, the way RKE2 v1.31.8 polled its static
//     pods (through the CRI) before releasing its hooks.
//
// Each poller starts at a random phase of its period. The reaction of a
// waiter is the time from the new mirror pod becoming Ready on the server
// — the kubelet's status write committed to the apiserver's etcd, seen
// by an etcd watch on the pod's key in this process — to Wait returning;
// the kubelet's own replacement (about 11 s) is not counted. Reported: the median reaction of each
// (<name>-median-ms), its ratio to the watch's (<name>/watch), and the
// requests each waiter's client sent per minute of waiting
// (<name>-req/min). ns/op is a whole iteration, replacement included.
// Run with -benchtime=Nx (an iteration takes 15 to 35 s).
func BenchmarkStaticPodReadyReaction(b *testing.B) {
	a := testenv.NewAPIServer(b)
	n := newNode(b, a, "node1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	admin, err := a.Clientset()
	if err != nil {
		b.Fatal(err)
	}
	const name = "kube-apiserver"
	mirror := n.MirrorPodName(name)
	manifest := func(i int) *corev1.Pod {
		return staticPod(name, fmt.Sprintf("registry.k8s.io/kube-apiserver:v1.31.%d", i), nil, "")
	}
	if err := n.WriteStaticPod(manifest(0)); err != nil {
		b.Fatal(err)
	}
	pod, _, err := watchPod(ctx, admin, podNS, mirror, nil, readyMirror(""))
	if err != nil {
		b.Fatal(err)
	}
	hash := pod.Annotations[hashAnnotation]

	waiters := []*reactionWaiter{{name: "watch"}, {name: "poll-500ms", period: 500 * time.Millisecond}, {name: "poll-20s", period: 20 * time.Second}}
	for _, w := range waiters {
		cfg := a.Config()
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{next: rt, n: &w.reqs} })
		if w.cs, err = kubernetes.NewForConfig(cfg); err != nil {
			b.Fatal(err)
		}
	}

	b.ResetTimer()
	for i := range b.N {
		type result struct {
			err  error
			at   time.Time
			took time.Duration
		}
		results := make([]chan result, len(waiters))
		for j, w := range waiters {
			check := readiness.StaticPodReady(w.cs, podNS, mirror, readiness.WithHashChangedFrom(hash))
			opts := []readiness.Option{}
			if w.period > 0 {
				check = readiness.CheckFunc(check.Check) // the same probe, without Watch
				opts = append(opts, readiness.WithBackoff(func() backoff.BackOff { return &phasedPoll{period: w.period} }))
			}
			opt, attempts := observer()
			results[j] = make(chan result, 1)
			w.reqs.Store(0)
			start := time.Now()
			done := make(chan error, 1)
			go func() {
				err := readiness.Wait(ctx, check, append(opts, opt)...)
				at := time.Now()
				results[j] <- result{err: err, at: at, took: at.Sub(start)}
				done <- err
			}()
			awaitAttempt(b, attempts, done, w.name+" sees the old pod", failsWith("is still the old one"))
		}
		listed := make(chan struct{})
		type seen struct {
			pod *corev1.Pod
			at  time.Time
			err error
		}
		ready := make(chan seen, 1)
		go func() {
			p, at, err := watchStoredPod(ctx, a.Etcd().Client(), "/registry/pods/"+podNS+"/"+mirror, listed, readyMirror(hash))
			ready <- seen{p, at, err}
		}()
		select {
		case <-listed:
		case r := <-ready:
			b.Fatalf("watching the stored pod: %v", r.err)
		}
		if err := n.WriteStaticPod(manifest(i + 1)); err != nil {
			b.Fatal(err)
		}
		r := <-ready
		if r.err != nil {
			b.Fatal(r.err)
		}
		for j, w := range waiters {
			res := <-results[j]
			if res.err != nil {
				b.Fatalf("%s: %v", w.name, res.err)
			}
			w.spans = append(w.spans, res.at.Sub(r.at))
			w.perMin = append(w.perMin, float64(w.reqs.Load())*float64(time.Minute)/float64(res.took))
		}
		hash = r.pod.Annotations[hashAnnotation]
	}
	b.StopTimer()
	reportReactions(b, waiters)
}

// watchStoredPod watches the pod's key in the apiserver's etcd until cond
// accepts the pod stored there (nil: deleted), and returns it and when
// the event arrived. started is closed once the watch is set up.
func watchStoredPod(ctx context.Context, cli *clientv3.Client, key string, started chan<- struct{}, cond func(*corev1.Pod) error) (*corev1.Pod, time.Time, error) {
	decode := func(v []byte) (*corev1.Pod, error) {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(v, nil, nil)
		if err != nil {
			return nil, err
		}
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return nil, fmt.Errorf("%s holds a %T", key, obj)
		}
		return pod, nil
	}
	get, err := cli.Get(ctx, key)
	if err != nil {
		return nil, time.Time{}, err
	}
	if len(get.Kvs) > 0 {
		pod, err := decode(get.Kvs[0].Value)
		if err != nil {
			return nil, time.Time{}, err
		}
		if cond(pod) == nil {
			close(started)
			return pod, time.Now(), nil
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := cli.Watch(wctx, key, clientv3.WithRev(get.Header.Revision+1))
	close(started)
	for resp := range events {
		at := time.Now()
		if err := resp.Err(); err != nil {
			return nil, time.Time{}, err
		}
		for _, ev := range resp.Events {
			var pod *corev1.Pod
			if ev.Type == clientv3.EventTypePut {
				if pod, err = decode(ev.Kv.Value); err != nil {
					return nil, time.Time{}, err
				}
			}
			if cond(pod) == nil {
				return pod, at, nil
			}
		}
	}
	return nil, time.Time{}, fmt.Errorf("watch of %s ended: %w", key, ctx.Err())
}

// reportReactions reports each waiter's median reaction, its ratio to the
// watch's, and its median requests per minute.
func reportReactions(b *testing.B, waiters []*reactionWaiter) {
	median := func(xs []float64) float64 {
		xs = slices.Clone(xs)
		slices.Sort(xs)
		if len(xs)%2 == 1 {
			return xs[len(xs)/2]
		}
		return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	var watchMedian float64
	for _, w := range waiters {
		ms := make([]float64, len(w.spans))
		for k, d := range w.spans {
			ms[k] = float64(d.Microseconds()) / 1000
		}
		m := median(ms)
		b.ReportMetric(m, w.name+"-median-ms")
		b.ReportMetric(median(w.perMin), w.name+"-req/min")
		if w.period == 0 {
			watchMedian = m
		} else if watchMedian > 0 {
			b.ReportMetric(m/watchMedian, w.name+"/watch")
		}
		b.Logf("%s reactions (ms): %v", w.name, ms)
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
