package etcdmember_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubeboot/kubeboot/etcdmember"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// kubeadmRetryInterval is kubeadm's EtcdAPICallRetryInterval.
const kubeadmRetryInterval = 500 * time.Millisecond

// kubeadmPromote is the loop kubeadm ran for years: MemberPromote every
// 500 ms until it succeeds, treating any error as "try again".
func kubeadmPromote(ctx context.Context, cli *clientv3.Client, id uint64) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, etcdmember.DefaultRPCTimeout)
		_, err := cli.MemberPromote(rctx, id)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubeadm-style promote of %x: %w (last error: %v)", id, ctx.Err(), err)
		case <-time.After(kubeadmRetryInterval):
		}
	}
}

// BenchmarkPromoteAfterCatchUp measures a learner joining a 3-voter
// cluster that holds benchKeys × 128 KiB (4 MiB by default; the snapshot
// count is small, so the learner catches up through a snapshot). Each op
// launches the learner's etcd and, at the same moment, the promote loop;
// it ends when the member is both a voter (the loop returned) and serving
// (its etcd reported ready). Medians per run:
//
//   - voter-ms/op: launch to the loop's return, the member a voter;
//   - ready-ms/op: launch to the member's etcd serving clients;
//   - react-ms/op: voter minus ready — the reaction latency after the
//     learner caught up and started; negative when the loop promoted the
//     learner before its etcd had finished starting;
//   - rpcs/op (lists, promotes, statuses): what the loop sent.
//
// The learner's etcd sometimes reports ready only after its 6 s publish
// timeout (a first publish lost while it catches up), with or without a
// promotion: such ops push ns/op (a mean over the whole op) and
// ready-ms/op up in both variants; voter-ms/op is the figure to compare.
//
// Sub-benchmarks run Manager.Promote with its default options and
// kubeadm's fixed 500 ms loop on the same cluster. Each op starts a real
// etcd member, so run it with a fixed count (EM_BENCH_KEYS changes the
// data size):
//
//	go test -run '^$' -bench PromoteAfterCatchUp -benchtime 5x -count 5 ./etcdmember/
func BenchmarkPromoteAfterCatchUp(b *testing.B) {
	c := newCluster(b, testenv.WithMembers(3), testenv.WithSnapshotCount(50))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	direct := c.Client()
	value := strings.Repeat("v", 128<<10)
	for i := range benchKeys {
		_, err := direct.Put(ctx, fmt.Sprintf("/bench/%02d", i), value)
		require.NoError(b, err)
	}
	voters := c.Endpoints()

	run := func(b *testing.B, name string, promote func(context.Context, *clientv3.Client, uint64) error) {
		counter := newRPCCounter()
		cli := countingClient(b, c, counter, voters...)
		var voter, ready, react []time.Duration
		var rpcs, lists, promotes, statuses int
		b.ResetTimer()
		b.StopTimer()
		for i := range b.N {
			spec, err := c.NewMemberSpec(fmt.Sprintf("%s-%d-%d", name, b.N, i))
			require.NoError(b, err)
			// A fresh cluster refuses membership changes for its first
			// five seconds ("unhealthy cluster").
			var add *clientv3.MemberAddResponse
			testenv.Eventually(b, time.Minute, 100*time.Millisecond, func() error {
				add, err = direct.MemberAddAsLearner(ctx, []string{spec.PeerURL})
				return err
			})
			id := add.Member.ID
			counter.reset()

			type started struct {
				m   *testenv.Member
				at  time.Time
				err error
			}
			startc := make(chan started, 1)
			b.StartTimer()
			t0 := time.Now()
			go func() {
				m, err := c.StartMember(ctx, spec, testenv.InitialCluster(add, spec.Name))
				startc <- started{m, time.Now(), err}
			}()
			err = promote(ctx, cli, id)
			promoted := time.Now()
			s := <-startc
			b.StopTimer()
			require.NoError(b, s.err)
			require.NoError(b, err)
			voter = append(voter, promoted.Sub(t0))
			ready = append(ready, s.at.Sub(t0))
			react = append(react, promoted.Sub(s.at))
			rpcs += counter.total()
			lists += counter.count(rpcMemberList)
			promotes += counter.count(rpcMemberPromote)
			statuses += counter.count(rpcStatus)

			// Back to three voters: stop the new one (a voter connected for
			// less than 5 s cannot be removed while running) and remove it.
			require.NoError(b, s.m.Kill())
			testenv.Eventually(b, time.Minute, 50*time.Millisecond, func() error {
				rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
				defer rcancel()
				_, err := direct.MemberRemove(rctx, id)
				if errors.Is(err, rpctypes.ErrMemberNotFound) {
					return nil
				}
				return err
			})
		}
		n := float64(b.N)
		b.ReportMetric(ms(median(voter)), "voter-ms/op")
		b.ReportMetric(ms(median(ready)), "ready-ms/op")
		b.ReportMetric(ms(median(react)), "react-ms/op")
		b.ReportMetric(float64(rpcs)/n, "rpcs/op")
		b.ReportMetric(float64(lists)/n, "lists/op")
		b.ReportMetric(float64(promotes)/n, "promotes/op")
		b.ReportMetric(float64(statuses)/n, "statuses/op")
	}

	b.Run("etcdmember", func(b *testing.B) {
		run(b, "em", func(ctx context.Context, cli *clientv3.Client, id uint64) error {
			m, err := etcdmember.New(cli)
			if err != nil {
				return err
			}
			_, err = m.Promote(ctx, id)
			return err
		})
	})
	b.Run("kubeadm-500ms", func(b *testing.B) {
		run(b, "ka", kubeadmPromote)
	})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// median of the durations (0 for none).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// benchKeys × 128 KiB is the data the learner catches up on.
var benchKeys = envInt("EM_BENCH_KEYS", 32)

func envInt(k string, d int) int {
	var v int
	if _, err := fmt.Sscan(os.Getenv(k), &v); err != nil {
		return d
	}
	return v
}

// BenchmarkConcurrentJoins measures the wall time of Join into a fresh
// one-member cluster with max-learners 3: one Join alone ("single") and
// three Joins at once, each with a Manager of its own as three nodes
// would have ("three-concurrent"), in the same run. Each op starts a new
// cluster (untimed) and ends when every Join returned a voter. Medians per
// run: wall-ms/op, and starts/op (how often start was called: more than
// one per member when a concurrent add made an initial-cluster string
// stale). The figure to compare is the ratio of the medians (aim: under
// 1.5×):
//
//	go test -run '^$' -bench ConcurrentJoins -benchtime 5x -count 3 ./etcdmember/
func BenchmarkConcurrentJoins(b *testing.B) {
	run := func(b *testing.B, n int) {
		var walls []time.Duration
		starts := 0
		b.ResetTimer()
		b.StopTimer()
		for i := range b.N {
			c := testenv.NewCluster(b, testenv.WithMaxLearners(3))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			specs := make([]testenv.MemberSpec, n)
			managers := make([]*etcdmember.Manager, n)
			for j := range n {
				var err error
				specs[j], err = c.NewMemberSpec(fmt.Sprintf("n%d-%d", i, j))
				require.NoError(b, err)
				managers[j], err = etcdmember.New(c.Client())
				require.NoError(b, err)
			}
			results := make([]etcdmember.JoinResult, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			b.StartTimer()
			t0 := time.Now()
			for j := range n {
				wg.Go(func() {
					results[j], errs[j] = managers[j].Join(ctx, specs[j].Name, []string{specs[j].PeerURL},
						etcdmember.JoinOptions{Cleanup: true}, startFor(c, specs[j]))
				})
			}
			wg.Wait()
			walls = append(walls, time.Since(t0))
			b.StopTimer()
			cancel()
			for j := range n {
				require.NoError(b, errs[j])
				starts += results[j].Starts
			}
			require.NoError(b, c.Close())
		}
		b.ReportMetric(ms(median(walls)), "wall-ms/op")
		b.ReportMetric(float64(starts)/float64(b.N), "starts/op")
	}
	b.Run("single", func(b *testing.B) { run(b, 1) })
	b.Run("three-concurrent", func(b *testing.B) { run(b, 3) })
}

// BenchmarkPromoteDeadEndpoint measures one Promote of a learner that has
// started and caught up, through a client whose endpoints are the healthy
// voters ("healthy") or a dead URL (nothing listening), the learner's own
// URL and one healthy voter ("dead-endpoint"), side by side with
// kubeadm's 500 ms MemberPromote loop through the same clients. Each
// sub-benchmark run starts a 3-voter cluster (without etcd's strict
// reconfiguration check, so that the learners can be added at once) and
// b.N learners (untimed); each op is one promotion. Medians per run:
// promote-ms/op, and rpcs/op sent by the promote path:
//
//	go test -run '^$' -bench PromoteDeadEndpoint -benchtime 5x -count 3 ./etcdmember/
func BenchmarkPromoteDeadEndpoint(b *testing.B) {
	variants := []struct {
		name    string
		promote func(context.Context, *clientv3.Client, uint64) error
	}{
		{"etcdmember", func(ctx context.Context, cli *clientv3.Client, id uint64) error {
			m, err := etcdmember.New(cli)
			if err != nil {
				return err
			}
			_, err = m.Promote(ctx, id)
			return err
		}},
		{"kubeadm-500ms", kubeadmPromote},
	}
	for _, v := range variants {
		for _, dead := range []bool{false, true} {
			name := v.name + "/healthy"
			if dead {
				name = v.name + "/dead-endpoint"
			}
			b.Run(name, func(b *testing.B) {
				c := testenv.NewCluster(b, testenv.WithMembers(3), testenv.WithMaxLearners(b.N), testenv.WithStrictReconfigCheck(false))
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				defer cancel()
				direct := c.Client()
				voters := c.Endpoints()
				nowhere, err := c.NewMemberSpec("nowhere") // ports reserved, nothing listening
				require.NoError(b, err)
				var leader string
				for _, mem := range c.Members() {
					if mem.IsLeader() {
						leader = mem.ClientURL
					}
				}
				if leader == "" {
					leader = voters[0]
				}
				type learner struct {
					id  uint64
					url string
				}
				learners := make([]learner, b.N)
				for i := range b.N {
					spec, err := c.NewMemberSpec(fmt.Sprintf("l%d", i))
					require.NoError(b, err)
					add, err := direct.MemberAddAsLearner(ctx, []string{spec.PeerURL})
					require.NoError(b, err)
					_, err = c.StartMember(ctx, spec, initialClusterOf(ctx, b, direct, add.Member.ID, spec.Name))
					require.NoError(b, err)
					learners[i] = learner{add.Member.ID, spec.ClientURL}
				}
				var times []time.Duration
				rpcs := 0
				b.ResetTimer()
				b.StopTimer()
				for i := range b.N {
					l := learners[i]
					waitCaughtUp(ctx, b, direct, l.url, leader)
					counter := newRPCCounter()
					eps := voters
					if dead {
						eps = []string{nowhere.ClientURL, l.url, leader}
					}
					cli := countingClient(b, c, counter, eps...)
					b.StartTimer()
					t0 := time.Now()
					err := v.promote(ctx, cli, l.id)
					times = append(times, time.Since(t0))
					b.StopTimer()
					require.NoError(b, err)
					rpcs += counter.total()
					require.NoError(b, cli.Close())
				}
				b.ReportMetric(ms(median(times)), "promote-ms/op")
				b.ReportMetric(float64(rpcs)/float64(b.N), "rpcs/op")
			})
		}
	}
}
