package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// Event is one line of the demo's timeline.
type Event struct {
	ElapsedMS int64  `json:"elapsed_ms"`
	Node      string `json:"node"`
	Step      string `json:"step"`
	Outcome   string `json:"outcome"`
	Detail    string `json:"detail,omitempty"`
}

// Timeline records events with their offset from the start of the run and
// prints each as it happens, as text or JSON lines. Safe for concurrent use.
type Timeline struct {
	start time.Time
	out   io.Writer
	json  bool

	mu     sync.Mutex
	events []Event
}

// NewTimeline starts a timeline now.
func NewTimeline(out io.Writer, asJSON bool) *Timeline {
	return &Timeline{start: time.Now(), out: out, json: asJSON}
}

// Record adds an event that happened now and prints it.
func (t *Timeline) Record(node, step, outcome, detail string) {
	t.RecordAt(time.Now(), node, step, outcome, detail)
}

// RecordAt adds an event that happened at 'at' and prints it.
func (t *Timeline) RecordAt(at time.Time, node, step, outcome, detail string) {
	e := Event{ElapsedMS: at.Sub(t.start).Milliseconds(), Node: node, Step: step, Outcome: outcome, Detail: detail}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.events = append(t.events, e)
	if t.json {
		b, _ := json.Marshal(struct {
			Type string `json:"type"`
			Event
		}{"event", e})
		fmt.Fprintln(t.out, string(b))
		return
	}
	line := fmt.Sprintf("%7d ms  %-7s %-28s %-9s", e.ElapsedMS, e.Node, e.Step, e.Outcome)
	if e.Detail != "" {
		line += " " + e.Detail
	}
	fmt.Fprintln(t.out, line)
}

// Events returns a copy of the recorded events.
func (t *Timeline) Events() []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Event(nil), t.events...)
}

// Phase is a named stretch of the run and how long it took.
type Phase struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"-"`
	MS       int64         `json:"ms"`
}

// phases measures consecutive phases of the run.
type phases struct {
	mu    sync.Mutex
	list  []Phase
	since time.Time
}

// begin starts the first phase at 'at' (the timeline's start, so that
// phases and events share one origin).
func (p *phases) begin(at time.Time) { p.since = at }

func (p *phases) end(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := time.Since(p.since)
	p.list = append(p.list, Phase{Name: name, Duration: d, MS: d.Milliseconds()})
	p.since = time.Now()
}

func (p *phases) all() []Phase {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Phase(nil), p.list...)
}
