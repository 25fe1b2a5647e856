// Package testenv runs the real servers kubeboot is tested against: embedded
// etcd clusters (1..N members, joining learners, mutual TLS), a loopback TCP
// fault proxy that can lose replies for real, a real kube-apiserver process,
// and real node-side components — kube-controller-manager, kube-scheduler
// and hollow kubelets — all built from k8s.io/kubernetes at one pinned
// version (KubernetesVersion).
//
// It is imported only by tests and examples, never by library packages.
//
// Every server listens on 127.0.0.1 only. The core constructors
// (StartCluster, StartAPIServer, StartControlPlane, StartNode, StartNodes)
// return errors and are usable from example programs; the New* wrappers
// take a testing.TB, register cleanup, and print the server logs when the
// test fails. Every component process runs in its own process group with a
// parent-death signal, so none outlives the test binary.
//
// # Nodes
//
// A Node is a hollow kubelet (k8s.io/kubernetes/pkg/kubemark: the real
// kubelet code over a fake CRI runtime, the way Kubernetes' own scale tests
// run nodes), registered as system:node:<name> with a client certificate
// from the apiserver's CA. Mirror pods of static pods, pod readiness from
// httpGet probes, Deployment and DaemonSet rollouts, Jobs, node leases and
// node health are what the real kubelet, controller-manager and scheduler
// do. No container runs: sandboxes get a fake IP, exec probes always pass,
// and a container runs until stopped unless FakeExit in its environment
// makes it exit with a chosen code. Write static pod manifests with
// Node.WriteStaticPod (atomic; a manifest copied in place is read
// half-written). Replacing a static pod takes the kubelet about 11 s: its
// pod worker waits a fixed back-off for the old pod to terminate.
//
//	a := testenv.NewAPIServer(t)
//	testenv.NewControlPlane(t, a)
//	nodes := testenv.NewNodes(t, a, []string{"node-a", "node-b"})
//	_ = nodes[0].WriteStaticPod(pod) // mirror pod pod.Name+"-node-a" appears
//
// # Binaries
//
// Each binary is built once per version into the user cache directory
// (<cache>/kubeboot/<name>-<version>-<os>-<arch>/<key>/, a file lock per
// component keeps processes from building it twice) by the nested tools
// module internal/testenv/apiserverbuild, with its version stamped.
// `make test` builds all four first (internal/testenv/cmd/binaries).
//
// Environment:
//   - KUBEBOOT_KUBE_APISERVER, KUBEBOOT_KUBE_CONTROLLER_MANAGER,
//     KUBEBOOT_KUBE_SCHEDULER, KUBEBOOT_HOLLOW_KUBELET: path to a binary to
//     use instead of building one.
//   - KUBEBOOT_TEST_VERBOSE=1: stream the servers' logs to stderr instead
//     of log files.
package testenv
