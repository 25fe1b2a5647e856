package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

// mirrorPod creates a mirror pod with the given config hash, Ready or not,
// as the kubelet would (status through UpdateStatus).
func mirrorPod(ctx context.Context, t *testing.T, cs kubernetes.Interface, hash string, ready bool) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-apiserver-node1", Namespace: "kube-system", Annotations: map[string]string{
			"kubernetes.io/config.mirror": hash, "kubernetes.io/config.hash": hash, "kubernetes.io/config.source": "file",
		}},
		Spec: corev1.PodSpec{NodeName: "node1", Containers: []corev1.Container{{Name: "kube-apiserver", Image: "registry.k8s.io/kube-apiserver:v1.36.3"}}},
	}
	pod, err := cs.CoreV1().Pods("kube-system").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ready {
		setReady(ctx, t, cs, pod)
	}
}

func setReady(ctx context.Context, t *testing.T, cs kubernetes.Interface, pod *corev1.Pod) {
	t.Helper()
	pod.Status = corev1.PodStatus{
		Phase:             corev1.PodRunning,
		Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "kube-apiserver", Ready: true, Image: pod.Spec.Containers[0].Image}},
	}
	if _, err := cs.CoreV1().Pods("kube-system").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestStaticPodExample: the old pod (hash "old") is Ready, which must not
// count; it is replaced by the new pod (hash "new"), not Ready at first,
// which must not count either; the program returns once the new pod is
// Ready.
func TestStaticPodExample(t *testing.T) {
	a := testenv.NewAPIServer(t)
	kubeconfig := testenv.KubeconfigFile(t, a)
	cs, err := a.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mirrorPod(ctx, t, cs, "old", true)

	var out testenv.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--kubeconfig", kubeconfig, "--pod", "kube-apiserver-node1",
			"--hash-changed-from", "old", "--stable-window", "100ms"}, &out)
	}()
	awaitOutput := func(want string) {
		t.Helper()
		testenv.Eventually(t, time.Minute, 20*time.Millisecond, func() error {
			select {
			case err := <-done:
				t.Fatalf("returned before the new pod was Ready: %v\n%s", err, out.String())
			default:
			}
			if !strings.Contains(out.String(), want) {
				return errors.New("output lacks " + want)
			}
			return nil
		})
	}
	awaitOutput("config hash old is still the old one") // the old pod is Ready, and rejected

	now := int64(0) // no kubelet runs to finish a graceful deletion
	if err := cs.CoreV1().Pods("kube-system").Delete(ctx, "kube-apiserver-node1", metav1.DeleteOptions{GracePeriodSeconds: &now}); err != nil {
		t.Fatal(err)
	}
	mirrorPod(ctx, t, cs, "new", false)
	awaitOutput("no Ready condition") // the new pod is there, not Ready yet

	pod, err := cs.CoreV1().Pods("kube-system").Get(ctx, "kube-apiserver-node1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	setReady(ctx, t, cs, pod)
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Logf("program output:\n%s", out.String())
	if !strings.Contains(out.String(), "mirror pod kube-system/kube-apiserver-node1 is ready") {
		t.Fatalf("output:\n%s", out.String())
	}
}
