package readiness_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

// Helpers for tests on a real (hollow) kubelet from internal/testenv: the
// mirror pods these tests judge are the kubelet's own.

const hashAnnotation = "kubernetes.io/config.hash"

// probeServer answers the httpGet readiness probes of static pods: 200 on
// a path that is healthy, 503 otherwise. Paths start unhealthy.
type probeServer struct {
	srv  *httptest.Server
	port int
	mu   sync.Mutex
	ok   map[string]bool
}

func newProbeServer(t testing.TB) *probeServer {
	t.Helper()
	p := &probeServer{ok: map[string]bool{}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		ok := p.ok[r.URL.Path]
		p.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(p.srv.Close)
	u, err := url.Parse(p.srv.URL)
	require.NoError(t, err)
	p.port, err = strconv.Atoi(u.Port())
	require.NoError(t, err)
	return p
}

func (p *probeServer) set(path string, healthy bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ok[path] = healthy
}

// staticPod is a static pod manifest for the hollow kubelet: one container
// running image, Ready when its container runs or, with a non-empty
// probePath, when p answers 200 on it (probed every second, one failure
// or success flips it).
func staticPod(name, image string, p *probeServer, probePath string) *corev1.Pod {
	c := corev1.Container{Name: name, Image: image}
	if probePath != "" {
		c.ReadinessProbe = &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Host: "127.0.0.1", Port: intstr.FromInt(p.port), Path: probePath,
			}},
			PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1,
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: podNS},
		Spec: corev1.PodSpec{
			Containers:                    []corev1.Container{c},
			TerminationGracePeriodSeconds: new(int64),
		},
	}
}

// podIsReady reports the pod's Ready condition.
func podIsReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// awaitPod lists and watches the pod ns/name until cond accepts it (a nil
// pod: not found), and returns the pod it accepted. It fails the test at
// ctx's end, with cond's last complaint.
func awaitPod(ctx context.Context, t testing.TB, cs kubernetes.Interface, ns, name string, cond func(*corev1.Pod) error) *corev1.Pod {
	t.Helper()
	pod, _, err := watchPod(ctx, cs, ns, name, nil, cond)
	if err != nil {
		t.Fatalf("pod %s/%s: %v", ns, name, err)
	}
	return pod
}

// watchPod lists and watches the pod ns/name until cond accepts it (a nil
// pod: not found), and returns the pod it accepted and when it received
// it. listed, if not nil, is closed after the first list. At ctx's end it
// returns an error with cond's last complaint.
func watchPod(ctx context.Context, cs kubernetes.Interface, ns, name string, listed chan<- struct{}, cond func(*corev1.Pod) error) (*corev1.Pod, time.Time, error) {
	selector := fields.OneTermEqualSelector("metadata.name", name).String()
	last := errors.New("nothing seen yet")
	for ctx.Err() == nil {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: selector})
		if err != nil {
			last = err
			pause(ctx)
			continue
		}
		if listed != nil {
			close(listed)
			listed = nil
		}
		var pod *corev1.Pod
		if len(list.Items) > 0 {
			pod = &list.Items[0]
		}
		if last = cond(pod); last == nil {
			return pod, time.Now(), nil
		}
		w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: selector, ResourceVersion: list.ResourceVersion})
		if err != nil {
			last = err
			pause(ctx)
			continue
		}
		for ev := range w.ResultChan() {
			var seen *corev1.Pod
			switch ev.Type {
			case watch.Added, watch.Modified:
				seen, _ = ev.Object.(*corev1.Pod)
				if seen == nil {
					continue
				}
			case watch.Deleted:
			default:
				continue
			}
			if last = cond(seen); last == nil {
				at := time.Now()
				w.Stop()
				return seen, at, nil
			}
		}
		w.Stop()
	}
	return nil, time.Time{}, fmt.Errorf("%w (last: %v)", ctx.Err(), last)
}

// readyMirror accepts a Ready, not terminating mirror pod whose hash is
// not notHash.
func readyMirror(notHash string) func(*corev1.Pod) error {
	return func(pod *corev1.Pod) error {
		switch {
		case pod == nil:
			return errors.New("no mirror pod")
		case pod.Annotations[hashAnnotation] == notHash:
			return fmt.Errorf("hash %s is the old one", notHash)
		case pod.DeletionTimestamp != nil:
			return errors.New("terminating")
		case !podIsReady(pod):
			return errors.New("not Ready")
		}
		return nil
	}
}

// notReadyMirror accepts a mirror pod with hash hash that is not Ready.
func notReadyMirror(hash string) func(*corev1.Pod) error {
	return func(pod *corev1.Pod) error {
		switch {
		case pod == nil:
			return errors.New("no mirror pod")
		case pod.Annotations[hashAnnotation] != hash:
			return fmt.Errorf("hash %s, want %s", pod.Annotations[hashAnnotation], hash)
		case podIsReady(pod):
			return errors.New("still Ready")
		}
		return nil
	}
}

// pause is the delay before retrying a failed request: 100 ms or ctx's end.
func pause(ctx context.Context) {
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// newNode starts a hollow-kubelet node for the test with its files under a
// short directory: the kubelet binds a unix socket under
// <dir>/root/kubelet/pod-resources, and under t.TempDir() a long test name
// makes that path longer than a socket path may be (108 bytes), so the
// kubelet exits at start.
func newNode(t testing.TB, a *testenv.APIServer, name string) *testenv.Node {
	t.Helper()
	dir, err := os.MkdirTemp("", "kbr-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return testenv.NewNode(t, a, name, testenv.WithNodeDir(dir))
}
