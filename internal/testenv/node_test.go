package testenv

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	imageV1 = "registry.k8s.io/pause:3.9"
	imageV2 = "registry.k8s.io/pause:3.10"
)

// TestNodeRegistersReady starts one hollow kubelet against its own
// apiserver and checks what the real kubelet did: the Node is Ready with
// the stamped version, its lease is held, its servers bind 127.0.0.1 only,
// and the secure port authenticates through the apiserver.
func TestNodeRegistersReady(t *testing.T) {
	AwaitNoLeaks(t)
	a := NewAPIServer(t)
	start := time.Now()
	n := NewNode(t, a, "solo")
	t.Logf("node Ready %s after launch (binary lookup, certificate, process start, registration)", time.Since(start).Round(time.Millisecond))

	cs, err := a.Clientset()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	node, err := cs.CoreV1().Nodes().Get(ctx, "solo", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, corev1.ConditionTrue, nodeReady(node))
	selected, err := SelectedKubernetesVersion()
	require.NoError(t, err)
	require.Equal(t, selected, a.KubernetesVersion())
	require.Equal(t, a.KubernetesVersion(), node.Status.NodeInfo.KubeletVersion, "kubelet version stamp: the apiserver's version")
	sv, err := cs.Discovery().ServerVersion()
	require.NoError(t, err)
	require.Equal(t, a.KubernetesVersion(), sv.GitVersion, "kube-apiserver version stamp")

	Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		lease, err := cs.CoordinationV1().Leases("kube-node-lease").Get(ctx, "solo", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != "solo" || lease.Spec.RenewTime == nil {
			return fmt.Errorf("lease not held by solo: %+v", lease.Spec)
		}
		return nil
	})

	for _, port := range []int{n.Port(), n.ReadOnlyPort()} {
		require.Equal(t, "127.0.0.1", listenAddr(t, port), "kubelet port %d", port)
	}

	// Read-only port: /pods without credentials.
	resp, err := http.Get(n.ReadOnlyURL() + "/pods")
	require.NoError(t, err)
	var list corev1.PodList
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	// Secure port: TLS from the apiserver's CA; a token is checked with a
	// TokenReview, and an unknown one is refused.
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: a.CA().CertPool(), MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func(token string) int {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+"/pods", nil)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusOK, get(a.Config().BearerToken))
	require.Equal(t, http.StatusUnauthorized, get("not-a-token"))
	require.Equal(t, http.StatusUnauthorized, get(""))

	if rss, err := rssMiB(n.proc.pid()); err == nil {
		t.Logf("hollow kubelet RSS %.0f MiB", rss)
	}

	// A start whose context has ended returns the context's error.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	_, err = StartNode(cctx, a, "cancelled", WithNodeDir(t.TempDir()))
	require.ErrorIs(t, err, context.Canceled)
}

// listenAddr returns the local IPv4 address a TCP port listens on, from
// /proc/net/tcp.
func listenAddr(t *testing.T, port int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	require.NoError(t, err)
	want := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "0A" || !strings.HasSuffix(f[1], want) { // 0A: LISTEN
			continue
		}
		hexIP := strings.TrimSuffix(f[1], want)
		v, err := strconv.ParseUint(hexIP, 16, 32)
		require.NoError(t, err)
		return fmt.Sprintf("%d.%d.%d.%d", v&0xff, v>>8&0xff, v>>16&0xff, v>>24)
	}
	t.Fatalf("nothing listens on port %d", port)
	return ""
}

