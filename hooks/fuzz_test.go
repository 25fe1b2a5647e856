package hooks_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kubeboot/kubeboot/hooks"
)

// fuzzGraph is a hook graph decoded from fuzz input:
//
//	data[0] % 16     number of hooks, h0..h15
//	data[1]          bit i set: hook i (i < 8) fails
//	data[2] % 4      concurrency limit (0: none); bit 4 set: failures Abort
//	data[3:] pairs   (x, y): hook x%n runs after hook y%(n+2); y%(n+2) >= n
//	                 names an unknown hook
type fuzzGraph struct {
	n           int
	fails       []bool
	concurrency int
	abort       bool
	after       [][]int // may hold indices >= n: unknown hooks
}

func decodeGraph(data []byte) fuzzGraph {
	at := func(i int) byte {
		if i < len(data) {
			return data[i]
		}
		return 0
	}
	g := fuzzGraph{n: int(at(0) % 16), concurrency: int(at(2) % 4), abort: at(2)&0x10 != 0}
	g.fails = make([]bool, g.n)
	g.after = make([][]int, g.n)
	for i := range g.n {
		g.fails[i] = i < 8 && at(1)&(1<<i) != 0
	}
	if g.n == 0 {
		return g
	}
	for k := 3; k+1 < len(data) && k < 3+2*64; k += 2 {
		x, y := int(data[k])%g.n, int(data[k+1])%(g.n+2)
		g.after[x] = append(g.after[x], y)
	}
	return g
}

func hookName(i int) string { return fmt.Sprint("h", i) }

// hasUnknown and hasCycle are the reference answers, computed without the
// package.
func (g fuzzGraph) hasUnknown() bool {
	for _, deps := range g.after {
		for _, d := range deps {
			if d >= g.n {
				return true
			}
		}
	}
	return false
}

func (g fuzzGraph) hasCycle() bool {
	const (
		white = iota
		grey
		black
	)
	color := make([]int, g.n)
	var visit func(i int) bool
	visit = func(i int) bool {
		color[i] = grey
		for _, d := range g.after[i] {
			if d >= g.n {
				continue
			}
			if color[d] == grey || color[d] == white && visit(d) {
				return true
			}
		}
		color[i] = black
		return false
	}
	for i := range g.n {
		if color[i] == white && visit(i) {
			return true
		}
	}
	return false
}

// expected gives each hook's final state for a valid graph whose failures
// Continue: skipped if a dependency did not succeed, else failed if
// planned, else succeeded.
func (g fuzzGraph) expected() []hooks.State {
	st := make([]hooks.State, g.n)
	known := make([]bool, g.n)
	for left := g.n; left > 0; {
		for i := range g.n {
			if known[i] {
				continue
			}
			state, ready := hooks.Succeeded, true
			for _, d := range g.after[i] {
				if !known[d] {
					ready = false
					break
				}
				if st[d] != hooks.Succeeded {
					state = hooks.Skipped
				}
			}
			if !ready {
				continue
			}
			if state == hooks.Succeeded && g.fails[i] {
				state = hooks.Failed
			}
			st[i], known[i] = state, true
			left--
		}
	}
	return st
}

var errPlanned = errors.New("planned failure")

