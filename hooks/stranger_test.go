package hooks_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kubeboot/kubeboot/hooks"
)

// The public API used as a stranger would: many Run calls at once on one
// Runner, Add racing Run, the Runner called from its own hooks, and large
// graphs.
func TestStrangerUse(t *testing.T) {
	t.Run("concurrent Run calls: one runs, the others get ErrStarted", func(t *testing.T) {
		r := newRunner(t)
		var runs atomic.Int32
		require.NoError(t, r.Add(hooks.Hook{Name: "a", Run: func(context.Context) error { runs.Add(1); return nil }}))
		const n = 8
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() { errs <- r.Run(context.Background()) })
		}
		wg.Wait()
		close(errs)
		var started, ran int
		for err := range errs {
			switch {
			case err == nil:
				ran++
			default:
				require.ErrorIs(t, err, hooks.ErrStarted)
				started++
			}
		}
		assert.Equal(t, 1, ran)
		assert.Equal(t, n-1, started)
		assert.EqualValues(t, 1, runs.Load())
	})

	t.Run("Add racing Run: a hook is either run or refused", func(t *testing.T) {
		r := newRunner(t)
		require.NoError(t, r.Add(hooks.Hook{Name: "first", Run: ok}))
		var ran sync.Map
		errc := runAsync(context.Background(), r)
		var accepted []string
		for k := range 50 {
			name := fmt.Sprint("late-", k)
			err := r.Add(hooks.Hook{Name: name, Run: func(context.Context) error { ran.Store(name, true); return nil }})
			if err == nil {
				accepted = append(accepted, name)
			} else {
				require.ErrorIs(t, err, hooks.ErrStarted)
			}
		}
		require.NoError(t, result(t, errc))
		rep := byName(r.Report())
		assert.Len(t, rep, 1+len(accepted))
		for _, name := range accepted {
			_, ok := ran.Load(name)
			assert.True(t, ok, "%s was accepted but did not run", name)
			assert.Equal(t, hooks.Succeeded, rep[name].State)
		}
	})

	t.Run("a hook calling its own Runner", func(t *testing.T) {
		r := newRunner(t)
		require.NoError(t, r.Add(hooks.Hook{Name: "meta", Run: func(ctx context.Context) error {
			if err := r.Run(ctx); !assert.ErrorIs(t, err, hooks.ErrStarted) {
				return err
			}
			if err := r.Add(hooks.Hook{Name: "x", Run: ok}); !assert.ErrorIs(t, err, hooks.ErrStarted) {
				return err
			}
			assert.ErrorIs(t, r.Check(ctx), hooks.ErrNotDone)
			_, err := r.Plan()
			return err
		}}))
		require.NoError(t, r.Run(context.Background()))
		require.NoError(t, r.Check(context.Background()))
	})

	t.Run("large graphs", func(t *testing.T) {
		const n = 5000
		r := newRunner(t, hooks.WithConcurrency(3))
		var order atomic.Int64
		pos := make([]int64, 2*n+1)
		var hs []hooks.Hook
		// A chain of n hooks, n independent hooks, and one hook after all.
		var all []string
		for k := range n {
			h := hooks.Hook{Name: fmt.Sprint("chain-", k), Run: func(context.Context) error { pos[k] = order.Add(1); return nil }}
			if k > 0 {
				h.After = []string{fmt.Sprint("chain-", k-1)}
			}
			hs = append(hs, h)
			all = append(all, h.Name)
		}
		for k := range n {
			h := hooks.Hook{Name: fmt.Sprint("wide-", k), Run: func(context.Context) error { pos[n+k] = order.Add(1); return nil }}
			hs = append(hs, h)
			all = append(all, h.Name)
		}
		hs = append(hs, hooks.Hook{Name: "last", After: all, Run: func(context.Context) error { pos[2*n] = order.Add(1); return nil }})
		require.NoError(t, r.Add(hs...))
		p, err := r.Plan()
		require.NoError(t, err)
		require.Len(t, p.Levels, n+1)
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		require.NoError(t, r.Run(ctx))
		for k := 1; k < n; k++ {
			require.Less(t, pos[k-1], pos[k])
		}
		assert.EqualValues(t, 2*n+1, pos[2*n], "last ran before all of its dependencies")
		rep := r.Report()
		assert.Equal(t, "last", rep.CriticalPath[len(rep.CriticalPath)-1])
		assert.NoError(t, r.Check(ctx))
	})
}
