package cnibootstrap_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// stopNode stops a shared node's kubelet until the test restarts it with
// the returned function (also run at cleanup, so later tests get it back).
// Pods bound to a stopped node stay as they are: a deleted one stays
// Terminating and, for the cluster, still running.
func stopNode(t testing.TB, n *testenv.Node) (restart func()) {
	t.Helper()
	require.NoError(t, n.Stop())
	restart = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*guard)
		defer cancel()
		require.NoError(t, n.Start(ctx), "restart node %s", n.Name())
	}
	t.Cleanup(func() {
		if !n.Running() {
			restart()
		}
	})
	return restart
}

// TestRolledOutDeploymentUpgrade upgrades a Deployment of two from v1 to
// v2 on the real controller-manager, scheduler and kubelets. The v1 pods
// run on node-c, the v2 pods on node-a. node-c's kubelet is stopped, so
// the v1 pods, once deleted, stay Terminating (the old controller still
// running, as in rke2 #7652). The v2 pods' readiness probe fails at
// first, so the new ReplicaSet is not available; then it passes and the
// rollout completes as `kubectl rollout status` sees it. Wait must hold
// through both, saying why, and return only once node-c's kubelet is back
// and has removed the old pods. At its return the new ReplicaSet is
// available and the old one has no pods.
func TestRolledOutDeploymentUpgrade(t *testing.T) {
	env := nodeCluster(t)
	ns := namespace(t, env.cs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*guard)
	defer cancel()
	labels := map[string]string{"app": "backend"}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec(imageV1)}
	tmpl.Spec.NodeName = nodeNames[2]
	tmpl.Spec.TerminationGracePeriodSeconds = ptr(int64(30)) // deleted, not gone, until the kubelet confirms
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: tmpl,
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: ptr(intstr.FromInt32(1)), MaxUnavailable: ptr(intstr.FromInt32(0))}},
		},
	}
	_, err := env.cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
	require.NoError(t, err)
	req := []cnibootstrap.Requirement{cnibootstrap.RolledOut{Kind: cnibootstrap.Deployment, Namespace: ns, Workload: "backend"}}
	name := req[0].Name()
	require.Equal(t, "deployment "+ns+"/backend rolled out", name)
	require.NoError(t, cnibootstrap.Wait(ctx, env.clients, req, testBackoff()), "v1 rollout")
	restart := stopNode(t, env.nodes[2])

	// v2: new image on node-a, a readiness probe that fails for now.
	srv := newSwitchServer(t, false)
	cur, err := env.cs.AppsV1().Deployments(ns).Get(ctx, "backend", metav1.GetOptions{})
	require.NoError(t, err)
	v1Hash := replicaSetHash(t, env.cs, ns, cur.UID, imageV1)
	cur.Spec.Template.Spec.NodeName = nodeNames[0]
	cur.Spec.Template.Spec.TerminationGracePeriodSeconds = new(int64)
	cur.Spec.Template.Spec.Containers[0].Image = imageV2
	cur.Spec.Template.Spec.Containers[0].ReadinessProbe = srv.probe()
	_, err = env.cs.AppsV1().Deployments(ns).Update(ctx, cur, metav1.UpdateOptions{})
	require.NoError(t, err)

	rec := newRecorder()
	w, err := cnibootstrap.New(env.clients, req, cnibootstrap.WithProgress(rec.progress), testBackoff())
	require.NoError(t, err)
	errc := waitAsync(ctx, w)
	require.NoError(t, rec.await("with the new replicas not available", func(u []cnibootstrap.Unmet) bool {
		r := reason(u, name)
		return strings.Contains(r, "available") || strings.Contains(r, "updated")
	}))
	notReturned(t, errc, "while the new pods are not ready")

	srv.healthy.Store(true)
	require.NoError(t, rec.await("with only old pods terminating", func(u []cnibootstrap.Unmet) bool {
		r := reason(u, name)
		return strings.Contains(r, "2 old pods remain") && strings.Contains(r, "terminating")
	}))
	// What `kubectl rollout status` reads already says done.
	got, err := env.cs.AppsV1().Deployments(ns).Get(ctx, "backend", metav1.GetOptions{})
	require.NoError(t, err)
	assert.True(t, kubectlDeploymentDone(got), "kubectl-style status while old pods remain: %+v", got.Status)
	reports := rec.all()
	t.Logf("report while old pods remain: %v", reports[len(reports)-1])
	notReturned(t, errc, "while old pods are terminating")

	restart()
	require.NoError(t, result(t, errc))

	// At the return: the new ReplicaSet available, no pod of the old one.
	v2Hash := replicaSetHash(t, env.cs, ns, cur.UID, imageV2)
	rs, err := env.cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "pod-template-hash=" + v2Hash})
	require.NoError(t, err)
	require.Len(t, rs.Items, 1)
	assert.EqualValues(t, 2, rs.Items[0].Status.AvailableReplicas, "new ReplicaSet available replicas")
	old, err := env.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "pod-template-hash=" + v1Hash})
	require.NoError(t, err)
	for _, p := range old.Items {
		assert.Contains(t, []corev1.PodPhase{corev1.PodSucceeded, corev1.PodFailed}, p.Status.Phase, "old pod %s still running after Wait returned", p.Name)
	}
	require.NoError(t, w.Check(ctx), "Check after Wait")
}

