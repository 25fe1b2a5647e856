package readiness_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"

	"github.com/kubeboot/kubeboot/internal/testenv"
	"github.com/kubeboot/kubeboot/readiness"
)

const (
	podNS   = "kube-system"
	podName = "kube-apiserver-node1"
)

// mirrorPod is a mirror pod as the kubelet creates it for a static pod
// whose manifest hashes to hash.
func mirrorPod(hash string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      podName,
			Namespace: podNS,
			Annotations: map[string]string{
				"kubernetes.io/config.hash":   hash,
				"kubernetes.io/config.mirror": hash,
				"kubernetes.io/config.source": "file",
			},
		},
		Spec: corev1.PodSpec{
			NodeName:   "node1",
			Containers: []corev1.Container{{Name: "kube-apiserver", Image: "registry.k8s.io/kube-apiserver:v1.36.3"}},
		},
	}
}

// podStatus is the status the kubelet writes: Running and Ready, or
// Running with the container still being created.
func podStatus(ready bool) corev1.PodStatus {
	cond := corev1.ConditionFalse
	state := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	if ready {
		cond = corev1.ConditionTrue
		state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
	}
	return corev1.PodStatus{
		Phase:             corev1.PodRunning,
		Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: cond}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "kube-apiserver", Ready: ready, State: state, Image: "registry.k8s.io/kube-apiserver:v1.36.3"}},
	}
}

// setPodStatus writes the mirror pod's status through UpdateStatus, as the
// kubelet would.
func setPodStatus(ctx context.Context, cs kubernetes.Interface, ready bool) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := cs.CoreV1().Pods(podNS).Get(ctx, podName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod.Status = podStatus(ready)
		_, err = cs.CoreV1().Pods(podNS).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
}

func createMirrorPod(ctx context.Context, t testing.TB, cs kubernetes.Interface, hash string, ready bool) {
	t.Helper()
	_, err := cs.CoreV1().Pods(podNS).Create(ctx, mirrorPod(hash), metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, setPodStatus(ctx, cs, ready))
}

// failsWith matches a failed attempt whose reason contains every part.
func failsWith(parts ...string) func(readiness.Attempt) bool {
	return func(a readiness.Attempt) bool {
		if a.Err == nil {
			return false
		}
		for _, p := range parts {
			if !strings.Contains(a.Err.Error(), p) {
				return false
			}
		}
		return true
	}
}

// tenMinutes is a backoff floor long enough that only a change signal
// can make Wait re-check within a test.
var tenMinutes = constant(10 * time.Minute)

func TestStaticPodReadyHashChange(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	a := testenv.NewAPIServer(t)
	ctx := testCtx(t)
	cs, err := a.Clientset()
	require.NoError(t, err)
	createMirrorPod(ctx, t, cs, "aaaa", true)

	check := readiness.StaticPodReady(cs, podNS, podName, readiness.WithHashChangedFrom("aaaa"))
	opt, attempts := observer()
	done := goWait(ctx, check, opt, tenMinutes)

	// The old pod is up and Ready, but it is the old one.
	first := awaitAttempt(t, attempts, done, "the old pod is rejected", failsWith("config hash aaaa is still the old one"))
	assert.Equal(t, "mirror pod kube-system/kube-apiserver-node1: config hash aaaa is still the old one", first.Err.Error())
	stillWaiting(t, done, "old pod up")

	// The kubelet deletes the old mirror pod: first terminating...
	require.NoError(t, cs.CoreV1().Pods(podNS).Delete(ctx, podName, metav1.DeleteOptions{}))
	awaitAttempt(t, attempts, done, "the pod is terminating", failsWith("terminating"))
	stillWaiting(t, done, "old pod terminating")
	// ...then gone.
	zero := int64(0)
	require.NoError(t, cs.CoreV1().Pods(podNS).Delete(ctx, podName, metav1.DeleteOptions{GracePeriodSeconds: &zero}))
	awaitAttempt(t, attempts, done, "the pod is gone", failsWith("mirror pod kube-system/kube-apiserver-node1: not found"))
	stillWaiting(t, done, "no pod")

	// The new pod appears, not Ready yet.
	createMirrorPod(ctx, t, cs, "bbbb", false)
	notReady := awaitAttempt(t, attempts, done, "the new pod is not ready", failsWith("condition Ready is False", "container kube-apiserver not ready (waiting: ContainerCreating)"))
	assert.NotContains(t, notReady.Err.Error(), "config hash")
	stillWaiting(t, done, "new pod not ready")

	// The kubelet marks it Ready: Wait returns, through the watch (the
	// backoff floor is ten minutes).
	require.NoError(t, setPodStatus(ctx, cs, true))
	require.NoError(t, awaitDone(t, done, "new pod ready"))

	// Expected-hash form of the same question.
	require.NoError(t, readiness.StaticPodReady(cs, podNS, podName, readiness.WithExpectedHash("bbbb")).Check(ctx))
	err = readiness.StaticPodReady(cs, podNS, podName, readiness.WithExpectedHash("cccc")).Check(ctx)
	require.EqualError(t, err, "mirror pod kube-system/kube-apiserver-node1: config hash bbbb, want cccc")
}

