// Package etcdmember changes etcd cluster membership — add a learner, wait
// for it to start and catch up, promote it, remove a member — idempotently,
// deciding every step from the member list.
//
// # Why
//
// kubeadm joins a control-plane node by adding its etcd as a learner and
// promoting it. In kubeadm #3152 and #3317 the promote succeeded on the
// server, the client saw a timeout, and every retry failed for two minutes
// with "etcdserver: can only promote a learner member": the error was
// taken as the outcome, and the outcome was already the one wanted.
// kubeadm has re-fixed MemberPromote five times since 2023; a failed join
// also left its learner behind, occupying the cluster's only learner slot
// (kubeadm #3208). Error strings cannot even tell "not caught up" from
// "already done": some etcd versions answer a promote of a member promoted
// a moment ago with "can only promote a learner member which is in sync
// with leader".
//
// This package takes the member list as the only truth. Every operation
// reads it (linearizable) before acting and again after any error, and
// decides from it: a promote whose reply was lost ends in success because
// the list shows a voter; an add whose reply was lost ends with the member
// found by its peer URL. etcd errors are classified in one place, against
// the client's exported rpctypes values: "not ready" and "too many
// learners" wait with backoff (cenkalti/backoff, injectable), transient
// errors retry, permanent ones (permission denied, invalid argument) stop
// at once. A learner's progress is read from Maintenance.Status (raft
// applied index) on its and the leader's client URLs; a learner that makes
// no progress for the stall timeout is ErrLearnerStalled, not a retry loop
// to the deadline.
//
// # Use
//
// A joining node runs Join with a function that starts its etcd:
//
//	m, err := etcdmember.New(cli, etcdmember.WithLogger(log))
//	...
//	res, err := m.Join(ctx, "node-2", []string{"https://10.0.0.2:2380"},
//		etcdmember.JoinOptions{Cleanup: true},
//		func(ctx context.Context, initialCluster string) error {
//			return startEtcd(ctx, "--initial-cluster="+initialCluster,
//				"--initial-cluster-state=existing")
//		})
//
// The steps are also exported: AddLearner, WaitStarted, Promote, Remove
// (idempotent, refuses to lose quorum unless forced, moves leadership off
// a leader first). PromoteReady is the leader-side alternative used by k3s
// and k0s: run it on a ticker and it promotes learners that have caught
// up, reports stalled ones and, if asked, removes them.
//
// Every method takes ctx first, honours cancellation (returning an error
// that wraps ctx.Err() and says what was still pending), bounds each RPC
// (WithRPCTimeout), starts no goroutine that outlives it, and never
// panics on bad input or server replies.
//
// # Permissions
//
// The package talks to etcd only, never to the Kubernetes apiserver, so it
// needs no RBAC rules. With etcd authentication enabled, membership
// changes (MemberAdd, MemberPromote, MemberRemove, MoveLeader) require the
// root role; MemberList and Status need an authenticated user. With mutual
// TLS, the client's certificate must be accepted by every member's client
// URL, because progress and health are read from each member directly
// (Maintenance.Status dials each member's advertised client URL with the
// client's TLS settings).
package etcdmember
