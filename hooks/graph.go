package hooks

import (
	"errors"
	"fmt"
	"strings"
)

// graph is a validated dependency graph over hooks, by index in Add order.
type graph struct {
	deps       [][]int // deps[i]: the hooks i runs after, in After order
	dependants [][]int // dependants[i]: the hooks that run after i, in Add order
	level      []int   // level[i]: length of the longest dependency chain ending at i
	order      []int   // a topological order, stable with respect to Add order
}

// newGraph resolves the After names of hooks and checks that they form a
// DAG. Its error wraps ErrUnknownDependency (listing every unknown name
// with the hook that named it), ErrCycle (showing one cycle), or both.
func newGraph(hooks []Hook) (*graph, error) {
	index := make(map[string]int, len(hooks))
	for i, h := range hooks {
		index[h.Name] = i
	}
	g := &graph{
		deps:       make([][]int, len(hooks)),
		dependants: make([][]int, len(hooks)),
		level:      make([]int, len(hooks)),
	}
	var unknown []string
	for i, h := range hooks {
		var missing []string
		for _, a := range h.After {
			d, ok := index[a]
			if !ok {
				missing = append(missing, fmt.Sprintf("%q", a))
				continue
			}
			g.deps[i] = append(g.deps[i], d)
			g.dependants[d] = append(g.dependants[d], i)
		}
		if len(missing) > 0 {
			unknown = append(unknown, fmt.Sprintf("hook %q runs after %s", h.Name, strings.Join(missing, ", ")))
		}
	}
	var errs []error
	if len(unknown) > 0 {
		errs = append(errs, fmt.Errorf("hooks: %w: %s", ErrUnknownDependency, strings.Join(unknown, "; ")))
	}
	if cycle := g.sort(); cycle != nil {
		path := make([]string, len(cycle))
		for k, i := range cycle {
			path[k] = hooks[i].Name
		}
		errs = append(errs, fmt.Errorf("hooks: %w: %s", ErrCycle, strings.Join(path, " → ")))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return g, nil
}

// sort fills g.order and g.level with Kahn's algorithm. If the graph has a
// cycle it returns one, as indices in run order with the first repeated at
// the end, starting at the earliest-added hook on it.
func (g *graph) sort() []int {
	n := len(g.deps)
	indegree := make([]int, n)
	queue := make([]int, 0, n)
	for i := range n {
		indegree[i] = len(g.deps[i])
		if indegree[i] == 0 {
			queue = append(queue, i)
		}
	}
	// queue doubles as the order: queue[:head] are done.
	for head := 0; head < len(queue); head++ {
		i := queue[head]
		for _, d := range g.dependants[i] {
			g.level[d] = max(g.level[d], g.level[i]+1)
			if indegree[d]--; indegree[d] == 0 {
				queue = append(queue, d)
			}
		}
	}
	g.order = queue
	if len(queue) == n {
		return nil
	}
	// Every hook left has a dependency that is also left, so walking
	// dependencies from any of them must come back to a hook already seen.
	start := 0
	for indegree[start] == 0 {
		start++
	}
	seen := make(map[int]int) // hook → position in walk
	var walk []int
	for i := start; ; {
		if at, ok := seen[i]; ok {
			walk = walk[at:]
			break
		}
		seen[i] = len(walk)
		walk = append(walk, i)
		for _, d := range g.deps[i] {
			if indegree[d] > 0 {
				i = d
				break
			}
		}
	}
	// walk follows dependencies backwards; reverse it into run order and
	// rotate it to start at its earliest-added hook.
	for l, r := 0, len(walk)-1; l < r; l, r = l+1, r-1 {
		walk[l], walk[r] = walk[r], walk[l]
	}
	first := 0
	for k, i := range walk {
		if i < walk[first] {
			first = k
		}
	}
	cycle := append(walk[first:len(walk):len(walk)], walk[:first]...)
	return append(cycle, cycle[0])
}
