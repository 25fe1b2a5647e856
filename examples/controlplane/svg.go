package main

import (
	"encoding/xml"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The Gantt chart of a run (--timeline FILE.svg), drawn from the events the
// run recorded and the hooks reports, with the standard library only.
//
// Lanes, top to bottom: the run's phases; one lane per node (node1..nodeN:
// its etcd start and join, its apiserver, its controllers); one per other
// component that recorded a begin/end step (agent, hooks runner, add-on);
// one per hook (bootstrap hooks as "hook:NAME", add-on hooks as
// "hook:addon/NAME"). A hook's lane shows each gate wait (shaded) and each
// attempt (green if it succeeded, red if it failed, grey if canceled); the
// attempts that finished the hooks of the critical path are outlined. Each
// injected fault is a marker across the chart.
//
// For tests and tools the SVG is structured: every lane is a
// <g class="lane" data-lane="KIND:NAME">, every bar a <rect class="bar ...">,
// the time axis a <line class="axis">, every fault a
// <g class="fault" id="fault-N">.

// Layout, in pixels.
const (
	svgLabelW = 210
	svgPlotW  = 900
	svgLaneH  = 22
	svgTop    = 56
	svgMargin = 12
)

// chartBar is one bar of a lane, in milliseconds from the start of the run.
type chartBar struct {
	from, to int64
	class    string // space-separated, without "bar"
	title    string
}

// chartLane is one row of the chart.
type chartLane struct {
	kind, name string // data-lane is kind:name
	label      string
	critical   bool
	bars       []chartBar
}

// chartFault is one injected fault.
type chartFault struct {
	at           int64
	node, detail string
}

// chart is everything drawn, before layout.
type chart struct {
	title    string
	lanes    []*chartLane
	faults   []chartFault
	critical []string
	total    int64 // the axis' end, ms
	tick     int64 // the axis' tick step, ms
}

var nodeName = regexp.MustCompile(`^node[0-9]+$`)

// buildChart turns a run's events and reports into lanes and bars.
func buildChart(res *Result, title string) *chart {
	c := &chart{title: title, critical: res.Hooks.CriticalPath}
	byKey := map[string]*chartLane{}
	var nodes, comps, hookLanes []*chartLane
	lane := func(kind, name, label string) *chartLane {
		key := kind + ":" + name
		if l, ok := byKey[key]; ok {
			return l
		}
		l := &chartLane{kind: kind, name: name, label: label}
		byKey[key] = l
		switch kind {
		case "node":
			nodes = append(nodes, l)
		case "hook":
			hookLanes = append(hookLanes, l)
		default:
			comps = append(comps, l)
		}
		return l
	}
	var end int64
	grow := func(ms int64) { end = max(end, ms) }

	// The phases, back to back from the start of the run.
	phases := &chartLane{kind: "run", name: "phases", label: "run phases"}
	var at int64
	for _, p := range res.Phases {
		phases.bars = append(phases.bars, chartBar{from: at, to: at + p.MS, class: "phase", title: fmt.Sprintf("%s: %d ms", p.Name, p.MS)})
		at += p.MS
	}
	grow(at)

	// Every hook of the reports has a lane, even one that never started.
	for _, h := range res.Hooks.Hooks {
		lane("hook", h.Name, "hook "+h.Name)
	}
	if res.AddOnUpgrade != nil {
		for _, h := range res.AddOnUpgrade.Report.Hooks {
			lane("hook", "addon/"+h.Name, "add-on hook "+h.Name)
		}
	}

	type hookState struct {
		gateFrom, runFrom int64
		gate, run         bool
		attempt           string
	}
	hookStates := map[*chartLane]*hookState{}
	open := map[string]int64{} // node+"\x00"+step → begin
	last := map[string]int64{} // node+"\x00"+step → its last event
	for _, e := range res.Events {
		grow(e.ElapsedMS)
		last[e.Node+"\x00"+e.Step] = e.ElapsedMS
		if nodeName.MatchString(e.Node) {
			lane("node", e.Node, e.Node)
		}
		if e.Step == "fault" && e.Outcome == "injected" {
			c.faults = append(c.faults, chartFault{at: e.ElapsedMS, node: e.Node, detail: e.Detail})
			continue
		}
		if name, ok := strings.CutPrefix(e.Step, "hook "); ok && (e.Node == "hooks" || e.Node == "addon") {
			if e.Node == "addon" {
				name = "addon/" + name
			}
			l := lane("hook", name, "hook "+name)
			s := hookStates[l]
			if s == nil {
				s = &hookState{}
				hookStates[l] = s
			}
			t := e.ElapsedMS
			closeGate := func(class string) {
				if s.gate {
					l.bars = append(l.bars, chartBar{from: s.gateFrom, to: t, class: class, title: fmt.Sprintf("gate wait before %s: %d ms", s.attempt, t-s.gateFrom)})
					s.gate = false
				}
			}
			closeRun := func(class, outcome string) {
				if s.run {
					l.bars = append(l.bars, chartBar{from: s.runFrom, to: t, class: class, title: fmt.Sprintf("%s %s: %d ms", s.attempt, outcome, t-s.runFrom)})
					s.run = false
				}
			}
			switch e.Outcome {
			case "gate-waiting":
				s.gate, s.gateFrom, s.attempt = true, t, e.Detail
				if s.attempt == "" {
					s.attempt = "next attempt"
				}
			case "started":
				s.attempt = e.Detail
				closeGate("gate")
				s.run, s.runFrom = true, t
			case "attempt-failed":
				closeRun("attempt failed", "failed: "+e.Detail)
			case "succeeded":
				closeRun("attempt ok", "succeeded")
			case "failed":
				closeRun("attempt failed", "failed for good")
			case "canceled":
				closeGate("gate canceled")
				closeRun("attempt canceled", "canceled")
			}
			continue
		}
		key := e.Node + "\x00" + e.Step
		switch e.Outcome {
		case "begin":
			open[key] = e.ElapsedMS
		case "ok", "failed":
			from, ok := open[key]
			if !ok {
				continue
			}
			delete(open, key)
			kind, label := "component", e.Node
			if nodeName.MatchString(e.Node) {
				kind = "node"
			}
			l := lane(kind, e.Node, label)
			class := "step"
			if e.Outcome == "failed" {
				class = "step failed"
			}
			title := fmt.Sprintf("%s %s: %d ms", e.Step, e.Outcome, e.ElapsedMS-from)
			if e.Detail != "" {
				title += " — " + e.Detail
			}
			l.bars = append(l.bars, chartBar{from: from, to: e.ElapsedMS, class: class, title: title})
		}
	}
	// A step that never ended (the run failed or was stopped) ends at its
	// last event (a log line of it, say), marked unfinished.
	keys := make([]string, 0, len(open))
	for k := range open {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		node, step, _ := strings.Cut(k, "\x00")
		kind := "component"
		if nodeName.MatchString(node) {
			kind = "node"
		}
		l := lane(kind, node, node)
		l.bars = append(l.bars, chartBar{from: open[k], to: max(open[k], last[k]), class: "step unfinished", title: step + ": did not finish"})
	}

	// The critical path: the last successful attempt of each of its hooks.
	for _, name := range res.Hooks.CriticalPath {
		if l := byKey["hook:"+name]; l != nil {
			l.critical = true
			for i := len(l.bars) - 1; i >= 0; i-- {
				if l.bars[i].class == "attempt ok" {
					l.bars[i].class += " critical"
					break
				}
			}
		}
	}

	slices.SortStableFunc(nodes, func(a, b *chartLane) int {
		x, _ := strconv.Atoi(strings.TrimPrefix(a.name, "node"))
		y, _ := strconv.Atoi(strings.TrimPrefix(b.name, "node"))
		return x - y
	})
	// Components without a bar (a lane of log lines only) are left out.
	comps = slices.DeleteFunc(comps, func(l *chartLane) bool { return len(l.bars) == 0 })
	c.lanes = append(append(append([]*chartLane{phases}, nodes...), comps...), hookLanes...)

	c.tick = tickStep(end)
	c.total = max(c.tick, (end+c.tick-1)/c.tick*c.tick)
	return c
}

// tickStep picks a round tick step giving at most 12 ticks over total ms.
func tickStep(total int64) int64 {
	for _, s := range []int64{100, 200, 500, 1000, 2000, 5000, 10000, 20000, 30000, 60000, 120000, 300000} {
		if total/s <= 12 {
			return s
		}
	}
	return 600000
}

// WriteTimelineSVG writes the run as a Gantt chart (see buildChart and the
// comment at the top of this file) to w. title heads the chart. It returns
// w's first write error.
func WriteTimelineSVG(w io.Writer, res *Result, title string) error {
	c := buildChart(res, title)
	var b strings.Builder
	x := func(ms int64) float64 { return svgLabelW + float64(ms)*svgPlotW/float64(c.total) }
	plotBottom := svgTop + len(c.lanes)*svgLaneH
	legendY := plotBottom + 40
	width := svgLabelW + svgPlotW + 2*svgMargin
	height := legendY + 40

	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	b.WriteString(`<style>
.lane-bg{fill:#fff}.lane-bg.alt{fill:#f1f3f6}
.lane-label{fill:#222}.lane.critical .lane-label{font-weight:bold;fill:#b00020}
.phase{fill:#90a4ae}.step{fill:#5c8fd6}.step.failed{fill:#d9534f}.step.unfinished{fill:#c7d2e0}
.gate{fill:#f0c36d;fill-opacity:.6}.gate.canceled{fill:#ccc}
.attempt.ok{fill:#4caf50}.attempt.failed{fill:#d9534f}.attempt.canceled{fill:#999}
rect.critical{stroke:#b00020;stroke-width:2.5}
.axis,.tick{stroke:#333}.grid{stroke:#ddd}
.fault line{stroke:#e53935;stroke-dasharray:4 3;stroke-width:1.5}.fault path{fill:#e53935}
</style>
`)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15" font-weight="bold">%s</text>`+"\n", svgMargin, esc(c.title))
	if len(c.critical) > 0 {
		fmt.Fprintf(&b, `<text x="%d" y="38" fill="#b00020">critical path: %s</text>`+"\n", svgMargin, esc(strings.Join(c.critical, " → ")))
	}

	// Grid and lanes.
	for t := int64(0); t <= c.total; t += c.tick {
		fmt.Fprintf(&b, `<line class="grid" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>`+"\n", x(t), svgTop, x(t), plotBottom)
	}
	for i, l := range c.lanes {
		y := svgTop + i*svgLaneH
		class := "lane"
		if l.critical {
			class += " critical"
		}
		fmt.Fprintf(&b, `<g class="%s" data-lane="%s">`+"\n", class, esc(l.kind+":"+l.name))
		bg := "lane-bg"
		if i%2 == 1 {
			bg += " alt"
		}
		fmt.Fprintf(&b, `<rect class="%s" x="0" y="%d" width="%d" height="%d"/>`+"\n", bg, y, width, svgLaneH)
		fmt.Fprintf(&b, `<text class="lane-label" x="%d" y="%d">%s</text>`+"\n", svgMargin, y+15, esc(l.label))
		for _, br := range l.bars {
			x0, x1 := x(br.from), x(br.to)
			w := max(x1-x0, 1)
			x0 = min(x0, x(c.total)-w) // a 1-pixel bar at the very end stays on the axis
			fmt.Fprintf(&b, `<rect class="bar %s" x="%.1f" y="%d" width="%.1f" height="%d" data-from-ms="%d" data-to-ms="%d"><title>%s</title></rect>`+"\n",
				br.class, x0, y+4, w, svgLaneH-8, br.from, br.to, esc(br.title))
		}
		b.WriteString("</g>\n")
	}

	// The time axis.
	fmt.Fprintf(&b, `<line class="axis" x1="%.1f" y1="%d" x2="%.1f" y2="%d" data-total-ms="%d"/>`+"\n", x(0), plotBottom, x(c.total), plotBottom, c.total)
	for t := int64(0); t <= c.total; t += c.tick {
		fmt.Fprintf(&b, `<line class="tick" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>`+"\n", x(t), plotBottom, x(t), plotBottom+5)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(t), plotBottom+18, tickLabel(t, c.tick))
	}

	// Faults, over everything.
	for i, f := range c.faults {
		fmt.Fprintf(&b, `<g class="fault" id="fault-%d" data-node="%s" data-at-ms="%d"><title>fault injected (%s at %d ms): %s</title>`,
			i+1, esc(f.node), f.at, esc(f.node), f.at, esc(f.detail))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d"/><path d="M%.1f %d l-5 -8 h10 z"/></g>`+"\n",
			x(f.at), svgTop, x(f.at), plotBottom, x(f.at), svgTop)
	}

	// The legend.
	lx := svgMargin
	for _, item := range []struct{ class, label string }{
		{"bar phase", "phase"}, {"bar step", "node step"}, {"bar gate", "gate wait"},
		{"bar attempt ok", "attempt succeeded"}, {"bar attempt failed", "attempt failed"},
		{"bar attempt ok critical", "critical path"},
	} {
		fmt.Fprintf(&b, `<rect class="legend %s" x="%d" y="%d" width="14" height="12"/><text x="%d" y="%d">%s</text>`+"\n",
			strings.TrimPrefix(item.class, "bar "), lx, legendY, lx+18, legendY+10, item.label)
		lx += 30 + 7*len(item.label)
	}
	fmt.Fprintf(&b, `<g class="legend-fault"><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#e53935" stroke-dasharray="4 3"/><text x="%d" y="%d">fault injected</text></g>`+"\n",
		lx+5, legendY-2, lx+5, legendY+14, lx+14, legendY+10)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// tickLabel renders t in seconds, with a decimal when ticks are finer than
// a second.
func tickLabel(t, step int64) string {
	if step < 1000 {
		return fmt.Sprintf("%.1f s", float64(t)/1000)
	}
	return fmt.Sprintf("%d s", t/1000)
}

// esc escapes s for XML text and attribute values.
func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // a strings.Builder does not fail
	return b.String()
}
