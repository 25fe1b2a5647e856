package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// sharedNodeNames are the nodes of the cluster the workload tests share.
var sharedNodeNames = []string{"node-a", "node-b", "node-c"}

// shared is one apiserver, control plane and three nodes, started by the
// first test that asks and stopped by TestMain: starting them costs a few
// seconds that the workload tests need not pay each. Each test works in a
// namespace of its own.
var shared struct {
	once  sync.Once
	err   error
	dir   string
	api   *APIServer
	cp    *ControlPlane
	nodes []*Node
	took  time.Duration
}

type cluster struct {
	api   *APIServer
	cp    *ControlPlane
	nodes []*Node
	cs    *kubernetes.Clientset
}

// sharedCluster returns the shared cluster, starting it on first use. If
// the test fails, its cleanup logs the components' log tails.
func sharedCluster(t *testing.T) cluster {
	t.Helper()
	shared.once.Do(func() {
		defer func() {
			if shared.err == nil {
				t.Logf("shared cluster (etcd, kube-apiserver, controller-manager, scheduler, %d nodes) Ready in %s", len(sharedNodeNames), shared.took.Round(time.Millisecond))
			}
		}()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		if shared.dir, shared.err = os.MkdirTemp("", "kubeboot-shared-"); shared.err != nil {
			return
		}
		if shared.api, shared.err = StartAPIServer(ctx, WithAPIServerDir(filepath.Join(shared.dir, "api"))); shared.err != nil {
			return
		}
		if shared.cp, shared.err = StartControlPlane(ctx, shared.api, WithControlPlaneDir(filepath.Join(shared.dir, "cp"))); shared.err != nil {
			return
		}
		shared.nodes, shared.err = StartNodes(ctx, shared.api, sharedNodeNames, WithNodeDir(filepath.Join(shared.dir, "nodes")))
		shared.took = time.Since(start)
	})
	if shared.err != nil {
		t.Fatalf("shared cluster: %v", shared.err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Logf("kube-apiserver log tail:\n%s", shared.api.LogTail(40))
		t.Logf("control plane log tails:\n%s", shared.cp.LogTail(40))
		for _, n := range shared.nodes {
			t.Logf("node %s log tail:\n%s", n.Name(), n.LogTail(40))
		}
	})
	cs, err := shared.api.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	return cluster{api: shared.api, cp: shared.cp, nodes: shared.nodes, cs: cs}
}

func closeShared() {
	for _, n := range shared.nodes {
		_ = n.Close()
	}
	if shared.cp != nil {
		_ = shared.cp.Close()
	}
	if shared.api != nil {
		_ = shared.api.Close()
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
	awaitPeerConnsClosed(10 * time.Second)
}

// testNamespace creates a namespace for the test and deletes it at cleanup.
func testNamespace(t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := strings.ToLower(t.Name())
	if len(name) > 40 {
		name = name[:40]
	}
	name += "-" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ensureNamespace(ctx, cs, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = cs.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	})
	return name
}

// podReady reports the pod's Ready condition.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// nodeReady returns the node's Ready condition status ("" if none).
func nodeReady(n *corev1.Node) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return ""
}

// rssMiB returns the resident memory of a process, from /proc.
func rssMiB(pid int) (float64, error) {
	if pid == 0 {
		return 0, errors.New("not running")
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.Atoi(f[1])
			return float64(kb) / 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// pod returns a minimal pod spec with one container.
func podSpec(image string, env ...corev1.EnvVar) corev1.PodSpec {
	return corev1.PodSpec{
		Containers:                    []corev1.Container{{Name: "c", Image: image, Env: env}},
		TerminationGracePeriodSeconds: new(int64),
	}
}
