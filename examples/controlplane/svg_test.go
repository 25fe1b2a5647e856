package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTimelineSVG runs the demonstration with a fault (calico-race: cheap,
// one injected fault, gate waits on the CNI hook), writes its chart with
// --timeline's own code to a file, and checks the parsed SVG: well-formed,
// one lane per node and per hook, one marker per injected fault, every bar
// on the axis, the critical path outlined. TestControlPlaneExample checks
// the chart of every other run the same way.
func TestTimelineSVG(t *testing.T) {
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := Run(ctx, Config{Members: 3, Fault: FaultCalicoRace, Out: &out, Log: &out})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	svg := checkTimelineSVG(t, res, 3, FaultCalicoRace)
	if svg.faults != 1 {
		t.Errorf("%d fault markers, want the one calico-race injects", svg.faults)
	}
	// The CNI hook waited on cnibootstrap: its lane has a gate bar, and it
	// ended before the attempt that followed it began.
	gates := svg.bars["hook:cni"]["gate"]
	if len(gates) == 0 {
		t.Errorf("no gate wait on the cni lane: %v", svg.bars["hook:cni"])
	}
	oks := svg.bars["hook:cni"]["attempt ok"]
	if len(oks) == 0 {
		oks = svg.bars["hook:cni"]["attempt ok critical"]
	}
	if len(gates) > 0 && len(oks) > 0 && gates[len(gates)-1].toMS > oks[len(oks)-1].fromMS {
		t.Errorf("the cni gate bar %+v ends after its attempt %+v starts", gates[len(gates)-1], oks[len(oks)-1])
	}
	if t.Failed() {
		t.Logf("timeline:\n%s", out.String())
	}
}

// svgRect is a bar's horizontal extent.
type svgRect struct {
	x, w         float64
	fromMS, toMS int64 // data-from-ms, data-to-ms: the bar's exact times
}

// parsedSVG is what checkTimelineSVG read from a chart.
type parsedSVG struct {
	lanes  map[string]int                  // data-lane → count
	crit   map[string]bool                 // data-lane → lane has class critical
	bars   map[string]map[string][]svgRect // data-lane → bar class (without "bar") → bars
	faults int
}

// checkTimelineSVG writes res's chart to a file as --timeline does, parses
// it with encoding/xml and checks it against res: exactly one lane per node
// (node1..nodeN) and per hook of the reports and no other node or hook
// lane; one fault marker per injected fault, each with its own id; every
// bar within the time axis; the hooks of the critical path outlined, one
// bar each.
func checkTimelineSVG(t *testing.T, res *Result, members int, fault string) parsedSVG {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run.svg")
	if err := writeTimelineFile(path, res, fault); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, axis, ids, err := parseSVG(data)
	if err != nil {
		t.Fatalf("the SVG does not parse: %v", err)
	}

	want := map[string]bool{}
	for i := 1; i <= members; i++ {
		want[fmt.Sprintf("node:node%d", i)] = true
	}
	for _, h := range res.Hooks.Hooks {
		want["hook:"+h.Name] = true
	}
	if res.AddOnUpgrade != nil {
		for _, h := range res.AddOnUpgrade.Report.Hooks {
			want["hook:addon/"+h.Name] = true
		}
	}
	for l := range want {
		if p.lanes[l] != 1 {
			t.Errorf("%d lane(s) %s, want 1", p.lanes[l], l)
		}
	}
	for l, n := range p.lanes {
		if (strings.HasPrefix(l, "node:") || strings.HasPrefix(l, "hook:")) && !want[l] {
			t.Errorf("unexpected lane %s (%d)", l, n)
		}
	}

	injected := 0
	for _, e := range res.Events {
		if e.Step == "fault" && e.Outcome == "injected" {
			injected++
		}
	}
	if p.faults != injected {
		t.Errorf("%d fault markers, want one per injected fault: %d", p.faults, injected)
	}
	if fault != FaultNone && injected == 0 {
		t.Errorf("fault %s: no injected fault in the events", fault)
	}
	if len(ids) != p.faults {
		t.Errorf("fault marker ids %v, want %d distinct", ids, p.faults)
	}

	if axis[1] <= axis[0] {
		t.Fatalf("time axis from %v to %v", axis[0], axis[1])
	}
	nbars := 0
	for lane, byClass := range p.bars {
		for class, rs := range byClass {
			for _, r := range rs {
				nbars++
				if r.w <= 0 || r.x < axis[0]-0.05 || r.x+r.w > axis[1]+0.05 {
					t.Errorf("lane %s: bar %q at x=%v width %v lies outside the axis [%v, %v]", lane, class, r.x, r.w, axis[0], axis[1])
				}
			}
		}
	}
	if nbars == 0 {
		t.Error("no bars")
	}
	for _, h := range res.Hooks.CriticalPath {
		l := "hook:" + h
		n := 0
		for class, rs := range p.bars[l] {
			if slices.Contains(strings.Fields(class), "critical") {
				n += len(rs)
			}
		}
		if !p.crit[l] || n != 1 {
			t.Errorf("critical path hook %s: lane critical %v, %d outlined bar(s), want one", h, p.crit[l], n)
		}
	}
	return p
}

// parseSVG decodes the chart: its lanes and their bars, the fault markers
// and their ids, and the axis' x1 and x2.
func parseSVG(data []byte) (parsedSVG, [2]float64, []string, error) {
	p := parsedSVG{lanes: map[string]int{}, crit: map[string]bool{}, bars: map[string]map[string][]svgRect{}}
	var axis [2]float64
	ids := map[string]bool{}
	var list []string
	dec := xml.NewDecoder(bytes.NewReader(data))
	var stack []string // the data-lane of each open element ("" outside lanes)
	root := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return p, axis, nil, err
		}
		switch el := tok.(type) {
		case xml.StartElement:
			attr := map[string]string{}
			for _, a := range el.Attr {
				attr[a.Name.Local] = a.Value
			}
			if len(stack) == 0 {
				if el.Name.Local != "svg" || el.Name.Space != "http://www.w3.org/2000/svg" {
					return p, axis, nil, fmt.Errorf("root element %v, want svg", el.Name)
				}
				root = true
			}
			classes := strings.Fields(attr["class"])
			cur := ""
			if len(stack) > 0 {
				cur = stack[len(stack)-1]
			}
			switch {
			case el.Name.Local == "g" && slices.Contains(classes, "lane"):
				cur = attr["data-lane"]
				p.lanes[cur]++
				p.crit[cur] = slices.Contains(classes, "critical")
			case el.Name.Local == "g" && slices.Contains(classes, "fault"):
				p.faults++
				if id := attr["id"]; id != "" && !ids[id] {
					ids[id] = true
					list = append(list, id)
				}
			case el.Name.Local == "line" && slices.Contains(classes, "axis"):
				x1, err1 := strconv.ParseFloat(attr["x1"], 64)
				x2, err2 := strconv.ParseFloat(attr["x2"], 64)
				if err := errors.Join(err1, err2); err != nil {
					return p, axis, nil, fmt.Errorf("axis: %w", err)
				}
				axis = [2]float64{x1, x2}
			case el.Name.Local == "rect" && slices.Contains(classes, "bar"):
				if cur == "" {
					return p, axis, nil, fmt.Errorf("bar %v outside any lane", attr)
				}
				x, err1 := strconv.ParseFloat(attr["x"], 64)
				w, err2 := strconv.ParseFloat(attr["width"], 64)
				from, err3 := strconv.ParseInt(attr["data-from-ms"], 10, 64)
				to, err4 := strconv.ParseInt(attr["data-to-ms"], 10, 64)
				if err := errors.Join(err1, err2, err3, err4); err != nil {
					return p, axis, nil, fmt.Errorf("bar: %w", err)
				}
				class := strings.Join(slices.DeleteFunc(classes, func(c string) bool { return c == "bar" }), " ")
				if p.bars[cur] == nil {
					p.bars[cur] = map[string][]svgRect{}
				}
				p.bars[cur][class] = append(p.bars[cur][class], svgRect{x, w, from, to})
			}
			stack = append(stack, cur)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		}
	}
	if !root {
		return p, axis, nil, errors.New("no svg element")
	}
	return p, axis, list, nil
}

