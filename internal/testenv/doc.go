// Package testenv runs the real servers kubeboot is tested against: embedded
// etcd clusters (1..N members, joining learners, mutual TLS), a loopback TCP
// fault proxy that can lose replies for real, and a real kube-apiserver
// process built from k8s.io/kubernetes at a pinned version.
//
// It is imported only by tests and examples, never by library packages.
//
// Every server listens on 127.0.0.1 only. The core constructors
// (StartCluster, StartAPIServer) return errors and are usable from example
// programs; the New* wrappers take a testing.TB, register cleanup, and print
// the server logs when the test fails.
//
// Environment:
//   - KUBEBOOT_KUBE_APISERVER: path to a kube-apiserver binary to use instead
//     of building one.
//   - KUBEBOOT_TEST_VERBOSE=1: stream etcd and kube-apiserver logs to stderr.
package testenv