func FuzzGraph(f *testing.F) {
	for _, seed := range [][]byte{
		{},
		{1},
		{4, 0, 0, 1, 0, 2, 0, 3, 1, 3, 2},       // diamond h0 → {h1, h2} → h3
		{4, 0x02, 0, 1, 0, 2, 0, 3, 1, 3, 2},    // diamond, h1 fails: h3 skipped
		{4, 0x02, 0x10, 1, 0, 2, 0, 3, 1, 3, 2}, // same, Abort
		{3, 0, 0, 0, 2, 1, 0, 2, 1},             // cycle h0 → h1 → h2 → h0
		{1, 0, 0, 0, 0},                         // self-loop
		{2, 0, 0, 1, 3},                         // unknown dependency
		{3, 0, 0, 1, 4, 0, 1, 1, 0},             // unknown and a cycle
		{15, 0x81, 2, 1, 0, 2, 1, 3, 2, 4, 3, 14, 13}, // long chain, limit 2
		{12, 0x30, 1, 5, 0, 6, 0, 7, 5, 7, 6, 11, 7, 11, 4, 9, 8, 10, 9},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g := decodeGraph(data)
		var (
			calls = make([]atomic.Int32, g.n)
			done  = make([]atomic.Bool, g.n)
			mu    sync.Mutex
			wrong []string
		)
		violation := func(format string, args ...any) {
			mu.Lock()
			defer mu.Unlock()
			wrong = append(wrong, fmt.Sprintf(format, args...))
		}
		var opts []hooks.Option
		if g.concurrency > 0 {
			opts = append(opts, hooks.WithConcurrency(g.concurrency))
		}
		r, err := hooks.New(opts...)
		if err != nil {
			t.Fatal(err)
		}
		policy := hooks.Continue
		if g.abort {
			policy = hooks.Abort
		}
		for i := range g.n {
			h := hooks.Hook{Name: hookName(i), OnFailure: policy}
			for _, d := range g.after[i] {
				h.After = append(h.After, hookName(d))
			}
			h.Run = func(ctx context.Context) error {
				if calls[i].Add(1) > 1 {
					violation("%s ran twice", hookName(i))
				}
				for _, d := range g.after[i] {
					if !done[d].Load() {
						violation("%s started before its dependency %s succeeded", hookName(i), hookName(d))
					}
				}
				if g.fails[i] {
					return errPlanned
				}
				done[i].Store(true)
				return nil
			}
			if err := r.Add(h); err != nil {
				t.Fatalf("Add(%s): %v", hookName(i), err)
			}
		}

		unknown, cycle := g.hasUnknown(), g.hasCycle()
		_, planErr := r.Plan()
		runErr := r.Run(context.Background())
		rep := r.Report()

		if unknown || cycle {
			for _, err := range []error{planErr, runErr} {
				if errors.Is(err, hooks.ErrUnknownDependency) != unknown || errors.Is(err, hooks.ErrCycle) != cycle {
					t.Fatalf("unknown=%v cycle=%v, got error %v", unknown, cycle, err)
				}
			}
			for i := range g.n {
				if calls[i].Load() != 0 {
					t.Fatalf("%s ran in an invalid graph", hookName(i))
				}
			}
			return
		}
		if planErr != nil {
			t.Fatalf("Plan of a valid graph: %v", planErr)
		}
		if wrong != nil {
			t.Fatalf("order violated: %v", wrong)
		}
		checkLevels(t, r, g)

		for i, h := range rep.Hooks {
			ran := calls[i].Load() == 1
			var ok bool
			switch h.State {
			case hooks.Succeeded:
				ok = ran
			case hooks.Failed:
				ok = ran && errors.Is(h.Err, errPlanned)
			case hooks.Skipped:
				ok = !ran && h.SkippedBy != ""
			case hooks.Canceled:
				ok = g.abort // only an aborted run cancels hooks
			}
			if !ok {
				t.Fatalf("%s: state %s, ran %d times, err %v", h.Name, h.State, calls[i].Load(), h.Err)
			}
		}
		if !g.abort {
			want := g.expected()
			for i, h := range rep.Hooks {
				if h.State != want[i] {
					t.Fatalf("%s: state %s, want %s", h.Name, h.State, want[i])
				}
			}
		}
		allOK := true
		for _, h := range rep.Hooks {
			allOK = allOK && h.State == hooks.Succeeded
		}
		if (runErr == nil) != allOK {
			t.Fatalf("Run returned %v, but all succeeded = %v", runErr, allOK)
		}
	})
}

// checkLevels verifies that the plan holds every hook once, each on a level
// above all of its dependencies.
func checkLevels(t *testing.T, r *hooks.Runner, g fuzzGraph) {
	t.Helper()
	p, err := r.Plan()
	if err != nil {
		t.Fatal(err)
	}
	level := make(map[string]int)
	for l, names := range p.Levels {
		for _, n := range names {
			if _, dup := level[n]; dup {
				t.Fatalf("%s appears twice in %v", n, p.Levels)
			}
			level[n] = l
		}
	}
	if len(level) != g.n {
		t.Fatalf("plan holds %d hooks, want %d", len(level), g.n)
	}
	for i, deps := range g.after {
		for _, d := range deps {
			if level[hookName(i)] <= level[hookName(d)] {
				t.Fatalf("%s (level %d) is not above its dependency %s (level %d)", hookName(i), level[hookName(i)], hookName(d), level[hookName(d)])
			}
		}
	}
}

