// Package testenv runs the real servers kubeboot is tested against: etcd
// clusters (1..N members, joining learners, mutual TLS; embedded v3.6
// servers, or etcd v3.7.3 processes, or a mix), a loopback TCP fault proxy
// that can lose replies for real, a real kube-apiserver process, and real
// node-side components — kube-controller-manager, kube-scheduler and hollow
// kubelets — all built from k8s.io/kubernetes at one of the supported
// versions (KubernetesVersions; KubernetesVersion by default).
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
// # Versions
//
// Kubernetes: every supported version (KubernetesVersions, one per
// maintained minor) has its own go.mod in
// internal/testenv/apiserverbuild/v1.<minor>/, generated from that
// version's k8s.io/kubernetes go.mod (each k8s.io/<staging> module replaced
// by the published v0.<minor>.<patch>; go run
// ./internal/testenv/cmd/k8s-tools-module). KUBEBOOT_KUBERNETES_VERSION
// selects the version a test binary runs; WithKubernetesVersion starts one
// apiserver at another. A control plane and nodes run their apiserver's
// version (APIServer.KubernetesVersion), so no kubelet is newer than its
// apiserver.
//
// etcd: members are embedded servers (EmbeddedEtcdVersion) unless
// WithEtcdVersion or KUBEBOOT_ETCD_VERSION asks for EtcdVersion, which runs
// every member as an etcd process built from go.etcd.io/etcd/server/v3 by
// the tools module internal/testenv/etcdbuild; WithMemberVersion starts one
// joining member of the other kind (a v3.7 member joining a v3.6 cluster).
// Both kinds offer the same Member API. A process member's readiness is
// polled (a Status call on its client URL), the one wait here that is not
// event-driven: another process offers nothing to wait on.
//
// # Binaries
//
// Each binary is built once per version into the user cache directory
// (<cache>/kubeboot/<name>-<version>-<os>-<arch>/<key>/, a file lock per
// component and version keeps processes from building it twice; the key
// hashes the version's go.mod, the flags and the hollow kubelet's sources),
// with its version stamped. `make test` builds all four of the selected
// version first, and kube-apiserver of the others
// (internal/testenv/cmd/binaries).
//
// Environment:
//   - KUBEBOOT_KUBERNETES_VERSION: the Kubernetes version to run, one of
//     KubernetesVersions or its minor ("1.35"); default KubernetesVersion.
//     An unsupported value fails every binary lookup.
//   - KUBEBOOT_KUBE_APISERVER, KUBEBOOT_KUBE_CONTROLLER_MANAGER,
//     KUBEBOOT_KUBE_SCHEDULER, KUBEBOOT_HOLLOW_KUBELET: path to a binary of
//     the selected version to use instead of building one.
//   - KUBEBOOT_ETCD_VERSION: "v3.7.3" (or "3.7") runs every etcd member as
//     a process of that version; unset or "embedded" keeps them embedded.
//   - KUBEBOOT_ETCD: path to an etcd v3.7.3 server binary to use instead of
//     building one.
//   - KUBEBOOT_TEST_VERBOSE=1: stream the servers' logs to stderr instead
//     of log files.
package testenv
