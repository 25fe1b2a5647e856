package readiness_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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

// hookRun is what the gated hook saw of the mirror pod, read through the
// API at the moment it ran.
type hookRun struct {
	uid         types.UID
	hash        string
	ready       bool
	terminating bool
	err         error
}

// hookNotRun fails the test if the hook has run.
func hookNotRun(t testing.TB, ran <-chan hookRun, when string) {
	t.Helper()
	select {
	case r := <-ran:
		t.Fatalf("%s: the hook ran (it saw %+v)", when, r)
	default:
	}
}

// notOld matches a failed attempt that names reason and is not about the
// old pod (whose failures say "is still the old one").
func notOld(reason string) func(readiness.Attempt) bool {
	return func(a readiness.Attempt) bool {
		return a.Err != nil && strings.Contains(a.Err.Error(), reason) && !strings.Contains(a.Err.Error(), "still the old one")
	}
}

// The RKE2 v1.31.8 sequence (rke2 #8269) on a real kubelet: a node runs a
// static kube-apiserver pod; its manifest is rewritten; the kubelet
// terminates the old pod and, after its pod worker's back-off, starts the
// new one. A hook gated on Wait(StaticPodReady(WithHashChangedFrom(old)),
// WithStability) runs only once the new mirror pod is Ready and has stayed
// Ready: not on the old pod, not while no pod is there, not while the new
// one is not Ready yet, and not across a NotReady of the new one during
// the stability window (its readiness probe fails once, for real, while
// the test holds Wait at its first pass through the observer). The hook
// reads the mirror pod through the API when it runs.
func TestStaticPodReadyRealKubeletUpgrade(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	a := testenv.NewAPIServer(t)
	n := newNode(t, a, "node1")
	ctx := testCtx(t)
	cs, err := a.Clientset()
	require.NoError(t, err)
	probe := newProbeServer(t)
	probe.set("/v1", true)
	const name = "kube-apiserver"
	mirror := n.MirrorPodName(name)
	require.Equal(t, podName, mirror)

	// The running control plane: the old pod, Ready.
	require.NoError(t, n.WriteStaticPod(staticPod(name, "registry.k8s.io/kube-apiserver:v1.31.8", probe, "/v1")))
	old := awaitPod(ctx, t, cs, podNS, mirror, readyMirror(""))
	oldHash, oldUID := old.Annotations[hashAnnotation], old.UID
	require.NotEmpty(t, oldHash)

	// The hook and its gate. The observer holds Wait at the first pass
	// until the test releases it.
	attempts := make(chan readiness.Attempt, 10000)
	held := make(chan readiness.Attempt, 1)
	release := make(chan struct{})
	var holdOnce, releaseOnce sync.Once
	releaseWait := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseWait)
	observe := readiness.WithObserver(func(at readiness.Attempt) {
		attempts <- at
		if at.Err == nil && at.Passes == 1 {
			holdOnce.Do(func() {
				held <- at
				select {
				case <-release:
				case <-ctx.Done():
				}
			})
		}
	})
	check := readiness.StaticPodReady(cs, podNS, mirror, readiness.WithHashChangedFrom(oldHash))
	gate := readiness.Gate(check, observe, readiness.WithStability(3, 2*time.Second))
	hook := func(ctx context.Context) hookRun {
		pod, err := cs.CoreV1().Pods(podNS).Get(ctx, mirror, metav1.GetOptions{})
		if err != nil {
			return hookRun{err: err}
		}
		return hookRun{uid: pod.UID, hash: pod.Annotations[hashAnnotation], ready: podIsReady(pod), terminating: pod.DeletionTimestamp != nil}
	}
	gateErr := make(chan error, 1)
	hookRan := make(chan hookRun, 1)
	go func() {
		err := gate(ctx)
		gateErr <- err
		if err == nil {
			hookRan <- hook(ctx)
		}
	}()

	// The old pod is up and Ready, but it is the old one.
	first := awaitAttempt(t, attempts, gateErr, "the old pod is rejected", failsWith("config hash "+oldHash+" is still the old one"))
	assert.Equal(t, "mirror pod kube-system/kube-apiserver-node1: config hash "+oldHash+" is still the old one", first.Err.Error())
	hookNotRun(t, hookRan, "old pod up")

	// The upgrade: a new manifest, whose pod is not Ready until its probe
	// passes.
	require.NoError(t, n.WriteStaticPod(staticPod(name, "registry.k8s.io/kube-apiserver:v1.31.9", probe, "/v2")))
	awaitAttempt(t, attempts, gateErr, "the new pod is there and not Ready", notOld("condition Ready is False"))
	hookNotRun(t, hookRan, "new pod not Ready")
	current, err := cs.CoreV1().Pods(podNS).Get(ctx, mirror, metav1.GetOptions{})
	require.NoError(t, err)
	newHash, newUID := current.Annotations[hashAnnotation], current.UID
	require.NotEqual(t, oldHash, newHash)
	require.NotEqual(t, oldUID, newUID)

	// The probe passes: the first pass, held by the observer.
	probe.set("/v2", true)
	select {
	case at := <-held:
		t.Logf("first pass of the new pod: attempt %d", at.N)
	case err := <-gateErr:
		t.Fatalf("Wait returned %v before a first pass", err)
	case <-ctx.Done():
		t.Fatal("no first pass before the guard")
	}
	awaitAttempt(t, attempts, gateErr, "the first pass", passes(1))
	// While Wait is held, the new pod goes NotReady (one failed probe)
	// and Ready again.
	probe.set("/v2", false)
	awaitPod(ctx, t, cs, podNS, mirror, notReadyMirror(newHash))
	probe.set("/v2", true)
	awaitPod(ctx, t, cs, podNS, mirror, readyMirror(oldHash))
	hookNotRun(t, hookRan, "new pod Ready for one attempt, then NotReady")
	releaseWait()
	blip := awaitAttempt(t, attempts, gateErr, "the NotReady is seen", notOld("condition Ready is False"))
	assert.Zero(t, blip.Passes, "the NotReady restarts the stability count")

	// Ready and staying Ready: the gate opens, and the hook sees the new
	// pod.
	require.NoError(t, awaitDone(t, gateErr, "new pod ready and stable"))
	stable := awaitAttempt(t, attempts, nil, "the stable attempt", func(a readiness.Attempt) bool { return a.Stable })
	assert.GreaterOrEqual(t, stable.Passes, 3)
	var ran hookRun
	select {
	case ran = <-hookRan:
	case <-ctx.Done():
		t.Fatal("the hook did not run")
	}
	require.NoError(t, ran.err)
	assert.Equal(t, newUID, ran.uid, "the hook saw the new mirror pod")
	assert.NotEqual(t, oldUID, ran.uid)
	assert.Equal(t, newHash, ran.hash)
	assert.True(t, ran.ready, "the mirror pod was Ready when the hook ran")
	assert.False(t, ran.terminating)

	// The expected-hash form of the same question.
	require.NoError(t, readiness.StaticPodReady(cs, podNS, mirror, readiness.WithExpectedHash(newHash)).Check(ctx))
	err = readiness.StaticPodReady(cs, podNS, mirror, readiness.WithExpectedHash("cccc")).Check(ctx)
	require.EqualError(t, err, "mirror pod kube-system/kube-apiserver-node1: config hash "+newHash+", want cccc")
	err = readiness.StaticPodReady(cs, podNS, mirror, readiness.WithHashChangedFrom(newHash)).Check(ctx)
	require.EqualError(t, err, "mirror pod kube-system/kube-apiserver-node1: config hash "+newHash+" is still the old one")
}

