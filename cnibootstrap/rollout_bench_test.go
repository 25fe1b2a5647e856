package cnibootstrap_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubeboot/kubeboot/cnibootstrap"
)

// BenchmarkRolloutReaction measures, on the shared node cluster (real
// controller-manager, scheduler and hollow kubelets), an upgrade of a
// Deployment of two, side by side in one run:
//
//   - reaction: from "the rollout is complete on the server" to the waiter
//     returning, for RolledOut (cnibootstrap), a `kubectl rollout status`
//     style watch, and a Helm 3 `--wait` style poller (every 2 s: get the
//     Deployment, list its ReplicaSets, the new one's ready replicas).
//     Each is judged against its own notion of complete, as seen by an
//     independent observer (watches on the Deployment, its ReplicaSets
//     and its pods, timestamping each event on arrival): for RolledOut,
//     the new ReplicaSet available and no old pod left running; for
//     kubectl, its status counts; for Helm, the new ReplicaSet's ready
//     replicas. Reported: the medians in ms and their ratios.
//   - requests per minute while waiting: a rollout that cannot finish
//     (the new pods' readiness probe fails), 20 s, each waiter through
//     its own counting transport.
func BenchmarkRolloutReaction(b *testing.B) {
	env := nodeCluster(b)
	ns := namespace(b, env.cs)
	ctx := context.Background()
	var seq int
	b.Run("reaction", func(b *testing.B) {
		var cnib, kubectl, helm []float64
		for range b.N {
			seq++
			name := fmt.Sprintf("bench-%d", seq)
			dc, dk, dh := rolloutOnce(b, env, ns, name)
			cnib, kubectl, helm = append(cnib, ms(dc)), append(kubectl, ms(dk)), append(helm, ms(dh))
		}
		mc, mk, mh := median(cnib), median(kubectl), median(helm)
		b.ReportMetric(mc, "cnib-median-ms")
		b.ReportMetric(mk, "kubectl-median-ms")
		b.ReportMetric(mh, "helm2s-median-ms")
		b.ReportMetric(mh/mc, "helm/cnib")
		b.ReportMetric(mk/mc, "kubectl/cnib")
		b.ReportMetric(0, "ns/op")
	})
	b.Run("requests", func(b *testing.B) {
		const window = 20 * time.Second
		sum := map[string]float64{}
		for range b.N {
			seq++
			name := fmt.Sprintf("stuck-%d", seq)
			srv := newSwitchServer(b, false)
			createDeployment(b, env.cs, ns, name, imageV1, srv.probe())
			counters := map[string]*counter{"cnib": {n: map[string]int{}}, "kubectl": {n: map[string]int{}}, "helm2s": {n: map[string]int{}}}
			cfg := func(cnt *counter) *rest.Config {
				c := rest.CopyConfig(env.api.Config())
				c.WrapTransport = cnt.wrap
				return c
			}
			cc, err := cnibootstrap.NewClients(cfg(counters["cnib"]))
			require.NoError(b, err)
			kc, err := kubernetes.NewForConfig(cfg(counters["kubectl"]))
			require.NoError(b, err)
			hc, err := kubernetes.NewForConfig(cfg(counters["helm2s"]))
			require.NoError(b, err)
			wctx, cancel := context.WithTimeout(ctx, window)
			var wg sync.WaitGroup
			wg.Go(func() {
				_ = cnibootstrap.Wait(wctx, cc, []cnibootstrap.Requirement{cnibootstrap.RolledOut{Kind: cnibootstrap.Deployment, Namespace: ns, Workload: name}})
			})
			wg.Go(func() { _ = kubectlRolloutStatus(wctx, kc, ns, name) })
			wg.Go(func() { _ = helmWait(wctx, hc, ns, name) })
			wg.Wait()
			cancel()
			for k, c := range counters {
				sum[k+"-req/min"] += float64(c.snapshot()["total"]) * float64(time.Minute) / float64(window)
			}
		}
		for k, v := range sum {
			b.ReportMetric(v/float64(b.N), k)
		}
		b.ReportMetric(0, "ns/op")
	})
}