func TestStaticPodReadyLeastPrivilege(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	a := testenv.NewAPIServer(t)
	ctx := testCtx(t)
	admin, err := a.Clientset()
	require.NoError(t, err)

	const saNS, saName = "kubeboot-system", "readiness-gate"
	saCfg, err := a.ServiceAccountConfig(ctx, saNS, saName)
	require.NoError(t, err)
	sa, err := kubernetes.NewForConfig(saCfg)
	require.NoError(t, err)
	check := readiness.StaticPodReady(sa, podNS, podName, readiness.WithExpectedHash("bbbb"))

	// APIServerReady needs nothing bound: system:public-info-viewer.
	require.NoError(t, readiness.APIServerReady(sa.Discovery().RESTClient()).Check(ctx))

	// Unbound, the static-pod check says it is an RBAC problem.
	err = check.Check(ctx)
	require.ErrorIs(t, err, readiness.ErrAccessDenied)
	assert.True(t, apierrors.IsForbidden(err), "%v", err)
	t.Logf("unbound: %v", err)

	// Bind exactly the documented rules and await the authorizer.
	require.NoError(t, a.BindNamespaceRules(ctx, podNS, saNS, saName, "readiness-static-pod", []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"},
	}}))
	testenv.Eventually(t, 30*time.Second, 50*time.Millisecond, func() error {
		if err := check.Check(ctx); errors.Is(err, readiness.ErrAccessDenied) {
			return err
		}
		return nil
	})

	// Nothing beyond them: pods elsewhere stay forbidden.
	_, err = sa.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	require.True(t, apierrors.IsForbidden(err), "pods in default: %v", err)

	// The whole event-driven wait works under these rules: with a
	// ten-minute floor, only the watch can make Wait return.
	createMirrorPod(ctx, t, admin, "bbbb", false)
	opt, attempts := observer()
	done := goWait(ctx, check, opt, tenMinutes)
	awaitAttempt(t, attempts, done, "the pod is not ready", failsWith("condition Ready is False"))
	require.NoError(t, setPodStatus(ctx, admin, true))
	require.NoError(t, awaitDone(t, done, "pod ready"))

	// A bad token is told apart from "not ready" too.
	badCS, err := kubernetes.NewForConfig(a.ConfigWithToken("not-a-token"))
	require.NoError(t, err)
	err = readiness.APIServerReady(badCS.Discovery().RESTClient()).Check(ctx)
	require.ErrorIs(t, err, readiness.ErrAccessDenied)
	assert.Contains(t, err.Error(), "HTTP 401")
}

func TestStaticPodReadyBadInput(t *testing.T) {
	ctx := testCtx(t)
	var nilCS *kubernetes.Clientset
	// Never dialled: bad input fails before any request.
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "https://127.0.0.1:1"})
	require.NoError(t, err)
	for name, c := range map[string]readiness.Check{
		"nil interface":       readiness.StaticPodReady(nil, podNS, podName),
		"nil clientset":       readiness.StaticPodReady(nilCS, podNS, podName),
		"empty namespace":     readiness.StaticPodReady(cs, "", podName),
		"empty name":          readiness.StaticPodReady(cs, podNS, ""),
		"empty expected hash": readiness.StaticPodReady(cs, podNS, podName, readiness.WithExpectedHash("")),
		"empty old hash":      readiness.StaticPodReady(cs, podNS, podName, readiness.WithHashChangedFrom("")),
		"nil option":          readiness.StaticPodReady(cs, podNS, podName, nil),
	} {
		t.Run(name, func(t *testing.T) {
			require.ErrorIs(t, readiness.Wait(ctx, c), readiness.ErrInvalid)
		})
	}
}