// TestStaticPodMirrorAndReplacement writes a static pod manifest on a node,
// sees the kubelet's mirror pod become Ready, rewrites the manifest and sees
// the kubelet replace it (new config hash, new UID), then removes it.
func TestStaticPodMirrorAndReplacement(t *testing.T) {
	c := sharedCluster(t)
	ns := testNamespace(t, c.cs)
	n := c.nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const hashKey = "kubernetes.io/config.hash"
	mirror := n.MirrorPodName("web")

	static := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns, Labels: map[string]string{"app": "web"}}, Spec: podSpec(imageV1)}
	written := time.Now()
	require.NoError(t, n.WriteStaticPod(static))
	var first *corev1.Pod
	Eventually(t, time.Minute, 20*time.Millisecond, func() error {
		p, err := c.cs.CoreV1().Pods(ns).Get(ctx, mirror, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if first == nil {
			t.Logf("mirror pod %s appeared %s after the manifest", mirror, time.Since(written).Round(time.Millisecond))
		}
		first = p
		if !podReady(p) {
			return fmt.Errorf("mirror pod %s not Ready", mirror)
		}
		return nil
	})
	t.Logf("mirror pod Ready %s after the manifest", time.Since(written).Round(time.Millisecond))
	require.Equal(t, "Node", first.OwnerReferences[0].Kind, "a mirror pod is owned by its node")
	require.Equal(t, n.Name(), first.Spec.NodeName)
	require.NotEmpty(t, first.Annotations["kubernetes.io/config.mirror"], "kubelet marks its mirror pods")
	oldHash, oldUID := first.Annotations[hashKey], first.UID
	require.NotEmpty(t, oldHash)

	static.Spec.Containers[0].Image = imageV2
	rewritten := time.Now()
	require.NoError(t, n.WriteStaticPod(static))
	var second *corev1.Pod
	Eventually(t, time.Minute, 50*time.Millisecond, func() error {
		p, err := c.cs.CoreV1().Pods(ns).Get(ctx, mirror, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Annotations[hashKey] == oldHash || !podReady(p) || p.DeletionTimestamp != nil {
			return fmt.Errorf("mirror pod %s: hash %s ready %v", mirror, p.Annotations[hashKey], podReady(p))
		}
		second = p
		return nil
	})
	t.Logf("mirror pod replaced and Ready %s after the manifest was rewritten", time.Since(rewritten).Round(time.Millisecond))
	require.NotEqual(t, oldUID, second.UID, "a replaced static pod gets a new mirror pod")
	require.Equal(t, imageV2, second.Spec.Containers[0].Image)

	require.NoError(t, n.RemoveStaticPod("web"))
	Eventually(t, time.Minute, 50*time.Millisecond, func() error {
		_, err := c.cs.CoreV1().Pods(ns).Get(ctx, mirror, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("mirror pod %s still there (%v)", mirror, err)
	})
}

// TestDeploymentRollsOut creates a Deployment of two and changes its image:
// the controller-manager, scheduler and kubelets roll it out for real.
func TestDeploymentRollsOut(t *testing.T) {
	c := sharedCluster(t)
	ns := testNamespace(t, c.cs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	labels := map[string]string{"app": "web"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec(imageV1)},
		},
	}
	created := time.Now()
	_, err := c.cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
	require.NoError(t, err)
	awaitDeployment(t, ctx, c, ns, "web", imageV1)
	t.Logf("Deployment of 2 available %s after create", time.Since(created).Round(time.Millisecond))

	cur, err := c.cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	require.NoError(t, err)
	cur.Spec.Template.Spec.Containers[0].Image = imageV2
	updated := time.Now()
	_, err = c.cs.AppsV1().Deployments(ns).Update(ctx, cur, metav1.UpdateOptions{})
	require.NoError(t, err)
	awaitDeployment(t, ctx, c, ns, "web", imageV2)
	t.Logf("image change rolled out %s after update", time.Since(updated).Round(time.Millisecond))
}

// awaitDeployment waits until the Deployment is rolled out: observed,
// every replica updated and available, no old replica left, and every pod
// running image, Ready, on a node.
func awaitDeployment(t *testing.T, ctx context.Context, c cluster, ns, name, image string) {
	t.Helper()
	Eventually(t, time.Minute, 50*time.Millisecond, func() error {
		d, err := c.cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		s := d.Status
		want := *d.Spec.Replicas
		if s.ObservedGeneration < d.Generation || s.UpdatedReplicas != want || s.AvailableReplicas != want || s.Replicas != want {
			return fmt.Errorf("deployment %s: %+v", name, s)
		}
		pods, err := c.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return err
		}
		live := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			live++
			if p.Spec.Containers[0].Image != image || !podReady(&p) || p.Spec.NodeName == "" {
				return fmt.Errorf("pod %s: image %s ready %v node %q", p.Name, p.Spec.Containers[0].Image, podReady(&p), p.Spec.NodeName)
			}
		}
		if live != int(want) {
			return fmt.Errorf("%d pods, want %d", live, want)
		}
		return nil
	})
}

// TestDaemonSetRollsOut runs a DaemonSet on the three shared nodes and rolls
// an image change through them.
func TestDaemonSetRollsOut(t *testing.T) {
	c := sharedCluster(t)
	ns := testNamespace(t, c.cs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	labels := map[string]string{"app": "agent"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec(imageV1)},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr(intstr.FromInt32(1))}},
		},
	}
	created := time.Now()
	_, err := c.cs.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{})
	require.NoError(t, err)
	awaitDaemonSet(t, ctx, c, ns, "agent", imageV1)
	t.Logf("DaemonSet on %d nodes ready %s after create", len(c.nodes), time.Since(created).Round(time.Millisecond))

	cur, err := c.cs.AppsV1().DaemonSets(ns).Get(ctx, "agent", metav1.GetOptions{})
	require.NoError(t, err)
	cur.Spec.Template.Spec.Containers[0].Image = imageV2
	updated := time.Now()
	_, err = c.cs.AppsV1().DaemonSets(ns).Update(ctx, cur, metav1.UpdateOptions{})
	require.NoError(t, err)
	awaitDaemonSet(t, ctx, c, ns, "agent", imageV2)
	t.Logf("DaemonSet image change rolled out %s after update", time.Since(updated).Round(time.Millisecond))

	var total float64
	for _, p := range []*process{c.cp.cm, c.cp.scheduler, c.nodes[0].proc, c.nodes[1].proc, c.nodes[2].proc} {
		if rss, err := rssMiB(p.pid()); err == nil {
			t.Logf("%s RSS %.0f MiB", p.name, rss)
			total += rss
		}
	}
	t.Logf("controller-manager + scheduler + 3 kubelets RSS %.0f MiB", total)
}

