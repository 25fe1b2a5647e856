package etcdmember_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/kubeboot/kubeboot/etcdmember"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// testenv members advertise the peer URL they listen on; the partition
// test needs members whose peers reach them only through a fault proxy
// (advertised peer URL = the proxy), so it starts its own embedded
// members with the same settings testenv uses (loopback, t.TempDir(),
// UnsafeNoFsync, 50 ms ticks).

// proxiedMember is an embedded etcd member whose advertised peer URL is a
// testenv fault proxy in front of its real peer listener: every raft
// message its peers send it goes through Peer.
type proxiedMember struct {
	name      string
	dir       string
	clientURL string
	listen    string // real peer URL
	Peer      *testenv.Proxy
	e         *embed.Etcd
}

func (m *proxiedMember) peerURL() string { return "http://" + m.Peer.Addr() }

var (
	partPortsMu sync.Mutex
	partPorts   = map[int]bool{}
)

// loopbackURL returns an http URL on a loopback port that was free a
// moment ago, below the ephemeral range (as testenv picks them).
func loopbackURL(t testing.TB) string {
	t.Helper()
	partPortsMu.Lock()
	defer partPortsMu.Unlock()
	for range 500 {
		p := 20000 + rand.IntN(12000)
		if partPorts[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		_ = l.Close()
		partPorts[p] = true
		return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	t.Fatal("no free loopback port")
	return ""
}

func newProxiedMember(t testing.TB, name string) *proxiedMember {
	t.Helper()
	m := &proxiedMember{name: name, dir: t.TempDir(), clientURL: loopbackURL(t), listen: loopbackURL(t)}
	m.Peer = testenv.NewProxyFor(t, strings.TrimPrefix(m.listen, "http://"))
	return m
}

// start starts the member with the given initial cluster and state and
// waits until it serves clients; the test's cleanup stops it.
func (m *proxiedMember) start(ctx context.Context, t testing.TB, initialCluster, state string) {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = m.name, filepath.Join(m.dir, "data")
	cu, err := url.Parse(m.clientURL)
	require.NoError(t, err)
	lu, err := url.Parse(m.listen)
	require.NoError(t, err)
	au, err := url.Parse(m.peerURL())
	require.NoError(t, err)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*lu}, []url.URL{*au}
	cfg.InitialCluster, cfg.ClusterState = initialCluster, state
	cfg.InitialClusterToken = "partition"
	cfg.UnsafeNoFsync = true
	cfg.TickMs, cfg.ElectionMs = 50, 500
	cfg.Logger, cfg.LogLevel = "zap", "info"
	cfg.LogOutputs = []string{filepath.Join(m.dir, "etcd.log")}
	e, err := embed.StartEtcd(cfg)
	require.NoError(t, err)
	m.e = e
	t.Cleanup(func() {
		e.Server.HardStop()
		e.Close()
	})
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("etcd member %s failed: %v", m.name, err)
	case <-ctx.Done():
		t.Fatalf("etcd member %s not ready: %v", m.name, ctx.Err())
	}
}

