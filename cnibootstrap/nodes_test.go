package cnibootstrap_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// The add-on tests share one kube-apiserver, controller-manager, scheduler
// and three hollow kubelets, started by the first test that asks and
// stopped by TestMain before goleak looks; each test works in a namespace
// of its own. Starting them costs several seconds that each test need not
// pay again.
var nodes struct {
	once  sync.Once
	err   error
	dir   string
	api   *testenv.APIServer
	cp    *testenv.ControlPlane
	nodes []*testenv.Node
}

var nodeNames = []string{"node-a", "node-b", "node-c"}

type nodeEnv struct {
	api     *testenv.APIServer
	cs      *kubernetes.Clientset
	clients cnibootstrap.Clients
	nodes   []*testenv.Node
}

// nodeCluster returns the shared cluster, starting it on first use. If the
// test fails, its cleanup logs the components' log tails.
func nodeCluster(t testing.TB) nodeEnv {
	t.Helper()
	nodes.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		if nodes.dir, nodes.err = os.MkdirTemp("", "kubeboot-cni-nodes-"); nodes.err != nil {
			return
		}
		if nodes.api, nodes.err = testenv.StartAPIServer(ctx, testenv.WithAPIServerDir(filepath.Join(nodes.dir, "api"))); nodes.err != nil {
			return
		}
		if nodes.cp, nodes.err = testenv.StartControlPlane(ctx, nodes.api, testenv.WithControlPlaneDir(filepath.Join(nodes.dir, "cp"))); nodes.err != nil {
			return
		}
		nodes.nodes, nodes.err = testenv.StartNodes(ctx, nodes.api, nodeNames, testenv.WithNodeDir(filepath.Join(nodes.dir, "nodes")))
	})
	if nodes.err != nil {
		t.Fatalf("node cluster: %v", nodes.err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Logf("kube-apiserver log tail:\n%s", nodes.api.LogTail(30))
		t.Logf("control plane log tails:\n%s", nodes.cp.LogTail(30))
	})
	cs, err := nodes.api.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	c, err := cnibootstrap.NewClients(nodes.api.Config())
	if err != nil {
		t.Fatal(err)
	}
	return nodeEnv{api: nodes.api, cs: cs, clients: c, nodes: nodes.nodes}
}

func closeNodeCluster() {
	for _, n := range nodes.nodes {
		_ = n.Close()
	}
	if nodes.cp != nil {
		_ = nodes.cp.Close()
	}
	if nodes.api != nil {
		_ = nodes.api.Close()
	}
	if nodes.dir != "" {
		_ = os.RemoveAll(nodes.dir)
	}
}

// namespace creates a namespace for the test and deletes it at cleanup.
func namespace(t testing.TB, cs kubernetes.Interface) string {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	if len(name) > 40 {
		name = name[:40]
	}
	name = strings.Trim(name, "-") + "-" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = cs.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	})
	return name
}

const (
	imageV1 = "registry.k8s.io/pause:3.9"
	imageV2 = "registry.k8s.io/pause:3.10"
)

// podSpec is a one-container pod spec that terminates at once.
func podSpec(image string, env ...corev1.EnvVar) corev1.PodSpec {
	return corev1.PodSpec{
		Containers:                    []corev1.Container{{Name: "c", Image: image, Env: env}},
		TerminationGracePeriodSeconds: new(int64),
	}
}

// switchServer is a readiness endpoint on 127.0.0.1 that a test turns
// healthy and unhealthy; the kubelet's real prober reads it.
type switchServer struct {
	srv     *httptest.Server
	port    int
	healthy atomic.Bool
	probes  atomic.Int64
}

func newSwitchServer(t testing.TB, healthy bool) *switchServer {
	t.Helper()
	s := &switchServer{}
	s.healthy.Store(healthy)
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.probes.Add(1)
		if s.healthy.Load() {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(s.srv.Close)
	u, err := url.Parse(s.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if s.port, err = strconv.Atoi(u.Port()); err != nil {
		t.Fatal(err)
	}
	return s
}

// probe is a readiness probe on the server, checked every second.
func (s *switchServer) probe() *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Host: "127.0.0.1", Port: intstr.FromInt(s.port), Path: "/ready"}},
		PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1,
	}
}

func ptr[T any](v T) *T { return &v }

// notReturned fails the test if Wait has already returned.
func notReturned(t testing.TB, errc <-chan error, when string) {
	t.Helper()
	select {
	case err := <-errc:
		t.Fatalf("Wait returned %s: %v", when, err)
	default:
	}
}