// awaitDaemonSet waits until the DaemonSet runs one Ready pod with image on
// each shared node and no other pod.
func awaitDaemonSet(t *testing.T, ctx context.Context, c cluster, ns, name, image string) {
	t.Helper()
	Eventually(t, time.Minute, 50*time.Millisecond, func() error {
		ds, err := c.cs.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		s, want := ds.Status, int32(len(c.nodes))
		if s.ObservedGeneration < ds.Generation || s.DesiredNumberScheduled != want || s.UpdatedNumberScheduled != want || s.NumberReady != want || s.NumberAvailable != want {
			return fmt.Errorf("daemonset %s: %+v", name, s)
		}
		pods, err := c.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return err
		}
		onNode := map[string]bool{}
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			if p.Spec.Containers[0].Image != image || !podReady(&p) || onNode[p.Spec.NodeName] {
				return fmt.Errorf("pod %s on %q: image %s ready %v", p.Name, p.Spec.NodeName, p.Spec.Containers[0].Image, podReady(&p))
			}
			onNode[p.Spec.NodeName] = true
		}
		for _, n := range c.nodes {
			if !onNode[n.Name()] {
				return fmt.Errorf("no pod on node %s", n.Name())
			}
		}
		return nil
	})
}

// TestJobCompletesAndFails runs two Jobs whose fake containers exit by
// themselves: exit code 0 completes its Job, a non-zero code fails its Job.
func TestJobCompletesAndFails(t *testing.T) {
	c := sharedCluster(t)
	ns := testNamespace(t, c.cs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	job := func(name string, code int32) *batchv1.Job {
		spec := podSpec(imageV1, FakeExit(code, 300*time.Millisecond)...)
		spec.RestartPolicy = corev1.RestartPolicyNever
		return &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: batchv1.JobSpec{
				BackoffLimit: ptr(int32(0)),
				Template:     corev1.PodTemplateSpec{Spec: spec},
			},
		}
	}
	created := time.Now()
	for name, code := range map[string]int32{"ok": 0, "bad": 3} {
		_, err := c.cs.BatchV1().Jobs(ns).Create(ctx, job(name, code), metav1.CreateOptions{})
		require.NoError(t, err)
	}
	awaitJob := func(name string, want batchv1.JobConditionType) {
		Eventually(t, time.Minute, 50*time.Millisecond, func() error {
			j, err := c.cs.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, cond := range j.Status.Conditions {
				if (cond.Type == batchv1.JobComplete || cond.Type == batchv1.JobFailed) && cond.Status == corev1.ConditionTrue {
					if cond.Type != want {
						return fmt.Errorf("job %s is %s, want %s: %s", name, cond.Type, want, cond.Message)
					}
					return nil
				}
			}
			return fmt.Errorf("job %s: %+v", name, j.Status)
		})
	}
	awaitJob("ok", batchv1.JobComplete)
	awaitJob("bad", batchv1.JobFailed)
	t.Logf("both Jobs finished %s after create", time.Since(created).Round(time.Millisecond))

	pods, err := c.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "job-name=bad"})
	require.NoError(t, err)
	require.Len(t, pods.Items, 1)
	st := pods.Items[0].Status
	require.Equal(t, corev1.PodFailed, st.Phase)
	require.Len(t, st.ContainerStatuses, 1)
	require.NotNil(t, st.ContainerStatuses[0].State.Terminated)
	require.Equal(t, int32(3), st.ContainerStatuses[0].State.Terminated.ExitCode)
}