func partitionClient(t testing.TB, counter *rpcCounter, endpoints ...string) *clientv3.Client {
	t.Helper()
	cfg := clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if counter != nil {
		cfg.DialOptions = []grpc.DialOption{grpc.WithChainUnaryInterceptor(counter.interceptor())}
	}
	cli, err := clientv3.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// TestPromoteRefusesPartitionedLearner: one voter and a learner that
// started and caught up; then the raft peer links between them are cut
// both ways (fault proxies that drop everything) while the learner's
// client URL still answers status requests. In a busy cluster the leader
// moves on by a few percent of its index (the learner stays within etcd's
// 90 % threshold); in an idle one the learner sits at the leader's own
// index. Either way it is not receiving raft entries, and a promotion
// would leave two voters, one cut off: no quorum. Promote, Join and
// PromoteReady must send no MemberPromote, must name the learner and say
// it is not replicating, and the cluster keeps its quorum. Once the links
// are back, the same learner is promoted (the check refuses a partition,
// not every learner).
func TestPromoteRefusesPartitionedLearner(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after int // writes before the learner joins, and while it is cut off
	}{
		{"busy", 1500, 60},
		{"idle", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testenv.AwaitNoLeaks(t)
			ctx := testCtx(t)
			leader := newProxiedMember(t, "m0")
			leader.start(ctx, t, "m0="+leader.peerURL(), embed.ClusterStateFlagNew)
			direct := partitionClient(t, nil, leader.clientURL)
			put(ctx, t, direct, tc.before)

			counter := newRPCCounter()
			progress := newProgressLog()
			_, logger := newLogs(t)
			const stall, rpcTimeout = time.Second, 2 * time.Second
			m := newManager(t, partitionClient(t, counter, leader.clientURL),
				etcdmember.WithStallTimeout(stall), etcdmember.WithRPCTimeout(rpcTimeout),
				etcdmember.WithProgress(progress.record), etcdmember.WithLogger(logger))

			learner := newProxiedMember(t, "n")
			mem, err := m.AddLearner(ctx, learner.name, []string{learner.peerURL()})
			require.NoError(t, err)
			id := mem.ID
			learner.start(ctx, t, "m0="+leader.peerURL()+",n="+learner.peerURL(), embed.ClusterStateFlagExisting)
			_, err = m.WaitStarted(ctx, id)
			require.NoError(t, err)
			waitCaughtUp(ctx, t, direct, learner.clientURL, leader.clientURL)

			// Cut the raft links both ways; the client URLs still answer.
			leader.Peer.Blackhole(true)
			learner.Peer.Blackhole(true)
			put(ctx, t, direct, tc.after)
			ls, err := direct.Status(ctx, learner.clientURL)
			require.NoError(t, err, "the learner's client URL answers")
			ld, err := direct.Status(ctx, leader.clientURL)
			require.NoError(t, err)
			t.Logf("cut off: learner at raft applied index %d, leader at %d", ls.RaftAppliedIndex, ld.RaftAppliedIndex)
			require.GreaterOrEqual(t, float64(ls.RaftAppliedIndex), 0.9*float64(ld.RaftAppliedIndex),
				"the learner is within etcd's 90 %% threshold: only the replication check can refuse it")

			checkRefused := func(t *testing.T, err error) {
				t.Helper()
				require.ErrorIs(t, err, etcdmember.ErrLearnerStalled)
				require.Contains(t, err.Error(), hexID(id))
				require.Contains(t, err.Error(), "not replicating")
				require.Contains(t, err.Error(), "not receiving raft entries")
				var se *etcdmember.StalledError
				require.ErrorAs(t, err, &se)
				require.True(t, se.Progress.Reachable, "its client URL answers: %s", se.Progress)
				require.True(t, se.Progress.NotReplicating(), "%s", se.Progress)
				require.False(t, se.Progress.CaughtUp())
				require.Greater(t, se.Progress.ReplicationIndex, se.Progress.LearnerApplied)
			}
			t.Run("Promote", func(t *testing.T) {
				res, err := m.Promote(ctx, id)
				checkRefused(t, err)
				require.Zero(t, res.Attempts)
			})
			t.Run("Join", func(t *testing.T) {
				res, err := m.Join(ctx, learner.name, []string{learner.peerURL()}, etcdmember.JoinOptions{},
					func(context.Context, string) error { return nil }) // "already running"
				checkRefused(t, err)
				require.False(t, res.Added)
				require.Zero(t, res.Promote.Attempts)
			})
			t.Run("PromoteReady", func(t *testing.T) {
				rep, err := m.PromoteReady(ctx)
				require.NoError(t, err)
				require.Empty(t, rep.Promoted)
				require.Empty(t, rep.Unreachable)
				require.Equal(t, []uint64{id}, rep.NotReplicating)
				require.Len(t, rep.Learners, 1)
				p := rep.Learners[0]
				require.True(t, p.NotReplicating(), "%s", p)
				require.Contains(t, p.String(), hexID(id))
				require.Contains(t, p.String(), "not replicating")
			})
			require.Zero(t, counter.count(rpcMemberPromote), "no MemberPromote for a learner cut off from the leader")
			for _, p := range progress.all() {
				require.False(t, p.CaughtUp(), "no reading of the cut-off learner says caught up: %s", p)
			}

			// The cluster keeps its quorum.
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err = direct.Put(wctx, "still", "writable")
			require.NoError(t, err, "the cluster lost its quorum")
			ms := members(wctx, t, direct)
			require.Len(t, ms, 2)
			require.True(t, ms[id].IsLearner)

			// Links back: the learner replicates again and is promoted.
			for _, p := range []*testenv.Proxy{leader.Peer, learner.Peer} {
				p.Pass()
				p.ResetAll()
			}
			healed := newManager(t, partitionClient(t, nil, leader.clientURL))
			res, err := healed.Promote(ctx, id)
			require.NoError(t, err)
			require.GreaterOrEqual(t, res.Attempts, 1)
			require.True(t, res.Progress.CaughtUp(), "%s", res.Progress)
			require.False(t, members(ctx, t, direct)[id].IsLearner)
			wctx, cancel = context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err = direct.Put(wctx, "two", "voters")
			require.NoError(t, err)
		})
	}
}

// put writes n keys, eight at a time.
func put(ctx context.Context, t testing.TB, cli *clientv3.Client, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				if _, err := cli.Put(ctx, fmt.Sprintf("/load/%d", i%50), "v"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}
