package hooks

import (
	"fmt"
	"strings"
)

// Plan is the shape of a valid hook graph, for documentation and debugging.
type Plan struct {
	// Levels groups the hooks by the length of their longest chain of
	// dependencies: Levels[0] holds the hooks with no After, Levels[1]
	// those that run after level-0 hooks only, and so on. Within a level,
	// hooks are in the order they were added. Hooks of one level never
	// depend on each other, so they may run concurrently.
	Levels [][]string

	hooks []Hook
	deps  [][]int
}

// Plan validates the graph as Run does and returns its Plan. Its error
// wraps ErrUnknownDependency and/or ErrCycle. It does not block (beyond a
// short lock) and is goroutine-safe. A nil *Runner gives an error wrapping
// ErrInvalidInput.
func (r *Runner) Plan() (Plan, error) {
	if r == nil {
		return Plan{}, errNilRunner("Plan")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.graph
	if g == nil {
		var err error
		if g, err = newGraph(r.hooks); err != nil {
			return Plan{}, err
		}
	}
	p := Plan{hooks: r.hooks[:len(r.hooks):len(r.hooks)], deps: g.deps}
	for i, h := range r.hooks {
		for len(p.Levels) <= g.level[i] {
			p.Levels = append(p.Levels, nil)
		}
		p.Levels[g.level[i]] = append(p.Levels[g.level[i]], h.Name)
	}
	return p, nil
}

// DOT renders the graph in the Graphviz DOT language, edges pointing from a
// hook to the hooks that run after it. Hooks with a Gate are drawn as
// boxes, hooks with the Continue policy dashed. The output is
// deterministic: hooks and edges come in the order the hooks were added.
func (p Plan) DOT() string {
	var b strings.Builder
	b.WriteString("digraph hooks {\n\trankdir=LR;\n")
	for _, h := range p.hooks {
		var attrs []string
		if h.Gate != nil {
			attrs = append(attrs, "shape=box")
		}
		if h.OnFailure == Continue {
			attrs = append(attrs, "style=dashed")
		}
		fmt.Fprintf(&b, "\t%s", dotID(h.Name))
		if len(attrs) > 0 {
			fmt.Fprintf(&b, " [%s]", strings.Join(attrs, ", "))
		}
		b.WriteString(";\n")
	}
	for i, h := range p.hooks {
		for _, d := range p.deps[i] {
			fmt.Fprintf(&b, "\t%s -> %s;\n", dotID(p.hooks[d].Name), dotID(h.Name))
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// dotID quotes a hook name as a DOT string ID. In a DOT quoted string \"
// is the only escape, so a backslash just before the closing quote would
// escape it: a name ending in a backslash gets a line continuation
// (backslash, newline), which DOT removes, before the closing quote.
func dotID(name string) string {
	s := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(name)
	if strings.HasSuffix(s, `\`) {
		s += "\\\n"
	}
	return `"` + s + `"`
}
