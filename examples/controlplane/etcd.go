package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/kubeboot/kubeboot/etcdmember"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

const promoteMethod = "/etcdserverpb.Cluster/MemberPromote"

// startEtcd starts node 1's etcd, the seed of the cluster.
func (d *demo) startEtcd(ctx context.Context) error {
	d.tl.Record("node1", "etcd start", "begin", "")
	opts := []testenv.ClusterOption{testenv.WithNames("node1"), testenv.WithDir(filepath.Join(d.dir, "etcd"))}
	if d.cfg.Chaos > 0 {
		opts = append(opts, testenv.WithSnapshotCount(chaosSnapshotCount))
	}
	c, err := testenv.StartCluster(ctx, opts...)
	if err != nil {
		return err
	}
	d.etcd = c
	d.client = c.Client()
	d.tl.Record("node1", "etcd start", "ok", c.Member(0).ClientURL)
	return nil
}

// runningEndpoints are the client URLs of the members whose etcd runs.
func (d *demo) runningEndpoints() []string {
	var eps []string
	for _, m := range d.etcd.Members() {
		if m.Running() {
			eps = append(eps, m.ClientURL)
		}
	}
	return eps
}

// joinMembers joins nodes 2..N one at a time through etcdmember.Join:
// learner, started, caught up, promoted. With the promote-reply-lost fault,
// node 2 joins through a proxy that loses its first MemberPromote reply;
// with dead-learner, node N's etcd is killed right after it caught up, and
// its join must fail without promoting it (see deadLearner).
func (d *demo) joinMembers(ctx context.Context) error {
	for i := 2; i <= d.cfg.Members; i++ {
		node := fmt.Sprintf("node%d", i)
		spec, err := d.etcd.NewMemberSpec(node)
		if err != nil {
			return err
		}
		client, fault, err := d.joinClient(i)
		if err != nil {
			return err
		}
		opts := []etcdmember.Option{etcdmember.WithRPCTimeout(2 * time.Second), etcdmember.WithLogger(d.logger(node, "etcd join"))}
		var dead *deadLearner // the last node's etcd dies right after catching up
		if d.cfg.Fault == FaultDeadLearner && i == d.cfg.Members {
			dead = &deadLearner{d: d, node: node}
			opts = append(opts, dead.options()...)
		}
		mgr, err := etcdmember.New(client, opts...)
		if err != nil {
			return err
		}
		var caughtUp, target uint64
		start := func(ctx context.Context, initialCluster string) error {
			d.tl.Record(node, "etcd start", "begin", "initial-cluster "+initialCluster)
			m, err := d.etcd.StartMember(ctx, spec, initialCluster)
			if err != nil {
				d.tl.Record(node, "etcd start", "failed", err.Error())
				return err
			}
			d.tl.Record(node, "etcd start", "ok", spec.ClientURL)
			if dead != nil {
				caughtUp, target, err = dead.afterStart(ctx, m)
			}
			return err
		}
		d.tl.Record(node, "etcd join", "begin", "learner "+spec.PeerURL)
		res, err := mgr.Join(ctx, node, []string{spec.PeerURL}, etcdmember.JoinOptions{Cleanup: true}, start)
		if fault != nil {
			fault.close()
		}
		if dead != nil {
			if err != nil {
				d.tl.Record(node, "etcd join", "failed", err.Error())
			}
			ev, oerr := dead.observe(ctx, res, err, caughtUp, target)
			d.res.DeadLearner = ev
			if oerr != nil {
				return oerr
			}
			d.res.FaultObserved = true
			continue
		}
		if err != nil {
			d.tl.Record(node, "etcd join", "failed", err.Error())
			return err
		}
		detail := fmt.Sprintf("voter %x after %d MemberPromote RPC(s)", res.Member.ID, res.Promote.Attempts)
		if res.Promote.ConfirmedByList {
			detail += ", confirmed from the member list"
		}
		d.tl.Record(node, "etcd join", "ok", detail)
		if fault != nil && fault.replyLost() && res.Promote.ConfirmedByList {
			d.res.FaultObserved = true
		}
	}
	return nil
}

