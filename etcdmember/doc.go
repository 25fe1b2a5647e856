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
// at once (so are errors the client library raises before sending
// anything). A learner's progress is read from Maintenance.Status (raft
// applied index) on its own and the leader's client URLs; a learner that
// makes no progress for the stall timeout is ErrLearnerStalled, not a
// retry loop to the deadline.
//
// Safety over progress: no MemberPromote is ever sent for a learner that
// has not shown, in the same attempt, that it is receiving raft entries
// now. It must answer a status request on its own client URL close to the
// leader's index; then the Manager creates a fresh raft entry (a lease
// with a 5 s TTL, granted and at once revoked), reads the leader's raft
// index after it, and the learner's applied index, read on its own client
// URL, must reach that index within the RPC timeout. etcd's own check
// compares raft indices only, so a learner that caught up and then died
// would be promoted — and so would one whose raft links to the leader are
// cut while its client URL still answers (in an idle cluster it sits at
// the leader's own index; in a busy one within 90 % of it) — and a
// one-voter cluster would lose its quorum. Such a learner is "not ready"
// (unreachable, or not replicating) and, after the stall timeout,
// stalled; it is never promoted. The check costs a promotion two raft
// entries, a LeaseGrant and a LeaseRevoke, and two or more status
// requests: a few milliseconds on loopback (BenchmarkPromoteDeadEndpoint).
//
// Joins at the same moment do not wait out etcd's timeouts: etcd drops a
// membership change proposed while another is pending and never answers
// it, so a change whose reply is slow is checked against the member list
// while waiting; and Join starts members that join together one after the
// other, in ID order, because two etcd members starting at the same
// moment each wait on the other's peer URL (see Join).
//
// A dead endpoint does not hold up a call: membership RPCs are sent with
// grpc.WaitForReady(false) on connections of the call's own, to the
// client's endpoints in turn (an endpoint that does not connect within a
// second, or a learner's, is skipped and tried last next time), instead
// of through clientv3's shared connection, which waits for a ready
// endpoint (Talos #14097).
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
// a leader first, and says which of these happened in a RemoveResult). PromoteReady is the leader-side alternative used by k3s
// and k0s: run it on a ticker and it promotes learners that have caught
// up, reports stalled ones and, if asked, removes them.
//
// Every method takes ctx first, honours cancellation (returning an error
// that wraps ctx.Err() and says what was still pending), bounds each RPC
// (WithRPCTimeout), starts no goroutine or connection that outlives it,
// and never panics on bad input or server replies: nil and typed-nil
// arguments are errors wrapping ErrInvalidArgument; a panic in a function
// the caller gave (start function, backoff factory and policy, progress
// callback, logger) is recovered and reported as a *CallbackError
// (ErrCallbackPanicked); a panic in the client's own gRPC interceptors
// ends the call with an error (in the goroutines that probe voters for
// Remove, it counts as that voter not answering). A backoff policy's
// delay is never shorter than MinRetryInterval.
//
// # Permissions
//
// The package talks to etcd only, never to the Kubernetes apiserver, so it
// needs no RBAC rules. With etcd authentication enabled, membership
// changes (MemberAdd, MemberPromote, MemberRemove, MoveLeader) require the
// root role; MemberList and Status need an authenticated user. Promote,
// Join and PromoteReady also send LeaseGrant and LeaseRevoke for the
// replication check before a promotion; etcd checks no role for those (the
// lease is attached to no key), only that a token sent is valid, so the
// root user a promotion needs anyway suffices. A LeaseGrant refused for a
// permanent reason (e.g. permission denied by a proxy or fork that checks
// one) fails the call with that error: nothing is promoted unchecked. With mutual
// TLS, the client's certificate must be accepted by every member's client
// URL, because progress and health are read from each member directly
// (Maintenance.Status dials each member's advertised client URL with the
// client's TLS settings).
package etcdmember