// TestHTTPReadinessProbeDrivesReady points a pod's httpGet readiness probe
// at a test server on 127.0.0.1: the kubelet's real prober flips the pod's
// Ready condition as the server's answer changes, both ways.
func TestHTTPReadinessProbeDrivesReady(t *testing.T) {
	c := sharedCluster(t)
	ns := testNamespace(t, c.cs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var healthy atomic.Bool
	var probes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
		if healthy.Load() {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	port, err := strconv.Atoi(u.Port())
	require.NoError(t, err)

	spec := podSpec(imageV1)
	spec.Containers[0].ReadinessProbe = &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Host: "127.0.0.1", Port: intstr.FromInt(port), Path: "/ready"}},
		PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1,
	}
	_, err = c.cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "probed", Namespace: ns}, Spec: spec}, metav1.CreateOptions{})
	require.NoError(t, err)

	get := func() *corev1.Pod {
		p, err := c.cs.CoreV1().Pods(ns).Get(ctx, "probed", metav1.GetOptions{})
		require.NoError(t, err)
		return p
	}
	// Running, probed, and not Ready while the server says 503.
	Eventually(t, time.Minute, 50*time.Millisecond, func() error {
		p := get()
		if p.Status.Phase != corev1.PodRunning || probes.Load() < 2 {
			return fmt.Errorf("pod %s, %d probes", p.Status.Phase, probes.Load())
		}
		return nil
	})
	require.False(t, podReady(get()), "Ready while the probe fails")

	healthy.Store(true)
	flipped := time.Now()
	Eventually(t, time.Minute, 50*time.Millisecond, func() error {
		if !podReady(get()) {
			return fmt.Errorf("not Ready after the probe passes (%d probes)", probes.Load())
		}
		return nil
	})
	t.Logf("Ready %s after the server turned healthy", time.Since(flipped).Round(time.Millisecond))

	healthy.Store(false)
	flipped = time.Now()
	Eventually(t, time.Minute, 50*time.Millisecond, func() error {
		if podReady(get()) {
			return fmt.Errorf("still Ready after the probe fails (%d probes)", probes.Load())
		}
		return nil
	})
	t.Logf("not Ready %s after the server turned unhealthy", time.Since(flipped).Round(time.Millisecond))
}

// TestKubeletKilledNodeNotReady kills a kubelet: with a 4 s lease and an
// 8 s grace period the node lifecycle controller marks the Node not Ready;
// a restarted kubelet makes it Ready again.
func TestKubeletKilledNodeNotReady(t *testing.T) {
	AwaitNoLeaks(t)
	a := NewAPIServer(t)
	NewControlPlane(t, a, WithNodeMonitorGracePeriod(8*time.Second))
	n := NewNode(t, a, "victim", WithNodeLease(4*time.Second))
	cs, err := a.Clientset()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	status := func() corev1.ConditionStatus {
		node, err := cs.CoreV1().Nodes().Get(ctx, "victim", metav1.GetOptions{})
		require.NoError(t, err)
		return nodeReady(node)
	}
	require.Equal(t, corev1.ConditionTrue, status())
	oldPID := n.proc.pid()

	require.NoError(t, n.Kill())
	require.False(t, n.Running())
	killed := time.Now()
	Eventually(t, time.Minute, 100*time.Millisecond, func() error {
		if s := status(); s == corev1.ConditionTrue {
			return fmt.Errorf("node victim still Ready=%s", s)
		}
		return nil
	})
	t.Logf("node not Ready (%s) %s after the kubelet was killed", status(), time.Since(killed).Round(time.Millisecond))

	restarted := time.Now()
	require.NoError(t, n.Start(ctx))
	require.Equal(t, corev1.ConditionTrue, status())
	require.NotEqual(t, oldPID, n.proc.pid())
	t.Logf("node Ready %s after the kubelet was started again", time.Since(restarted).Round(time.Millisecond))

	require.NoError(t, n.Restart(ctx))
	require.True(t, n.Running())
	require.Equal(t, corev1.ConditionTrue, status())
}

func ptr[T any](v T) *T { return &v }

// TestControlPlaneRestart stops both control-plane processes and starts
// them again: Start waits for the new controller-manager's controllers, and
// a Deployment then rolls out, so the scheduler is back too.
func TestControlPlaneRestart(t *testing.T) {
	c := sharedCluster(t)
	ns := testNamespace(t, c.cs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	oldCM, oldSched := c.cp.cm.pid(), c.cp.scheduler.pid()
	require.NoError(t, c.cp.StopScheduler())
	require.NoError(t, c.cp.StopControllerManager())
	require.Zero(t, c.cp.cm.pid())
	require.Zero(t, c.cp.scheduler.pid())
	require.NoError(t, c.cp.Start(ctx))
	require.NotZero(t, c.cp.cm.pid())
	require.NotEqual(t, oldCM, c.cp.cm.pid())
	require.NotEqual(t, oldSched, c.cp.scheduler.pid())

	labels := map[string]string{"app": "after"}
	_, err := c.cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "after", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec(imageV1)},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	awaitDeployment(t, ctx, c, ns, "after", imageV1)
}
