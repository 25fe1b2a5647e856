package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

// voters counts the started voting members.
func voters(ctx context.Context, cli *clientv3.Client) (int, error) {
	list, err := cli.MemberList(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range list.Members {
		if !m.IsLearner && m.Name != "" {
			n++
		}
	}
	return n, nil
}

// TestKubeadmEtcdJoinRecipe runs the program: node2 joins a one-member
// cluster with etcd embedded in the program, and the program reports the
// cluster available only once both members are voters.
func TestKubeadmEtcdJoinRecipe(t *testing.T) {
	c := testenv.NewCluster(t)
	spec, err := c.NewMemberSpec("node2")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out testenv.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--endpoints", strings.Join(c.Endpoints(), ","), "--name", "node2",
			"--peer-url", spec.PeerURL, "--client-url", spec.ClientURL, "--data-dir", t.TempDir()}, &out)
	}()
	testenv.Eventually(t, time.Minute, 50*time.Millisecond, func() error {
		select {
		case err := <-done:
			t.Fatalf("program exited before serving: %v\n%s", err, out.String())
		default:
		}
		if !strings.Contains(out.String(), "etcd cluster is available") {
			return errors.New("the program has not reported the cluster available yet")
		}
		return nil
	})
	if n, err := voters(ctx, c.Client()); err != nil || n != 2 {
		t.Fatalf("after the program reported success: %d started voters (err %v), want 2\n%s", n, err, out.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
}

// TestKubeadmEtcdJoinRecipePromoteReplyLost injects kubeadm #3317: the
// joining node's MemberPromote reaches etcd and is applied, and its reply is
// dropped by a proxy on the way back. The recipe succeeds, having confirmed
// the promotion from the member list; the MemberPromote that kubeadm's loop
// would send next is refused with "can only promote a learner member".
func TestKubeadmEtcdJoinRecipePromoteReplyLost(t *testing.T) {
	c := testenv.NewCluster(t)
	spec, err := c.NewMemberSpec("node2")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	fault := &promoteReplyLoss{proxy: testenv.NewProxyFor(t, c.Member(0).Endpoint()), direct: c.Client()}
	cli, err := c.NewClientConfig(clientv3.Config{
		Endpoints:   []string{"http://" + fault.proxy.Addr()},
		DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(fault.intercept)},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	start := func(ctx context.Context, initialCluster string) error {
		_, err := c.StartMember(ctx, spec, initialCluster)
		return err
	}

	var out testenv.SyncBuffer
	if err := joinEtcd(ctx, cli, "node2", spec.PeerURL, start, &out); err != nil {
		t.Fatalf("joinEtcd: %v\n%s", err, out.String())
	}
	if fault.lostID() == 0 {
		t.Fatalf("no applied MemberPromote lost its reply; the fault was not injected\n%s", out.String())
	}
	if !strings.Contains(out.String(), "confirmed from the member list: true") {
		t.Errorf("the recipe did not report the promotion as confirmed from the member list:\n%s", out.String())
	}
	if n, err := voters(ctx, c.Client()); err != nil || n != 2 {
		t.Fatalf("%d started voters (err %v), want 2", n, err)
	}
	// What kubeadm's MemberPromote loop sends next, and gets back until it
	// gives up.
	_, err = c.Client().MemberPromote(ctx, fault.lostID())
	if !errors.Is(err, rpctypes.ErrMemberNotLearner) {
		t.Fatalf("a second MemberPromote: got %v, want %v", err, rpctypes.ErrMemberNotLearner)
	}
	t.Logf("recipe output:\n%skubeadm's next MemberPromote: %v", out.String(), err)
}

// promoteReplyLoss drops the reply of every MemberPromote through proxy
// until one that etcd applied (as a direct client confirms) has lost it.
type promoteReplyLoss struct {
	proxy  *testenv.Proxy
	direct *clientv3.Client

	mu   sync.Mutex
	lost uint64 // the member whose applied promote lost its reply
}

func (f *promoteReplyLoss) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	promote, ok := req.(*etcdserverpb.MemberPromoteRequest)
	if !ok || f.lostID() != 0 {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	f.proxy.DropReplies(true)
	err := invoker(ctx, method, req, reply, cc, opts...)
	f.proxy.Pass()
	f.proxy.ResetAll() // the connection lost bytes mid-stream
	if err != nil && f.isVoter(ctx, promote.ID) {
		f.mu.Lock()
		f.lost = promote.ID
		f.mu.Unlock()
	}
	return err
}

func (f *promoteReplyLoss) lostID() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lost
}

// isVoter asks etcd, not through the proxy, whether member id is a voter.
func (f *promoteReplyLoss) isVoter(ctx context.Context, id uint64) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
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