// logger puts a package's log lines (its state changes, each logged once)
// on the timeline.
func (d *demo) logger(node, step string) logr.Logger {
	return funcr.New(func(_, args string) {
		d.tl.Record(node, step, "log", strings.TrimPrefix(args, `"level"=0 `))
	}, funcr.Options{})
}

// joinClient returns the client the joining node's manager uses: the shared
// one, or for node 2 under the promote-reply-lost fault, a client whose only
// endpoint is a proxy in front of node 1 that loses the first promote reply.
func (d *demo) joinClient(i int) (*clientv3.Client, *promoteReplyLoss, error) {
	if d.cfg.Fault != FaultPromoteReplyLost || i != 2 {
		return d.client, nil, nil
	}
	return d.lossyClient("node2")
}

// lossyClient returns a client whose only endpoint is a proxy in front of
// node 1 that loses the reply of a MemberPromote, for node's join.
func (d *demo) lossyClient(node string) (*clientv3.Client, *promoteReplyLoss, error) {
	proxy, err := testenv.NewProxy(d.etcd.Member(0).Endpoint())
	if err != nil {
		return nil, nil, err
	}
	f := &promoteReplyLoss{proxy: proxy, direct: d.client, tl: d.tl, node: node}
	client, err := d.etcd.NewClientConfig(clientv3.Config{
		Endpoints:   []string{"http://" + proxy.Addr()},
		DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(f.intercept)},
	})
	if err != nil {
		_ = proxy.Close()
		return nil, nil, err
	}
	f.client = client
	return client, f, nil
}

// promoteReplyLoss replays kubeadm #3317: a MemberPromote reaches etcd and
// is applied, and its reply is dropped on the way back. A promote that etcd
// rejects (the learner not caught up yet) has its reply dropped too, and the
// fault stays armed until one that etcd applied has lost its reply, as a
// direct client confirms from the member list.
type promoteReplyLoss struct {
	proxy  *testenv.Proxy
	client *clientv3.Client
	direct *clientv3.Client // not through the proxy
	tl     *Timeline
	node   string // the joining node, for the timeline

	mu   sync.Mutex
	lost bool // a promote etcd applied had its reply dropped
}

func (f *promoteReplyLoss) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	f.mu.Lock()
	armed := method == promoteMethod && !f.lost
	f.mu.Unlock()
	promote, ok := req.(*etcdserverpb.MemberPromoteRequest)
	if !armed || !ok {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	f.proxy.DropReplies(true)
	f.tl.Record(f.node, "fault", "injected", "MemberPromote sent; its reply will be dropped by the proxy")
	err := invoker(ctx, method, req, reply, cc, opts...)
	f.proxy.Pass()
	f.proxy.ResetAll()
	if err != nil && f.isVoter(ctx, promote.ID) {
		f.mu.Lock()
		f.lost = true
		f.mu.Unlock()
		f.tl.Record(f.node, "fault", "observed", fmt.Sprintf("etcd promoted the member, but its reply was lost: the client saw %v", err))
	}
	return err
}

// isVoter asks etcd directly whether member id is a voter.
func (f *promoteReplyLoss) isVoter(ctx context.Context, id uint64) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	list, err := f.direct.MemberList(ctx)
	if err != nil {
		return false
	}
	for _, m := range list.Members {
		if m.ID == id {
			return !m.IsLearner
		}
	}
	return false
}

// replyLost reports whether the dropped reply really failed the RPC.
func (f *promoteReplyLoss) replyLost() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lost
}

func (f *promoteReplyLoss) close() {
	_ = f.client.Close()
	_ = f.proxy.Close()
}

// killMember stops an etcd member at once, as a node that loses power
// does. A process member (KUBEBOOT_ETCD_VERSION) gets SIGKILL. An embedded
// one is closed (Member.Stop) instead of hard-stopped: embedded etcd v3.6.0
// keeps serving client and peer requests for a moment after a hard stop
// and panics in the one that reads its closed backend — a panic that takes
// the whole process down, which chaos runs hit. Closing stops serving
// first; for a member that does not lead it sends its peers nothing more
// than a kill would (a leader hands its leadership over first).
func killMember(m *testenv.Member) error {
	if m.Version() != testenv.EmbeddedEtcdVersion() {
		return m.Kill()
	}
	return m.Stop()
}
