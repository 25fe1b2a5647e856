// Package readiness answers "is it ready, and if not, why?" for the parts
// of a Kubernetes control plane, and waits until the answer is yes and
// stays yes.
//
// # Why
//
// RKE2 v1.31.8 released its startup hooks on "apiserver ready" while the
// etcd and kube-apiserver static pods were being recreated during an
// upgrade (rke2 #8269, fixed in v1.31.9-rc2). The gate had seen the old
// apiserver answer; a hook then hit it as it went away, and the process
// died. A readiness gate must mean that the current pod is up — the one
// with the new manifest — and that it stays up, and when it is not, it
// must say why instead of returning false.
//
// # Checks
//
// A Check returns nil when ready and an error naming the component and
// the reason otherwise. Built-ins:
//
//   - EtcdHealthy: a leader exists, a linearizable read succeeds, no alarm
//     is active; with WithMemberQuorum, a quorum of voting members answers
//     Status. The failure names every voting member that did not answer,
//     with its URLs. It answers as soon as the answer is known: one dead
//     member of three does not cost the attempt timeout.
//   - APIServerReady: GET /readyz (with excluded checks); a failure names
//     the failing checks ("[-]etcd"), and tells a credential or RBAC
//     problem (ErrAccessDenied) and a dead server (ErrUnreachable) apart
//     from "not ready" (*ReadyzError).
//   - StaticPodReady: the mirror pod exists, is not terminating, is Ready
//     with all containers ready, and carries the expected config hash (or
//     not the old one: WithHashChangedFrom). Event-driven: it watches the
//     one pod and judges the pod each event carries, so a short NotReady
//     between two events is seen, and the requests of a wait do not grow
//     with its length: a GET before the watch is up, one list and one
//     watch, and one more of each whenever the server ends the watch.
//   - KubeletStaticPodReady: the same rules for a static pod, read from
//     the node's own kubelet (GET /pods on its port) instead of the
//     apiserver, for when the pod being replaced is the apiserver itself:
//     it answers while the apiserver is down. The kubelet has no watch,
//     so Wait polls it with its backoff.
//   - HTTPGet and TCPDial.
//
// Named, All (every failure listed) and Any compose them; CheckFunc adapts
// a function.
//
// # Static pods: the apiserver or the kubelet
//
// StaticPodReady asks the apiserver about the mirror pod: watch-driven
// (Wait reacts within milliseconds, its requests do not grow with the
// wait), a Role on pods is enough, and it works from anywhere — but not
// while the apiserver is down, and the mirror pod is only the kubelet's
// report. KubeletStaticPodReady asks the node's kubelet: it answers while
// the apiserver restarts and sees the kubelet's own state, but it is
// polled (one GET /pods per attempt, every 2 s at most by default), runs
// where the kubelet's port is reachable, and needs kubelet credentials. On
// a node replacing its own kube-apiserver, gate on the kubelet and then
// on the apiserver serving:
//
//	hc, err := rest.HTTPClientFor(&rest.Config{TLSClientConfig: rest.TLSClientConfig{
//		CertData: cert, KeyData: key, CAData: kubeletCA, // a client certificate the kubelet trusts
//	}})
//	// ...
//	newAPIServer := readiness.All(
//		readiness.KubeletStaticPodReady(hc, "https://127.0.0.1:10250", "kube-system", "kube-apiserver-"+node,
//			readiness.WithHashChangedFrom(oldHash)),
//		readiness.APIServerReady(cs.Discovery().RESTClient()),
//	)
//	err = readiness.Wait(ctx, newAPIServer, readiness.WithStability(3, 2*time.Second))
//
// # Waiting
//
// Wait runs a check until it passes and stays passing (WithStability: "3
// passes spanning at least 2 s"), with a capped, jittered exponential
// backoff between failures (github.com/cenkalti/backoff/v4, replaceable
// with WithBackoff; no delay is shorter than MinDelay, so no policy makes
// Wait spin). A check that implements Watcher wakes Wait as soon as what
// it looks at changes, so Wait reacts in milliseconds and the backoff is
// only the floor — by default capped at DefaultWatchMaxDelay (30 s) when
// everything the check looks at is watched. Each attempt is bounded
// (WithAttemptTimeout); an observer (WithObserver) sees every attempt,
// and a logr logger (WithLogger) its progress. When the context ends, Wait returns a
// *NotReadyError that wraps ctx.Err() and carries the last reason and the
// attempt count. Gate turns a wait into the func(ctx) error gate that
// package hooks takes.
//
//	apiserverUp := readiness.All(
//		readiness.StaticPodReady(cs, "kube-system", "kube-apiserver-"+node,
//			readiness.WithHashChangedFrom(oldHash)),
//		readiness.APIServerReady(cs.Discovery().RESTClient()),
//	)
//	err := readiness.Wait(ctx, apiserverUp, readiness.WithStability(3, 2*time.Second))
//	var nr *readiness.NotReadyError
//	if errors.As(err, &nr) {
//		log.Error(err, "control plane not up", "attempts", nr.Attempts, "last", nr.Last)
//	}
//
// # RBAC
//
// What each check that talks to the apiserver or the kubelet needs,
// exactly (the tests run them under a ServiceAccount, or for the kubelet
// a client certificate, bound to these rules and nothing else):
//
//   - StaticPodReady: get, list and watch on pods in the pod's namespace
//     (a Role: apiGroups [""], resources ["pods"], verbs ["get", "list",
//     "watch"]).
//   - APIServerReady: get on the non-resource URL /readyz, which the
//     default ClusterRole system:public-info-viewer grants to all users,
//     authenticated or not; nothing to bind.
//   - KubeletStaticPodReady (the kubelet's API, authorized by the kubelet
//     through the apiserver in Webhook mode): get on nodes/pods (a
//     ClusterRole: apiGroups [""], resources ["nodes/pods"], verbs
//     ["get"], resourceNames [<node>] to limit it to one node). Kubelets
//     before 1.33 (or with KubeletFineGrainedAuthz off) ask for
//     nodes/proxy instead, which also authorizes /exec, /attach and
//     /portForward. Present a client certificate (the kubelet verifies it
//     without the apiserver) and make one request shortly before the
//     apiserver goes away: the kubelet caches an allow for 5 minutes and
//     cannot authorize an uncached request while the apiserver is down.
//
// EtcdHealthy talks to etcd, not the apiserver: with etcd authentication
// enabled, Maintenance.Status needs the root role on etcd v3.6 (any
// authenticated user on v3.7); the read (where
// "permission denied" still proves a quorum answered) and AlarmList need
// nothing.
//
// # Concurrency and cancellation
//
// Wait blocks and may be called concurrently; checks are safe for
// concurrent use. Nothing Wait starts outlives it, with two documented
// exceptions for user code that does not honour a context: a Watcher's
// Watch still running WatchGracePeriod after Wait cancelled it (see
// Wait), and EtcdHealthy's dial through a client made with
// grpc.WithBlock (see EtcdHealthy). Cancellation returns
// promptly with an error wrapping ctx.Err(). Bad input (nil clients or
// checks, typed nils of any type included, empty names, malformed URLs,
// addresses that can never be dialled — given directly or configured in
// a client —, bad options) fails with a permanent error wrapping
// ErrInvalid that names the argument, never a panic. A panic in user code the package calls — a check, a Watcher, a
// backoff policy, an observer, a clock, a logger, a client — is recovered
// and fails the check with an error wrapping ErrPanic: Wait returns it,
// and the process lives on.
package readiness