// createDeployment creates a Deployment of two with a surge of one and no
// unavailability, and a readiness probe when probe is set.
func createDeployment(b testing.TB, cs kubernetes.Interface, ns, name, image string, probe *corev1.Probe) {
	labels := map[string]string{"app": name}
	spec := podSpec(image)
	spec.Containers[0].ReadinessProbe = probe
	_, err := cs.AppsV1().Deployments(ns).Create(context.Background(), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: ptr(intstr.FromInt32(1)), MaxUnavailable: ptr(intstr.FromInt32(0))}},
		},
	}, metav1.CreateOptions{})
	require.NoError(b, err)
}

// rolloutOnce creates a Deployment, waits for it, upgrades it, and runs
// the three waiters (started at once, the poller at a random phase of its
// period) and the observer on the upgrade; it returns each waiter's
// reaction to its own notion of complete.
func rolloutOnce(b *testing.B, env nodeEnv, ns, name string) (cnib, kubectl, helm time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*guard)
	defer cancel()
	createDeployment(b, env.cs, ns, name, imageV1, nil)
	req := []cnibootstrap.Requirement{cnibootstrap.RolledOut{Kind: cnibootstrap.Deployment, Namespace: ns, Workload: name}}
	require.NoError(b, cnibootstrap.Wait(ctx, env.clients, req))

	obs := newRolloutObserver(ctx, env.cs, ns, name)
	defer obs.stop()
	cur, err := env.cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	require.NoError(b, err)
	cur.Spec.Template.Spec.Containers[0].Image = imageV2
	_, err = env.cs.AppsV1().Deployments(ns).Update(ctx, cur, metav1.UpdateOptions{})
	require.NoError(b, err)
	var wg sync.WaitGroup
	var tc, tk, th time.Time
	var ec, ek, eh error
	wg.Go(func() { ec = cnibootstrap.Wait(ctx, env.clients, req); tc = time.Now() })
	wg.Go(func() { ek = kubectlRolloutStatus(ctx, env.cs, ns, name); tk = time.Now() })
	wg.Go(func() {
		// The poller's phase relative to the rollout's end is random, as
		// in real use (where rollouts take varying times).
		time.Sleep(rand.N(2 * time.Second))
		eh = helmWait(ctx, env.cs, ns, name)
		th = time.Now()
	})
	wg.Wait()
	require.NoError(b, ec)
	require.NoError(b, ek)
	require.NoError(b, eh)
	strict, kc, hc := obs.times()
	require.False(b, strict.IsZero() || kc.IsZero() || hc.IsZero(), "observer saw every notion of complete")
	return tc.Sub(strict), tk.Sub(kc), th.Sub(hc)
}

// kubectlRolloutStatus is `kubectl rollout status deployment/<name>`: a
// list and watch of the Deployment by name, judged on each event by
// kubectl's DeploymentStatusViewer.
func kubectlRolloutStatus(ctx context.Context, cs kubernetes.Interface, ns, name string) error {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	l, err := cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return err
	}
	if len(l.Items) == 1 && kubectlDeploymentDone(&l.Items[0]) {
		return nil
	}
	w, err := cs.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: l.ResourceVersion})
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return fmt.Errorf("watch closed")
			}
			if d, ok := ev.Object.(*appsv1.Deployment); ok && kubectlDeploymentDone(d) {
				return nil
			}
		}
	}
}

// helmWait is Helm 3's `--wait` for a Deployment: every 2 s, get it, list
// its ReplicaSets, and require the new one to have spec.replicas minus
// maxUnavailable ready replicas (pkg/kube.ReadyChecker).
func helmWait(ctx context.Context, cs kubernetes.Interface, ns, name string) error {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		if ok, err := helmReady(ctx, cs, ns, name); err == nil && ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func helmReady(ctx context.Context, cs kubernetes.Interface, ns, name string) (bool, error) {
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return false, err
	}
	rss, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return false, err
	}
	return helmDone(d, rss.Items), nil
}