// replicaSetHash returns the pod-template-hash of the ReplicaSet of the
// Deployment uid whose pods run image.
func replicaSetHash(t testing.TB, cs kubernetes.Interface, ns string, uid types.UID, image string) string {
	t.Helper()
	l, err := cs.AppsV1().ReplicaSets(ns).List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	for _, rs := range l.Items {
		if metav1.IsControlledBy(&rs, &metav1.ObjectMeta{UID: uid}) && rs.Spec.Template.Spec.Containers[0].Image == image {
			return rs.Labels["pod-template-hash"]
		}
	}
	t.Fatalf("no ReplicaSet with image %s", image)
	return ""
}

// kubectlDeploymentDone is `kubectl rollout status` for a Deployment
// (k8s.io/kubectl/pkg/polymorphichelpers.DeploymentStatusViewer).
func kubectlDeploymentDone(d *appsv1.Deployment) bool {
	s := d.Status
	if d.Generation > s.ObservedGeneration {
		return false
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	return s.UpdatedReplicas >= want && s.Replicas <= s.UpdatedReplicas && s.AvailableReplicas >= s.UpdatedReplicas
}

// TestRolledOutDaemonSetUpgrade rolls a DaemonSet on the three shared
// nodes from v1 to v2 (one node at a time). The v2 pods' readiness probe
// fails at first: Wait holds, naming the counts; once it passes, Wait
// returns, and at that moment every node runs a Ready v2 pod and no v1 pod
// is left running.
func TestRolledOutDaemonSetUpgrade(t *testing.T) {
	env := nodeCluster(t)
	ns := namespace(t, env.cs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*guard)
	defer cancel()
	labels := map[string]string{"app": "controller"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "controller", Namespace: ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec(imageV1)},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr(intstr.FromInt32(1))}},
		},
	}
	_, err := env.cs.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{})
	require.NoError(t, err)
	req := []cnibootstrap.Requirement{cnibootstrap.RolledOut{Kind: cnibootstrap.DaemonSet, Namespace: ns, Workload: "controller"}}
	name := req[0].Name()
	require.NoError(t, cnibootstrap.Wait(ctx, env.clients, req, testBackoff()), "v1 rollout")
	v1Pods, err := env.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=controller"})
	require.NoError(t, err)
	require.Len(t, v1Pods.Items, len(nodeNames), "one v1 pod per node")
	v1Hash := v1Pods.Items[0].Labels["controller-revision-hash"]
	require.NotEmpty(t, v1Hash)

	srv := newSwitchServer(t, false)
	cur, err := env.cs.AppsV1().DaemonSets(ns).Get(ctx, "controller", metav1.GetOptions{})
	require.NoError(t, err)
	cur.Spec.Template.Spec.Containers[0].Image = imageV2
	cur.Spec.Template.Spec.Containers[0].ReadinessProbe = srv.probe()
	_, err = env.cs.AppsV1().DaemonSets(ns).Update(ctx, cur, metav1.UpdateOptions{})
	require.NoError(t, err)

	rec := newRecorder()
	w, err := cnibootstrap.New(env.clients, req, cnibootstrap.WithProgress(rec.progress), testBackoff())
	require.NoError(t, err)
	errc := waitAsync(ctx, w)
	require.NoError(t, rec.await("with updated pods not available", func(u []cnibootstrap.Unmet) bool {
		return strings.Contains(reason(u, name), "updated pods")
	}))
	// The first v2 pod is probed and failing: the rollout is stuck there.
	testenv.Eventually(t, guard, 50*time.Millisecond, func() error {
		if srv.probes.Load() < 2 {
			return fmt.Errorf("%d probes", srv.probes.Load())
		}
		return nil
	})
	notReturned(t, errc, "while a v2 pod is not ready")
	t.Logf("report while v2 is not ready: %v", rec.all()[len(rec.all())-1])

	srv.healthy.Store(true)
	require.NoError(t, result(t, errc))

	got, err := env.cs.AppsV1().DaemonSets(ns).Get(ctx, "controller", metav1.GetOptions{})
	require.NoError(t, err)
	assert.EqualValues(t, len(nodeNames), got.Status.DesiredNumberScheduled)
	assert.EqualValues(t, len(nodeNames), got.Status.UpdatedNumberScheduled)
	assert.EqualValues(t, len(nodeNames), got.Status.NumberAvailable)
	pods, err := env.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=controller"})
	require.NoError(t, err)
	onNode := map[string]bool{}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		assert.NotEqual(t, v1Hash, p.Labels["controller-revision-hash"], "v1 pod %s still running after Wait returned", p.Name)
		assert.Equal(t, imageV2, p.Spec.Containers[0].Image, "pod %s", p.Name)
		onNode[p.Spec.NodeName] = true
	}
	assert.Len(t, onNode, len(nodeNames), "a v2 pod on every node")
	require.NoError(t, w.Check(ctx), "Check after Wait")
}

