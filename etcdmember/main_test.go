package etcdmember_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/kubeboot/kubeboot/etcdmember"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

// newCluster is testenv.NewCluster with a per-test leak check, so a leak
// is pinned on the test that caused it.
func newCluster(t testing.TB, opts ...testenv.ClusterOption) *testenv.Cluster {
	t.Helper()
	testenv.AwaitNoLeaks(t)
	return testenv.NewCluster(t, opts...)
}

// guard bounds every test's context. It is a failure guard, not a timing
// assertion: nothing should come close to it.
const guard = 2 * time.Minute

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	t.Cleanup(cancel)
	return ctx
}

// RPC method names as the gRPC client interceptor sees them.
const (
	rpcMemberList    = "/etcdserverpb.Cluster/MemberList"
	rpcMemberAdd     = "/etcdserverpb.Cluster/MemberAdd"
	rpcMemberPromote = "/etcdserverpb.Cluster/MemberPromote"
	rpcMemberRemove  = "/etcdserverpb.Cluster/MemberRemove"
	rpcStatus        = "/etcdserverpb.Maintenance/Status"
	rpcMoveLeader    = "/etcdserverpb.Maintenance/MoveLeader"
	rpcLeaseGrant    = "/etcdserverpb.Lease/LeaseGrant"
	rpcLeaseRevoke   = "/etcdserverpb.Lease/LeaseRevoke"
)

// rpcCounter counts the unary RPCs a client sends, by method. It sits
// inside etcd's retry interceptor, so every attempt on the wire counts.
type rpcCounter struct {
	mu     sync.Mutex
	n      map[string]int
	before func(method string) // called before each RPC is sent, if set
	after  func(method string) // called after each RPC returned, if set
}

func newRPCCounter() *rpcCounter { return &rpcCounter{n: map[string]int{}} }

func (c *rpcCounter) interceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		c.mu.Lock()
		c.n[method]++
		before, after := c.before, c.after
		c.mu.Unlock()
		if before != nil {
			before(method)
		}
		err := invoker(ctx, method, req, reply, cc, opts...)
		if after != nil {
			after(method)
		}
		return err
	}
}

func (c *rpcCounter) count(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[method]
}

func (c *rpcCounter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	sum := 0
	for _, n := range c.n {
		sum += n
	}
	return sum
}

func (c *rpcCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

func (c *rpcCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n = map[string]int{}
}

// countingClient returns a client for the endpoints whose RPCs c counts
// (the Manager's Status and MoveLeader dials inherit the interceptor).
func countingClient(t testing.TB, cl *testenv.Cluster, c *rpcCounter, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := cl.NewClientConfig(clientv3.Config{
		Endpoints:   endpoints,
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(c.interceptor())},
	})
	require.NoError(t, err)
	return cli
}

// logs captures what a Manager logs, one line per call.
type logs struct {
	mu    sync.Mutex
	lines []string
	waits map[string]chan struct{}
}

func newLogs(t testing.TB) (*logs, logr.Logger) {
	l := &logs{waits: map[string]chan struct{}{}}
	sink := funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		line := prefix + " " + args
		l.lines = append(l.lines, line)
		for sub, ch := range l.waits {
			if strings.Contains(line, sub) {
				close(ch)
				delete(l.waits, sub)
			}
		}
	}, funcr.Options{Verbosity: 1})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager log:\n%s", l.all())
		}
	})
	return l, sink
}

// when returns a channel closed at the first line containing sub (already
// logged or not).
func (l *logs) when(sub string) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch := make(chan struct{})
	for _, line := range l.lines {
		if strings.Contains(line, sub) {
			close(ch)
			return ch
		}
	}
	l.waits[sub] = ch
	return ch
}

func (l *logs) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, sub) {
			n++
		}
	}
	return n
}

func (l *logs) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// await waits for ch within the guard.
func await(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(guard):
		t.Fatalf("waiting for %s: test guard of %s passed", what, guard)
	}
}

func newManager(t testing.TB, cli *clientv3.Client, opts ...etcdmember.Option) *etcdmember.Manager {
	t.Helper()
	m, err := etcdmember.New(cli, append([]etcdmember.Option{etcdmember.WithBackoff(testenv.FastBackoff)}, opts...)...)
	require.NoError(t, err)
	return m
}

// readTimeout bounds each try of a read the test makes through a client of
// its own (member list, status). clientv3 waits for a ready connection and
// retries an Unavailable reply (a linearizable read whose read index the
// leader cannot confirm yet, a leader change) until the call's context
// ends: with the test's whole context, one read that gets no answer would
// take the rest of the test, and the test would fail with "context
// deadline exceeded" instead of what it was waiting for. Bounded, such a
// read fails and is tried again. A failure guard, not a timing assertion.
const readTimeout = 5 * time.Second