// Hand-made pods, because a kubelet cannot produce these states: it
// deletes its mirror pods with a zero grace period (and force-deletes, then
// recreates, a mirror pod someone else deletes), so a kubelet's mirror pod
// is terminating for an instant at most; and it never makes a pod without
// the kubernetes.io/config.mirror annotation. No kubelet runs here, so the
// apiserver keeps a deleted pod bound to node1 terminating for its grace
// period.
func TestStaticPodReadyTerminatingOrNotMirror(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	a := testenv.NewAPIServer(t)
	ctx := testCtx(t)
	cs, err := a.Clientset()
	require.NoError(t, err)
	createMirrorPod(ctx, t, cs, "bbbb", true)
	check := readiness.StaticPodReady(cs, podNS, podName, readiness.WithExpectedHash("bbbb"))
	require.NoError(t, check.Check(ctx))

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opt, attempts := observer()
	// Never stable: Wait looks at every change until cancelled.
	done := goWait(wctx, check, opt, tenMinutes, readiness.WithStability(1<<30, 0))
	awaitAttempt(t, attempts, done, "the pod passes", passes(1))

	// Deleted: terminating.
	require.NoError(t, cs.CoreV1().Pods(podNS).Delete(ctx, podName, metav1.DeleteOptions{}))
	awaitAttempt(t, attempts, done, "the pod is terminating", failsWith("mirror pod kube-system/kube-apiserver-node1: terminating (deletion requested at "))
	// Gone.
	zero := int64(0)
	require.NoError(t, cs.CoreV1().Pods(podNS).Delete(ctx, podName, metav1.DeleteOptions{GracePeriodSeconds: &zero}))
	awaitAttempt(t, attempts, done, "the pod is gone", failsWith("mirror pod kube-system/kube-apiserver-node1: not found"))
	// A Ready pod of that name that is not a mirror pod.
	plain := mirrorPod("bbbb")
	delete(plain.Annotations, "kubernetes.io/config.mirror")
	_, err = cs.CoreV1().Pods(podNS).Create(ctx, plain, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, setPodStatus(ctx, cs, true))
	// Once its status is written, that is the only complaint.
	awaitAttempt(t, attempts, done, "the Ready pod is not a mirror pod", func(a readiness.Attempt) bool {
		return a.Err != nil && a.Err.Error() == "mirror pod kube-system/kube-apiserver-node1: not a mirror pod (no kubernetes.io/config.mirror annotation)"
	})

	cancel()
	err = awaitDone(t, done, "cancelled")
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "not a mirror pod")
}

// The whole event-driven wait on a real kubelet's mirror pod, under a
// ServiceAccount bound to exactly the documented rules.
func TestStaticPodReadyLeastPrivilege(t *testing.T) {
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
	hash := pod.Annotations[hashAnnotation]

	const saNS, saName = "kubeboot-system", "readiness-gate"
	saCfg, err := a.ServiceAccountConfig(ctx, saNS, saName)
	require.NoError(t, err)
	sa, err := kubernetes.NewForConfig(saCfg)
	require.NoError(t, err)
	check := readiness.StaticPodReady(sa, podNS, podName, readiness.WithExpectedHash(hash))

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
	// ten-minute floor, only the watch can make Wait return once the
	// kubelet marks the pod Ready.
	opt, attempts := observer()
	done := goWait(ctx, check, opt, tenMinutes)
	awaitAttempt(t, attempts, done, "the pod is not ready", failsWith("condition Ready is False"))
	probe.set("/readyz", true)
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
