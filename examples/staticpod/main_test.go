package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestStaticPodExample(t *testing.T) {
	a := testenv.NewAPIServer(t)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := a.Kubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	cs, err := a.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The new mirror pod (hash "new") exists but is not Ready yet.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-apiserver-node1", Namespace: "kube-system", Annotations: map[string]string{
			"kubernetes.io/config.mirror": "new", "kubernetes.io/config.hash": "new", "kubernetes.io/config.source": "file",
		}},
		Spec: corev1.PodSpec{NodeName: "node1", Containers: []corev1.Container{{Name: "kube-apiserver", Image: "registry.k8s.io/kube-apiserver:v1.36.3"}}},
	}
	pod, err = cs.CoreV1().Pods("kube-system").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--kubeconfig", kubeconfig, "--pod", "kube-apiserver-node1", "--hash-changed-from", "old"}, &out)
	}()
	testenv.Eventually(t, time.Minute, 20*time.Millisecond, func() error {
		if !strings.Contains(out.String(), "not ready:") {
			return errors.New("the program has not reported the pod as not ready yet")
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("returned while the pod was not Ready: %v\n%s", err, out.String())
	default:
	}

	// The kubelet marks it Ready.
	pod.Status = corev1.PodStatus{
		Phase:             corev1.PodRunning,
		Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "kube-apiserver", Ready: true, Image: pod.Spec.Containers[0].Image}},
	}
	if _, err := cs.CoreV1().Pods("kube-system").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "mirror pod kube-system/kube-apiserver-node1 is ready") {
		t.Fatalf("output:\n%s", out.String())
	}
}
