package hooks_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/kubeboot/kubeboot/hooks"
)

// benchDAG is a random DAG: hook i runs after up to three hooks chosen
// uniformly among the earlier ones, so index order is a topological order.
type benchDAG struct {
	deps [][]int
	cost []time.Duration // how long each hook sleeps, in the sleeping runs
}

func newBenchDAG(n int, minCost, maxCost time.Duration) benchDAG {
	rng := rand.New(rand.NewPCG(6, 2025)) // fixed: every run measures the same graph
	g := benchDAG{deps: make([][]int, n), cost: make([]time.Duration, n)}
	for i := range n {
		if i > 0 {
			for range rng.IntN(4) {
				g.deps[i] = append(g.deps[i], rng.IntN(i))
			}
		}
		g.cost[i] = minCost + time.Duration(rng.Int64N(int64(maxCost-minCost)))
	}
	return g
}

// criticalPath is the longest chain of costs through the graph: the least
// wall time any runner can take.
func (g benchDAG) criticalPath() time.Duration {
	finish := make([]time.Duration, len(g.deps))
	var longest time.Duration
	for i, deps := range g.deps {
		var start time.Duration
		for _, d := range deps {
			start = max(start, finish[d])
		}
		finish[i] = start + g.cost[i]
		longest = max(longest, finish[i])
	}
	return longest
}

func (g benchDAG) sum() time.Duration {
	var s time.Duration
	for _, c := range g.cost {
		s += c
	}
	return s
}

// runner builds a Runner over g whose hooks call run(i).
func (g benchDAG) runner(b *testing.B, run func(i int), opts ...hooks.Option) *hooks.Runner {
	r, err := hooks.New(opts...)
	if err != nil {
		b.Fatal(err)
	}
	hs := make([]hooks.Hook, len(g.deps))
	for i, deps := range g.deps {
		hs[i] = hooks.Hook{Name: hookName(i), Run: func(context.Context) error { run(i); return nil }}
		for _, d := range deps {
			hs[i].After = append(hs[i].After, hookName(d))
		}
	}
	if err := r.Add(hs...); err != nil {
		b.Fatal(err)
	}
	return r
}

// BenchmarkRunner1000 measures the runner over a 1,000-hook random DAG:
//
//   - noop: hooks that return at once; ns/hook is the scheduling overhead
//     per hook (release, goroutine, state, report), Runner construction
//     excluded. noop-callbacks adds an observer, a clock and a logger.
//   - sleep: hooks that sleep 5-15 ms; wall/critical-path is the run's wall
//     time over the graph's critical path (1.00 is ideal), and
//     wall/slept-critical-path the same over the critical path of the
//     durations the hooks really slept, which leaves out time.Sleep's
//     overshoot and so isolates the runner's own delay.
//   - sequential: the same sleeps one after another in topological order,
//     the kubeadm / k3s shape; its wall/critical-path is what the graph
//     saves, and wall/sum shows it is the sum.
func BenchmarkRunner1000(b *testing.B) {
	const n = 1000
	noop := func(int) {}

	noopRun := func(b *testing.B, opts ...hooks.Option) {
		g := newBenchDAG(n, time.Millisecond, 2*time.Millisecond)
		b.ReportAllocs()
		for range b.N {
			b.StopTimer()
			r := g.runner(b, noop, opts...)
			b.StartTimer()
			if err := r.Run(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/hook")
	}
	b.Run("noop", func(b *testing.B) { noopRun(b) })
	// noop-callbacks: the same with an observer, a clock and a logger at
	// V(1), each call of which runs on a goroutine of its own (so that a
	// panic or runtime.Goexit in it is contained); beside noop, it is the
	// cost of that containment.
	b.Run("noop-callbacks", func(b *testing.B) {
		noopRun(b,
			hooks.WithObserver(func(hooks.Event) {}),
			hooks.WithClock(time.Now),
			hooks.WithLogger(funcr.New(func(string, string) {}, funcr.Options{Verbosity: 1})))
	})

	g := newBenchDAG(n, 5*time.Millisecond, 15*time.Millisecond)
	cp := g.criticalPath()
	// slept records how long each hook really slept: time.Sleep overshoots
	// (by 0.1-1 ms on a busy VM), and the critical path of those real
	// durations is the least wall time any runner could have taken.
	slept := benchDAG{deps: g.deps, cost: make([]time.Duration, n)}
	sleep := func(i int) {
		start := time.Now()
		time.Sleep(g.cost[i])
		slept.cost[i] = time.Since(start)
	}

	b.Run("sleep", func(b *testing.B) {
		var wall, realCP time.Duration
		for range b.N {
			b.StopTimer()
			r := g.runner(b, sleep)
			b.StartTimer()
			start := time.Now()
			if err := r.Run(context.Background()); err != nil {
				b.Fatal(err)
			}
			wall += time.Since(start)
			realCP += slept.criticalPath()
		}
		b.ReportMetric(float64(wall)/float64(b.N)/float64(cp), "wall/critical-path")
		b.ReportMetric(float64(wall)/float64(realCP), "wall/slept-critical-path")
		b.ReportMetric(float64(cp)/1e6, "critical-path-ms")
	})

	b.Run("sequential", func(b *testing.B) {
		var wall time.Duration
		for range b.N {
			start := time.Now()
			for i := range g.deps { // index order is topological
				sleep(i)
			}
			wall += time.Since(start)
		}
		b.ReportMetric(float64(wall)/float64(b.N)/float64(cp), "wall/critical-path")
		b.ReportMetric(float64(wall)/float64(b.N)/float64(g.sum()), "wall/sum")
	})
}
