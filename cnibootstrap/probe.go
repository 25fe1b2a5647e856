package cnibootstrap

import (
	"context"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// probeRun runs one requirement's probe (a SubjectAccessReview or a
// discovery lookup, a dry-run create) for one Wait: when first triggered
// (once the object it follows is ready, or its RBAC watches have started), again on every trigger, and, while the answer is no, on the
// backoff floor, which a trigger resets so that the re-runs after a change
// come quickly. A yes is re-checked on triggers only: what could take it
// back (an RBAC change, a change of the object it follows) is watched.
type probeRun struct {
	self int
	name string // the requirement's, for errors
	spec *probeSpec
	// trig holds at most one pending trigger, with the object it is about;
	// only the loop sends, so trigger never blocks.
	trig chan *unstructured.Unstructured
	// gen counts triggers; an answer to a request sent before the latest
	// trigger is stale.
	gen atomic.Uint64
}

func newProbeRun(self int, name string, spec *probeSpec) *probeRun {
	return &probeRun{self: self, name: name, spec: spec, trig: make(chan *unstructured.Unstructured, 1)}
}

// trigger asks for a new run, replacing any pending trigger (with the
// object the probe follows, or nil). Only the loop calls it.
func (p *probeRun) trigger(obj *unstructured.Unstructured) {
	p.gen.Add(1)
	select {
	case <-p.trig:
	default:
	}
	p.trig <- obj
}

func (p *probeRun) run(ctx context.Context, e *env, out chan<- any) {
	b, err := newPolicy(e.newBackoff)
	if err != nil {
		e.failFor(p.name, err)
		return
	}
	var obj *unstructured.Unstructured
	if p.spec.onRBAC || p.spec.after != nil {
		select {
		case <-ctx.Done():
			return
		case obj = <-p.trig:
		}
	}
	var prev *probeResult // the last answer, for a re-run on the floor
	for {
		gen := p.gen.Load()
		res := p.spec.run(ctx, e.clients, probeInput{obj: obj, prev: prev})
		switch {
		case ctx.Err() != nil:
			return
		case isFatalProbe(res.err):
			e.failFor(p.name, res.err)
			return
		}
		send(ctx, out, probeUpdate{self: p.self, gen: gen, res: res})
		triggered, err := p.await(ctx, b, !res.ok, &obj)
		if err != nil {
			if ctx.Err() == nil {
				e.failFor(p.name, err)
			}
			return
		}
		prev = nil
		if !triggered {
			prev = &res
		}
	}
}

// await waits for a trigger (which resets b and may bring a newer object),
// for the floor when withFloor, or for ctx to end. It reports whether a
// trigger came, or ctx's error, or the policy's.
func (p *probeRun) await(ctx context.Context, b *policy, withFloor bool, obj **unstructured.Unstructured) (bool, error) {
	var floor <-chan time.Time
	if withFloor {
		d, err := b.next()
		if err != nil {
			return false, err
		}
		t := time.NewTimer(d)
		defer t.Stop()
		floor = t.C
	}
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case *obj = <-p.trig:
		return true, b.reset()
	case <-floor:
		return false, nil
	}
}
