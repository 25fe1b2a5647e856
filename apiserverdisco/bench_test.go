package apiserverdisco_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// poller is the k3s-style reader the watcher replaces: it reads the whole
// prefix on a fixed period and reports each set that differs from the
// previous one, with the time it noticed.
type pollResult struct {
	set []string
	at  time.Time
}

func poll(ctx context.Context, cli *clientv3.Client, prefix string, every time.Duration, out chan<- pollResult) {
	t := time.NewTicker(every)
	defer t.Stop()
	var last []string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			continue
		}
		var set []string
		for _, kv := range resp.Kvs {
			set = append(set, string(kv.Value))
		}
		slices.Sort(set)
		if !slices.Equal(set, last) {
			last = set
			select {
			case out <- pollResult{set, time.Now()}:
			case <-ctx.Done():
				return
			}
		}
	}
}

// BenchmarkWatchReaction measures the time from a write to the watcher
// delivering the new set, beside a poller reading every 500 ms on the same
// etcd (k3s polls every 5 s; 500 ms keeps the benchmark short and the
// ratio conservative). Iterations alternate: an apiserver appears (a Put of
// a new key), then disappears (its Delete). Each write happens at a random
// phase of the poll period. Reported: medians in ms per kind, the poller's
// median, and poll/watch ratios. With the default debounce, additions are
// delivered at once and removals after the debounce.
func BenchmarkWatchReaction(b *testing.B) {
	for _, debounce := range []time.Duration{0, apiserverdisco.DefaultDebounce} {
		b.Run(fmt.Sprintf("debounce=%s", debounce), func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c := testenv.NewCluster(b)
			cli := c.Client()
			const prefix, period = "/bench/reaction/", 500 * time.Millisecond
			_, err := cli.Put(ctx, prefix+"fixed", `{"version":1,"address":"10.0.0.1:6443"}`)
			require.NoError(b, err)
			w, err := apiserverdisco.NewWatcher(ctx, apiserverdisco.EtcdPrefix(cli, prefix), apiserverdisco.WithDebounce(debounce))
			require.NoError(b, err)
			defer w.Close()
			_, err = w.Next(ctx)
			require.NoError(b, err)
			polled := make(chan pollResult)
			pollDone := make(chan struct{})
			go func() { defer close(pollDone); poll(ctx, cli, prefix, period, polled) }()
			defer func() { cancel(); <-pollDone }()
			<-polled // the poller's first read

			var addLat, removeLat, pollLat []time.Duration
			var addr, value string
			for i := 0; b.Loop(); i++ {
				time.Sleep(rand.N(period)) // a random phase of the poll period
				add := i%2 == 0
				if add {
					addr = fmt.Sprintf("10.2.%d.%d:6443", i/250%250, i%250+1)
					value = fmt.Sprintf(`{"version":1,"address":%q}`, addr)
				}
				start := time.Now()
				if add {
					_, err = cli.Put(ctx, prefix+"moving", value)
				} else {
					_, err = cli.Delete(ctx, prefix+"moving")
				}
				require.NoError(b, err)
				for {
					s, err := w.Next(ctx)
					require.NoError(b, err)
					if slices.Contains(s.Addresses, addr) == add {
						break
					}
				}
				if add {
					addLat = append(addLat, time.Since(start))
				} else {
					removeLat = append(removeLat, time.Since(start))
				}
				for r := range polled {
					if slices.Contains(r.set, value) == add {
						pollLat = append(pollLat, r.at.Sub(start))
						break
					}
				}
			}
			am, rm, pm := median(addLat), median(removeLat), median(pollLat)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(ms(am), "add-ms")
			b.ReportMetric(ms(rm), "remove-ms")
			b.ReportMetric(ms(pm), "poll500ms-ms")
			b.ReportMetric(float64(pm)/float64(am), "poll/add")
			b.ReportMetric(float64(pm)/float64(rm), "poll/remove")
		})
	}
}

// BenchmarkManyWatchers runs 1,000 watchers on one embedded etcd sharing
// one client, and reports: heap per watcher (client side plus the
// in-process etcd server's watch state), goroutines per watcher, the time
// one change takes to reach all of them (median over b.N changes), and the
// requests they make — Range calls and watches created per watcher, gRPC
// Watch streams opened, and requests of any kind during an idle period,
// which must be zero: nobody polls.
func BenchmarkManyWatchers(b *testing.B) {
	const n, prefix = 1000, "/bench/many/"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := testenv.NewCluster(b)
	rpcs := newRPCCounter()
	cli, err := c.NewClientConfig(clientv3.Config{DialOptions: rpcs.dialOptions()})
	require.NoError(b, err)
	_, err = c.Client().Put(ctx, prefix+"a", `{"version":1,"address":"10.0.0.1:6443"}`)
	require.NoError(b, err)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	r0, o0, m0 := rpcs.snapshot()
	ws := make([]*apiserverdisco.Watcher, n)
	for i := range ws {
		w, err := apiserverdisco.NewWatcher(ctx, apiserverdisco.EtcdPrefix(cli, prefix), apiserverdisco.WithDebounce(0))
		require.NoError(b, err)
		ws[i] = w
		defer w.Close()
	}
	for _, w := range ws {
		_, err := w.Next(ctx)
		require.NoError(b, err)
	}
	// A watcher delivers its first set from its list, before its watch is
	// created: wait until all watches are.
	testenv.Eventually(b, guard, 10*time.Millisecond, func() error {
		if _, _, m := rpcs.snapshot(); m-m0 < n {
			return fmt.Errorf("%d of %d watches created", m-m0, n)
		}
		return nil
	})
	runtime.GC()
	runtime.ReadMemStats(&after)
	g1 := runtime.NumGoroutine()
	r1, o1, m1 := rpcs.snapshot()

	// Idle: whatever is sent now would be polling.
	time.Sleep(3 * time.Second)
	r2, o2, m2 := rpcs.snapshot()
	idle := (r2 - r1) + (o2 - o1) + (m2 - m1)

	var fanout []time.Duration
	for i := 0; b.Loop(); i++ {
		addr := fmt.Sprintf("10.3.%d.%d:6443", i/250%250, i%250+1)
		start := time.Now()
		_, err := c.Client().Put(ctx, prefix+"b", fmt.Sprintf(`{"version":1,"address":%q}`, addr))
		require.NoError(b, err)
		for _, w := range ws {
			for {
				s, err := w.Next(ctx)
				require.NoError(b, err)
				if slices.Contains(s.Addresses, addr) {
					break
				}
			}
		}
		fanout = append(fanout, time.Since(start))
	}
	r3, _, _ := rpcs.snapshot()

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/n, "heapB/watcher")
	b.ReportMetric(float64(g1-g0)/n, "goroutines/watcher")
	b.ReportMetric(ms(median(fanout)), "fanout-ms")
	b.ReportMetric(float64(r1-r0)/n, "ranges/watcher")
	b.ReportMetric(float64(m1-m0)/n, "watch-creates/watcher")
	b.ReportMetric(float64(o1-o0), "watch-streams")
	b.ReportMetric(float64(idle), "idle-requests/3s")
	b.ReportMetric(float64(r3-r2), "ranges-during-changes")
}