// FuzzPlanDOT checks that Plan.DOT renders any hook names as DOT that a
// reader following the DOT language reads back as the same graph: every
// node and edge, each name recovered exactly. data holds up to 8 names
// separated by '|'; hook k runs after hook k-1 and after hook 0.
func FuzzPlanDOT(f *testing.F) {
	for _, seed := range []string{
		"a|b|c",
		`odd "name"|back\slash|trailing\`,
		"new\nline|tab\tand space| |\\\\",
		`\"|"\|\\"|\\\`,
		"\x00|\xff\xfe|é|\r",
		`a|a`, // duplicate: Add refuses it
		`|x`,  // empty name: Add refuses it
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data string) {
		names := strings.SplitN(data, "|", 8)
		r, err := hooks.New()
		if err != nil {
			t.Fatal(err)
		}
		var hs []hooks.Hook
		for k, n := range names {
			h := hooks.Hook{Name: n, Run: func(context.Context) error { return nil }}
			if k > 0 {
				h.After = []string{names[k-1], names[0]}
			}
			hs = append(hs, h)
		}
		if err := r.Add(hs...); err != nil {
			if !errors.Is(err, hooks.ErrInvalidHook) && !errors.Is(err, hooks.ErrDuplicateHook) {
				t.Fatalf("Add: %v", err)
			}
			return
		}
		p, err := r.Plan()
		if err != nil {
			t.Fatalf("Plan: %v", err)
		}
		nodes, edges, err := readDOT(p.DOT())
		if err != nil {
			t.Fatalf("%v in\n%s", err, p.DOT())
		}
		if fmt.Sprint(nodes) != fmt.Sprint(names) {
			t.Fatalf("nodes read back %q, want %q", nodes, names)
		}
		var want []string
		for k := 1; k < len(names); k++ {
			want = append(want, names[k-1]+" -> "+names[k])
			if k > 1 {
				want = append(want, names[0]+" -> "+names[k])
			}
		}
		if fmt.Sprint(edges) != fmt.Sprint(want) {
			t.Fatalf("edges read back %q, want %q", edges, want)
		}
	})
}

// readDOT reads the statements of a DOT digraph as Plan.DOT writes them
// (node statements with an optional attribute list, then edge statements,
// one per line) following the DOT language: in a quoted ID \" is a quote,
// a backslash before a newline continues the line, every other character
// is itself. The label escapes \\ and \n are then undone, as Graphviz
// does when it shows a node's name.
func readDOT(dot string) (nodes, edges []string, err error) {
	const head = "digraph hooks {\n\trankdir=LR;\n"
	if !strings.HasPrefix(dot, head) || !strings.HasSuffix(dot, "}\n") {
		return nil, nil, errors.New("no digraph header or closing brace")
	}
	s := dot[len(head) : len(dot)-2]
	id := func() (string, error) {
		if !strings.HasPrefix(s, `"`) {
			return "", fmt.Errorf("ID does not start with a quote at %q", s)
		}
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			switch {
			case s[i] == '"':
				s = s[i+1:]
				return strings.NewReplacer(`\\`, `\`, `\n`, "\n").Replace(b.String()), nil
			case s[i] == '\\' && i+1 < len(s) && s[i+1] == '"':
				b.WriteByte('"')
				i++
			case s[i] == '\\' && i+1 < len(s) && s[i+1] == '\n':
				i++
			default:
				b.WriteByte(s[i])
			}
		}
		return "", errors.New("unterminated quoted ID")
	}
	for s != "" {
		if !strings.HasPrefix(s, "\t") {
			return nil, nil, fmt.Errorf("statement does not start with a tab at %q", s)
		}
		s = s[1:]
		from, err := id()
		if err != nil {
			return nil, nil, err
		}
		if rest, ok := strings.CutPrefix(s, " -> "); ok {
			s = rest
			to, err := id()
			if err != nil {
				return nil, nil, err
			}
			edges = append(edges, from+" -> "+to)
		} else {
			if rest, ok := strings.CutPrefix(s, " ["); ok {
				end := strings.Index(rest, "]")
				if end < 0 {
					return nil, nil, errors.New("unterminated attribute list")
				}
				s = rest[end+1:]
			}
			nodes = append(nodes, from)
		}
		rest, ok := strings.CutPrefix(s, ";\n")
		if !ok {
			return nil, nil, fmt.Errorf("statement not ended by ;\\n at %q", s)
		}
		s = rest
	}
	return nodes, edges, nil
}