// helmDone: the new ReplicaSet (the one at the Deployment's revision) has
// replicas − maxUnavailable ready.
func helmDone(d *appsv1.Deployment, rss []appsv1.ReplicaSet) bool {
	if d.Generation > d.Status.ObservedGeneration {
		return false
	}
	rev := d.Annotations["deployment.kubernetes.io/revision"]
	want := *d.Spec.Replicas
	if ru := d.Spec.Strategy.RollingUpdate; ru != nil && ru.MaxUnavailable != nil {
		mu, _ := intstr.GetScaledValueFromIntOrPercent(ru.MaxUnavailable, int(want), false)
		want -= int32(mu)
	}
	for _, rs := range rss {
		if metav1.IsControlledBy(&rs, d) && rs.Annotations["deployment.kubernetes.io/revision"] == rev {
			return rs.Status.ReadyReplicas >= want
		}
	}
	return false
}

// rolloutObserver watches a Deployment, its ReplicaSets and its pods, and
// records when each notion of "complete" first held, at event arrival.
type rolloutObserver struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	strict time.Time
	kube   time.Time
	helm   time.Time
}

func newRolloutObserver(ctx context.Context, cs kubernetes.Interface, ns, name string) *rolloutObserver {
	ctx, cancel := context.WithCancel(ctx)
	o := &rolloutObserver{cancel: cancel}
	type ev struct {
		kind string
		e    watch.Event
	}
	events := make(chan ev)
	labels := "app=" + name
	start := func(kind string, w watch.Interface, err error) {
		if err != nil {
			return
		}
		o.wg.Go(func() {
			defer w.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case e, ok := <-w.ResultChan():
					if !ok {
						return
					}
					select {
					case events <- ev{kind, e}:
					case <-ctx.Done():
						return
					}
				}
			}
		})
	}
	w1, e1 := cs.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
	start("d", w1, e1)
	w2, e2 := cs.AppsV1().ReplicaSets(ns).Watch(ctx, metav1.ListOptions{LabelSelector: labels})
	start("rs", w2, e2)
	w3, e3 := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: labels})
	start("pod", w3, e3)
	o.wg.Go(func() {
		var d *appsv1.Deployment
		rss := map[string]appsv1.ReplicaSet{}
		pods := map[string]corev1.Pod{}
		for {
			var e ev
			select {
			case <-ctx.Done():
				return
			case e = <-events:
			}
			at := time.Now()
			switch obj := e.e.Object.(type) {
			case *appsv1.Deployment:
				d = obj
			case *appsv1.ReplicaSet:
				if e.e.Type == watch.Deleted {
					delete(rss, obj.Name)
				} else {
					rss[obj.Name] = *obj
				}
			case *corev1.Pod:
				if e.e.Type == watch.Deleted {
					delete(pods, obj.Name)
				} else {
					pods[obj.Name] = *obj
				}
			}
			if d == nil {
				continue
			}
			list := make([]appsv1.ReplicaSet, 0, len(rss))
			for _, rs := range rss {
				list = append(list, rs)
			}
			o.mu.Lock()
			if o.kube.IsZero() && kubectlDeploymentDone(d) {
				o.kube = at
			}
			if o.helm.IsZero() && helmDone(d, list) {
				o.helm = at
			}
			if o.strict.IsZero() && strictDone(d, list, pods) {
				o.strict = at
			}
			o.mu.Unlock()
		}
	})
	return o
}

// strictDone is RolledOut's notion: kubectl's counts, the new ReplicaSet
// available, and no running pod of another pod-template-hash.
func strictDone(d *appsv1.Deployment, rss []appsv1.ReplicaSet, pods map[string]corev1.Pod) bool {
	if !kubectlDeploymentDone(d) {
		return false
	}
	rev := d.Annotations["deployment.kubernetes.io/revision"]
	hash := ""
	for _, rs := range rss {
		if metav1.IsControlledBy(&rs, d) && rs.Annotations["deployment.kubernetes.io/revision"] == rev {
			if rs.Status.AvailableReplicas < *d.Spec.Replicas {
				return false
			}
			hash = rs.Labels["pod-template-hash"]
		}
	}
	if hash == "" {
		return false
	}
	for _, p := range pods {
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed && p.Labels["pod-template-hash"] != hash {
			return false
		}
	}
	return true
}

func (o *rolloutObserver) times() (strict, kube, helm time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.strict, o.kube, o.helm
}

func (o *rolloutObserver) stop() {
	o.cancel()
	o.wg.Wait()
}