// eventually is testenv.Eventually, within the guard, for a condition
// that reads through the test's own clients: each call of cond gets a
// context bounded by readTimeout, so a read that hangs is tried again
// rather than taking the whole test. It fails the test, with cond's last
// error, as soon as ctx ends.
func eventually(ctx context.Context, t testing.TB, interval time.Duration, cond func(ctx context.Context) error) {
	t.Helper()
	var last error
	testenv.Eventually(t, guard, interval, func() error {
		if err := ctx.Err(); err != nil {
			t.Fatalf("test context ended (%v); last: %v", err, last)
		}
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		defer cancel()
		last = cond(rctx)
		return last
	})
}

// memberList reads the member list (linearizable) through a client of the
// test's own, each try bounded by readTimeout, trying again until one
// succeeds (the test fails if none does within the guard or ctx).
func memberList(ctx context.Context, t testing.TB, cli *clientv3.Client) *clientv3.MemberListResponse {
	t.Helper()
	var resp *clientv3.MemberListResponse
	eventually(ctx, t, 50*time.Millisecond, func(ctx context.Context) (err error) {
		resp, err = cli.MemberList(ctx)
		return err
	})
	return resp
}

// members is memberList by member ID.
func members(ctx context.Context, t testing.TB, cli *clientv3.Client) map[uint64]*clientMember {
	t.Helper()
	return byID(memberList(ctx, t, cli))
}

// listMembers reads the member list once, with ctx as it is: for a
// condition of eventually, which bounds it.
func listMembers(ctx context.Context, cli *clientv3.Client) (map[uint64]*clientMember, error) {
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return nil, err
	}
	return byID(resp), nil
}

func byID(resp *clientv3.MemberListResponse) map[uint64]*clientMember {
	out := map[uint64]*clientMember{}
	for _, m := range resp.Members {
		out[m.ID] = &clientMember{Name: m.Name, IsLearner: m.IsLearner, PeerURLs: m.PeerURLs}
	}
	return out
}

type clientMember struct {
	Name      string
	IsLearner bool
	PeerURLs  []string
}

// logFill is how many raft entries fillLog writes.
const logFill = 50

// fillLog writes logFill entries through cli, before a learner is added,
// in a test that needs etcd to take the first MemberPromote Promote sends.
//
// etcd refuses a MemberPromote (ErrLearnerNotReady) while the leader's
// record of the learner's log (its raft Match) is below 90 % of its own.
// Promote's replication check appends two raft entries (a lease grant,
// then its revoke) just before its MemberPromote, and the learner's
// acknowledgement of them may still be on its way to the leader when the
// promote arrives: in a fresh one-member cluster, at raft index 8, that
// is 7/8 < 90 %, and etcd refuses the promote (seen with etcd v3.7.3
// processes on a loaded 2-core machine; Promote then tries again, which a
// test that counts one MemberPromote, or drops its reply, cannot have).
// logFill more entries (a raft index of about 60 when the promote
// arrives) let the learner lag by 5 entries or more. Fewer than 100:
// etcd takes an in-memory snapshot every 100 applied entries, after which
// a new member catches up from a snapshot, which these tests are not
// about.
func fillLog(ctx context.Context, t testing.TB, cli *clientv3.Client) {
	t.Helper()
	for i := range logFill {
		_, err := cli.Put(ctx, "/kubeboot-test/fill", fmt.Sprint(i))
		require.NoError(t, err)
	}
}

// startFor returns a Join start function that starts spec's member in c.
func startFor(c *testenv.Cluster, spec testenv.MemberSpec) etcdmember.StartFunc {
	return func(ctx context.Context, initialCluster string) error {
		_, err := c.StartMember(ctx, spec, initialCluster)
		return err
	}
}

// waitCaughtUp waits until the learner's applied index has reached the
// leader's (both read directly, not through the code under test, each
// pair of reads bounded by readTimeout).
func waitCaughtUp(ctx context.Context, t testing.TB, cli *clientv3.Client, learnerURL, leaderURL string) {
	t.Helper()
	eventually(ctx, t, 50*time.Millisecond, func(ctx context.Context) error {
		ls, err := cli.Status(ctx, learnerURL)
		if err != nil {
			return err
		}
		ld, err := cli.Status(ctx, leaderURL)
		if err != nil {
			return err
		}
		if ls.RaftAppliedIndex < ld.RaftAppliedIndex {
			return fmt.Errorf("learner applied %d < leader %d", ls.RaftAppliedIndex, ld.RaftAppliedIndex)
		}
		return nil
	})
}

func hexID(id uint64) string { return fmt.Sprintf("%x", id) }