// TestRolledOutStatefulSetPartition rolls a StatefulSet of three with a
// RollingUpdate partition of 2 from v1 to v2: only web-2 is to be
// updated. Wait holds while web-2's v2 pod is not ready and returns once
// it is, with web-0 and web-1 left at the old revision, as asked.
func TestRolledOutStatefulSetPartition(t *testing.T) {
	env := nodeCluster(t)
	ns := namespace(t, env.cs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*guard)
	defer cancel()
	labels := map[string]string{"app": "web"}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr(int32(3)),
			ServiceName:         "web",
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			Template:            corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec(imageV1)},
			UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr(int32(2))}},
		},
	}
	_, err := env.cs.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{})
	require.NoError(t, err)
	req := []cnibootstrap.Requirement{cnibootstrap.RolledOut{Kind: cnibootstrap.StatefulSet, Namespace: ns, Workload: "web"}}
	name := req[0].Name()
	require.NoError(t, cnibootstrap.Wait(ctx, env.clients, req, testBackoff()), "v1 rollout")
	v1, err := env.cs.AppsV1().StatefulSets(ns).Get(ctx, "web", metav1.GetOptions{})
	require.NoError(t, err)
	oldRev := v1.Status.UpdateRevision

	srv := newSwitchServer(t, false)
	v1.Spec.Template.Spec.Containers[0].Image = imageV2
	v1.Spec.Template.Spec.Containers[0].ReadinessProbe = srv.probe()
	_, err = env.cs.AppsV1().StatefulSets(ns).Update(ctx, v1, metav1.UpdateOptions{})
	require.NoError(t, err)

	rec := newRecorder()
	w, err := cnibootstrap.New(env.clients, req, cnibootstrap.WithProgress(rec.progress), testBackoff())
	require.NoError(t, err)
	errc := waitAsync(ctx, w)
	require.NoError(t, rec.await("with web-2 not ready", func(u []cnibootstrap.Unmet) bool {
		return strings.Contains(reason(u, name), "2 of 3 pods ready")
	}))
	testenv.Eventually(t, guard, 50*time.Millisecond, func() error {
		if srv.probes.Load() < 2 {
			return fmt.Errorf("%d probes", srv.probes.Load())
		}
		return nil
	})
	notReturned(t, errc, "while web-2 is not ready")

	srv.healthy.Store(true)
	require.NoError(t, result(t, errc))
	got, err := env.cs.AppsV1().StatefulSets(ns).Get(ctx, "web", metav1.GetOptions{})
	require.NoError(t, err)
	require.NotEqual(t, oldRev, got.Status.UpdateRevision)
	for i, want := range []string{oldRev, oldRev, got.Status.UpdateRevision} {
		p, err := env.cs.CoreV1().Pods(ns).Get(ctx, fmt.Sprintf("web-%d", i), metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, want, p.Labels["controller-revision-hash"], "revision of web-%d", i)
		assert.Nil(t, p.DeletionTimestamp, "web-%d", i)
	}
	require.NoError(t, w.Check(ctx), "Check after Wait")
}

