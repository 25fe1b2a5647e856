package etcdmember_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
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
