package cnibootstrap

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// probeRun runs one requirement's probe (a SubjectAccessReview or a
// discovery lookup) for one Wait: when first triggered (once its CRD is
// established, or its RBAC watches have started), again on every trigger, and, while the answer is no, on the
// backoff floor, which a trigger resets so that the re-runs after a change
// come quickly. A yes is re-checked on triggers only: what could take it
// back (an RBAC change, a CRD change) is watched.
type probeRun struct {
	self int
	spec *probeSpec
	// trig holds at most one pending trigger, with the CRD it is about;
	// only the loop sends, so trigger never blocks.
	trig chan *unstructured.Unstructured
	// gen counts triggers; an answer to a request sent before the latest
	// trigger is stale.
	gen atomic.Uint64
}

func newProbeRun(self int, spec *probeSpec) *probeRun {
	return &probeRun{self: self, spec: spec, trig: make(chan *unstructured.Unstructured, 1)}
}

// trigger asks for a new run, replacing any pending trigger. Only the loop
// calls it.
func (p *probeRun) trigger(crd *unstructured.Unstructured) {
	p.gen.Add(1)
	select {
	case <-p.trig:
	default:
	}
	p.trig <- crd
}

func (p *probeRun) run(ctx context.Context, e *env, out chan<- any) {
	b := e.newBackoff()
	var crd *unstructured.Unstructured
	if p.spec.onRBAC || p.spec.afterCRD != "" {
		select {
		case <-ctx.Done():
			return
		case crd = <-p.trig:
		}
	}
	for {
		gen := p.gen.Load()
		res := p.spec.run(ctx, e.clients, crd)
		switch {
		case ctx.Err() != nil:
			return
		case isFatal(res.err):
			send(ctx, out, fatalUpdate{err: res.err})
			return
		}
		send(ctx, out, probeUpdate{self: p.self, gen: gen, res: res})
		if !p.await(ctx, b, !res.ok, &crd) {
			return
		}
	}
}

// await waits for a trigger (which resets b and may bring a newer CRD),
// for the floor when withFloor, or for ctx to end, and reports false in the
// last case.
func (p *probeRun) await(ctx context.Context, b backoff.BackOff, withFloor bool, crd **unstructured.Unstructured) bool {
	var floor <-chan time.Time
	if withFloor {
		if d := b.NextBackOff(); d != backoff.Stop {
			t := time.NewTimer(d)
			defer t.Stop()
			floor = t.C
		}
	}
	select {
	case <-ctx.Done():
		return false
	case *crd = <-p.trig:
		b.Reset()
	case <-floor:
	}
	return true
}