// TestTimelineSVGFromEvents checks the chart's construction on a recorded
// run without servers: details that need escaping stay well-formed, a step
// that never ended is drawn up to its own last event, and a fault
// recorded after every phase still lies on the axis.
func TestTimelineSVGFromEvents(t *testing.T) {
	res := &Result{
		Phases: []Phase{{Name: "etcd node1", MS: 40}},
		Events: []Event{
			{ElapsedMS: 0, Node: "node1", Step: "etcd start", Outcome: "begin"},
			{ElapsedMS: 40, Node: "node1", Step: "etcd start", Outcome: "ok", Detail: `<a href="x">&</a>`},
			{ElapsedMS: 50, Node: "node2", Step: "etcd join", Outcome: "begin"},
			{ElapsedMS: 60, Node: "hooks", Step: "hook rbac", Outcome: "gate-waiting", Detail: "attempt 1"},
			{ElapsedMS: 90, Node: "hooks", Step: "hook rbac", Outcome: "started", Detail: "attempt 1"},
			{ElapsedMS: 120, Node: "hooks", Step: "hook rbac", Outcome: "succeeded"},
			{ElapsedMS: 130, Node: "node2", Step: "etcd join", Outcome: "log", Detail: "still catching up"},
			{ElapsedMS: 2500, Node: "node2", Step: "fault", Outcome: "injected", Detail: "x < y & z"},
		},
	}
	res.Hooks.CriticalPath = []string{"rbac"}
	var b bytes.Buffer
	if err := WriteTimelineSVG(&b, res, `title "with" <chars>`); err != nil {
		t.Fatal(err)
	}
	p, axis, ids, err := parseSVG(b.Bytes())
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, b.String())
	}
	for _, l := range []string{"run:phases", "node:node1", "node:node2", "hook:rbac"} {
		if p.lanes[l] != 1 {
			t.Errorf("%d lane(s) %s, want 1", p.lanes[l], l)
		}
	}
	if p.faults != 1 || len(ids) != 1 {
		t.Errorf("%d fault markers with ids %v, want 1", p.faults, ids)
	}
	if len(p.bars["hook:rbac"]["gate"]) != 1 || len(p.bars["hook:rbac"]["attempt ok critical"]) != 1 {
		t.Errorf("hook:rbac bars %v, want a gate wait and one critical attempt", p.bars["hook:rbac"])
	}
	un := p.bars["node:node2"]["step unfinished"]
	if len(un) != 1 {
		t.Fatalf("node2 bars %v, want the unfinished join", p.bars["node:node2"])
	}
	// 50 ms to 130 ms of an axis that reaches past 2500 ms.
	if un[0].w <= 0 || un[0].x+un[0].w > axis[0]+(axis[1]-axis[0])*130/2500 {
		t.Errorf("unfinished join bar %+v on axis %v, want it to end at the step's last event", un[0], axis)
	}
	if !strings.Contains(b.String(), "x &lt; y &amp; z") {
		t.Errorf("fault detail not escaped:\n%s", b.String())
	}
}