// TestRolledOutProgressDeadlineFails creates a Deployment whose pod never
// becomes ready, with a progress deadline of 2 s: the controller-manager
// sets Progressing=False (ProgressDeadlineExceeded), and Wait ends at once
// with a *FailedError naming the Deployment (errors.Is ErrFailed), long
// before its own deadline; Check says the same.
func TestRolledOutProgressDeadlineFails(t *testing.T) {
	env := nodeCluster(t)
	ns := namespace(t, env.cs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*guard)
	defer cancel()
	srv := newSwitchServer(t, false)
	labels := map[string]string{"app": "stuck"}
	spec := podSpec(imageV1)
	spec.Containers[0].ReadinessProbe = srv.probe()
	_, err := env.cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "stuck", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas:                ptr(int32(1)),
			ProgressDeadlineSeconds: ptr(int32(2)),
			Selector:                &metav1.LabelSelector{MatchLabels: labels},
			Template:                corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	req := []cnibootstrap.Requirement{cnibootstrap.RolledOut{Kind: cnibootstrap.Deployment, Namespace: ns, Workload: "stuck"}}
	w, err := cnibootstrap.New(env.clients, req, testBackoff())
	require.NoError(t, err)
	err = result(t, waitAsync(ctx, w))
	require.ErrorIs(t, err, cnibootstrap.ErrFailed)
	require.NoError(t, ctx.Err(), "Wait must end on the failure, not on its context")
	var fe *cnibootstrap.FailedError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, cnibootstrap.FailedError{Requirement: req[0].Name(), Kind: "Deployment", Namespace: ns, Name: "stuck",
		Reason: "ProgressDeadlineExceeded", Message: fe.Message}, *fe)
	assert.Contains(t, fe.Message, "timed out progressing")
	assert.Contains(t, err.Error(), "Deployment "+ns+"/stuck failed: ProgressDeadlineExceeded")
	var ue *cnibootstrap.UnmetError
	require.ErrorAs(t, err, &ue)
	require.Len(t, ue.Unmet, 1)

	checkErr := w.Check(ctx)
	require.ErrorIs(t, checkErr, cnibootstrap.ErrFailed)
	require.ErrorAs(t, checkErr, &fe)
	assert.Equal(t, "stuck", fe.Name)
}
