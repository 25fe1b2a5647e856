package testenv

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/goleak"
)

// StartTimeout bounds how long NewCluster and NewAPIServer wait for their
// servers (a cold kube-apiserver build is not counted: make test builds it
// first).
const StartTimeout = 2 * time.Minute

// NewCluster starts an etcd cluster for the test, with its data in
// t.TempDir(); cleanup stops it and, if the test failed, logs each member's
// log tail.
//
// Members run as etcd processes when WithEtcdVersion or
// KUBEBOOT_ETCD_VERSION asks for EtcdVersion; the etcd binary is built (or
// found) first, outside StartTimeout.
func NewCluster(t testing.TB, opts ...ClusterOption) *Cluster {
	t.Helper()
	opts = append([]ClusterOption{WithDir(t.TempDir()), WithEtcdBuildLog(t.Logf)}, opts...)
	var cfg clusterConfig
	for _, o := range opts {
		o(&cfg)
	}
	version, err := selectedEtcdVersion()
	if cfg.versionSet {
		version, err = resolveEtcdVersion(cfg.version)
	}
	if err == nil && version != "" {
		bctx, bcancel := context.WithTimeout(context.Background(), 30*time.Minute)
		_, err = EtcdBinary(bctx, t.Logf)
		bcancel()
	}
	if err != nil {
		t.Fatalf("start etcd cluster: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	c, err := StartCluster(ctx, opts...)
	if err != nil {
		t.Fatalf("start etcd cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("etcd logs:\n%s", c.LogTail(40))
		}
		_ = c.Close()
	})
	return c
}

// NewAPIServer starts a real kube-apiserver (and, unless WithEtcd is given,
// its own single-member etcd) for the test; cleanup stops the apiserver
// before its etcd and, if the test failed, logs the apiserver's output tail.
func NewAPIServer(t testing.TB, opts ...APIServerOption) *APIServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	opts = append([]APIServerOption{WithAPIServerDir(t.TempDir()), WithBuildLog(t.Logf)}, opts...)
	a, err := StartAPIServer(ctx, opts...)
	if err != nil {
		t.Fatalf("start kube-apiserver: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube-apiserver log tail:\n%s", a.LogTail(60))
		}
		_ = a.Close()
	})
	return a
}

// NewControlPlane starts kube-controller-manager and kube-scheduler against
// a for the test, with their files in t.TempDir(); cleanup stops them and,
// if the test failed, logs both log tails.
func NewControlPlane(t testing.TB, a *APIServer, opts ...ControlPlaneOption) *ControlPlane {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	opts = append([]ControlPlaneOption{WithControlPlaneDir(t.TempDir()), WithControlPlaneBuildLog(t.Logf)}, opts...)
	c, err := StartControlPlane(ctx, a, opts...)
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane log tails:\n%s", c.LogTail(60))
		}
		_ = c.Close()
	})
	return c
}

// NewNode starts one hollow-kubelet node named name against a for the test
// and waits until it is Ready (see StartNode); cleanup stops it and, if the
// test failed, logs its log tail.
func NewNode(t testing.TB, a *APIServer, name string, opts ...NodeOption) *Node {
	t.Helper()
	return NewNodes(t, a, []string{name}, opts...)[0]
}

// NewNodes starts one node per name at once, with their files under
// t.TempDir(), and waits until all are Ready (see StartNodes); cleanup
// stops them and, if the test failed, logs each one's log tail.
func NewNodes(t testing.TB, a *APIServer, names []string, opts ...NodeOption) []*Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	opts = append([]NodeOption{WithNodeDir(t.TempDir()), WithNodeBuildLog(t.Logf)}, opts...)
	nodes, err := StartNodes(ctx, a, names, opts...)
	if err != nil {
		t.Fatalf("start nodes %v: %v", names, err)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if t.Failed() {
				t.Logf("node %s kubelet log tail (%s):\n%s", n.Name(), n.LogFile(), n.LogTail(60))
			}
			_ = n.Close()
		}
	})
	return nodes
}

// NewProxyFor starts a fault proxy in front of addr ("host:port") and closes
// it at cleanup.
func NewProxyFor(t testing.TB, addr string) *Proxy {
	t.Helper()
	p, err := NewProxy(addr)
	if err != nil {
		t.Fatalf("start proxy: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// Eventually calls cond every interval until it returns nil, failing the
// test with cond's last error if timeout passes first. It is for awaiting
// state that offers no watch; timeout is a failure guard, not a measurement.
func Eventually(t testing.TB, timeout, interval time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}

// LeakOptions are the goleak options for packages whose tests use these
// servers: goroutines that etcd, gRPC and client-go start once per process
// and never stop, none of which belongs to a test.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("k8s.io/client-go/util/workqueue.(*Typed[...]).updateUnfinishedWorkLoop"),
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	}
}

// IgnoreKilledEtcdPeerHandler is a goleak option for tests that kill
// embedded etcd members over and over (TestChaos): an embedded etcd v3.6.0
// member stopped while a peer's /version request is in flight
// (Member.Kill, the in-process stand-in for SIGKILL) leaves that request's
// handler blocked for good on its closed backend's read lock — a goroutine
// of the stopped server, which a real SIGKILL would have taken with the
// process. Pass it only where members are killed.
func IgnoreKilledEtcdPeerHandler() goleak.Option {
	return goleak.IgnoreAnyFunction("go.etcd.io/etcd/server/v3/etcdserver/api/etcdhttp.newPeerHandler.versionHandler.func1")
}

// AwaitNoLeaks, called at the start of a test before it starts any server,
// makes the test's cleanup wait until every goroutine started since the call
// has ended, and fail the test naming them if some are still there after 30
// s. It pins a leak on the test that caused it, where goleak in TestMain can
// only say that the package leaked. Call it in top-level tests only: in a
// subtest it would also count goroutines that the parent's still-running
// servers start.
//
// extra are further goleak options (IgnoreKilledEtcdPeerHandler, say).
func AwaitNoLeaks(t testing.TB, extra ...goleak.Option) {
	t.Helper()
	opts := append(append(LeakOptions(), extra...), goleak.IgnoreCurrent())
	t.Cleanup(func() {
		Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
			return goleak.Find(opts...)
		})
	})
}

// KubeconfigFile writes an admin kubeconfig for a into the test's temporary
// directory and returns its path.
func KubeconfigFile(t testing.TB, a *APIServer) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := a.Kubeconfig(path); err != nil {
		t.Fatalf("write kubeconfig: %v", err)
	}
	return path
}

// FastBackoff is a retry policy for tests about retrying: exponential from
// 20 ms to a 300 ms cap, with jitter and no elapsed-time limit.
func FastBackoff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 20*time.Millisecond, 300*time.Millisecond, 0
	b.RandomizationFactor = 0.2
	b.Reset()
	return b
}
