package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

const hashKey = "kubernetes.io/config.hash"

// staticPod is a control-plane static pod for the hollow kubelet, with an
// httpGet readiness probe when probePort is not 0.
func staticPod(name, image string, probePort int) *corev1.Pod {
	c := corev1.Container{Name: name, Image: image}
	if probePort != 0 {
		c.ReadinessProbe = &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Host: "127.0.0.1", Port: intstr.FromInt(probePort), Path: "/readyz"}},
			PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1,
		}
	}
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{c}, TerminationGracePeriodSeconds: new(int64)},
	}
}

func writeManifest(t *testing.T, dir string, pod *corev1.Pod) string {
	t.Helper()
	b, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, pod.Name+".json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mirrorPod reads a mirror pod: its hash, whether its container runs, and
// whether it is Ready.
func mirrorPod(ctx context.Context, cs kubernetes.Interface, name string) (hash string, running, ready bool, err error) {
	p, err := cs.CoreV1().Pods("kube-system").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", false, false, err
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	for _, s := range p.Status.ContainerStatuses {
		running = s.State.Running != nil
	}
	return p.Annotations[hashKey], running, ready && p.DeletionTimestamp == nil, nil
}

// TestRKE2StaticPodsRecipeNewPodNotReady: a real (hollow) kubelet runs etcd
// and kube-apiserver static pods, Ready. The program installs new manifests
// whose kube-apiserver pod fails its readiness probe. While the new pod runs
// with the new hash and /readyz answers 200 — what RKE2's CRI check and
// /readyz poll wait for — the program holds, naming the not-Ready pod; it
// returns once the probe passes.
func TestRKE2StaticPodsRecipeNewPodNotReady(t *testing.T) {
	a := testenv.NewAPIServer(t)
	n := testenv.NewNode(t, a, "node1")
	cs, err := a.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var healthy atomic.Bool // the new kube-apiserver pod's readiness probe
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	probePort, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}

	// The running control plane: old manifests, mirror pods Ready.
	old := map[string]string{}
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if err := n.WriteStaticPod(staticPod(name, "registry.k8s.io/"+name+":old", 0)); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 2*time.Minute, 50*time.Millisecond, func() error {
			hash, _, ready, err := mirrorPod(ctx, cs, n.MirrorPodName(name))
			if err != nil || !ready {
				return fmt.Errorf("old %s mirror pod not Ready (err %v)", name, err)
			}
			old[name] = hash
			return nil
		})
	}

	dir := t.TempDir()
	manifests := writeManifest(t, dir, staticPod("etcd", "registry.k8s.io/etcd:new", 0)) + "," +
		writeManifest(t, dir, staticPod("kube-apiserver", "registry.k8s.io/kube-apiserver:new", probePort))
	var out testenv.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--kubeconfig", testenv.KubeconfigFile(t, a), "--node", "node1",
			"--static-pod-dir", n.StaticPodDir(), "--manifests", manifests, "--stable-window", "500ms"}, &out)
	}()

	apiserverMirror := n.MirrorPodName("kube-apiserver")
	testenv.Eventually(t, 2*time.Minute, 50*time.Millisecond, func() error {
		select {
		case err := <-done:
			t.Fatalf("returned while the new kube-apiserver pod was not Ready: %v\n%s", err, out.String())
		default:
		}
		hash, running, ready, err := mirrorPod(ctx, cs, apiserverMirror)
		if err != nil || hash == old["kube-apiserver"] || !running || ready {
			return fmt.Errorf("want the new %s running and not Ready: hash %s, running %v, ready %v, err %v", apiserverMirror, hash, running, ready, err)
		}
		if !strings.Contains(out.String(), "mirror pod kube-system/"+apiserverMirror+": condition Ready is False") {
			return errors.New("the program has not named the new, running kube-apiserver pod as not Ready yet")
		}
		return nil
	})
	// RKE2's second condition holds too.
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").Param("verbose", "").DoRaw(ctx)
	if err != nil {
		t.Fatalf("/readyz?verbose: %v", err)
	}
	t.Logf("/readyz?verbose answers 200 meanwhile (%d bytes)", len(body))
	select {
	case err := <-done:
		t.Fatalf("returned while the new kube-apiserver pod was not Ready: %v\n%s", err, out.String())
	default:
	}

	healthy.Store(true)
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Logf("program output:\n%s", out.String())
	for _, name := range []string{"etcd", "kube-apiserver"} {
		hash, _, ready, err := mirrorPod(ctx, cs, n.MirrorPodName(name))
		if err != nil || hash == old[name] || !ready {
			t.Errorf("%s after the program returned: hash %s (old %s), ready %v, err %v", name, hash, old[name], ready, err)
		}
	}
	if !strings.Contains(out.String(), "control plane is up") {
		t.Errorf("output:\n%s", out.String())
	}
}
