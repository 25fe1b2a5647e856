package cnibootstrap

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Waiter waits for a fixed set of requirements. Build it with New; it holds
// no connection and starts nothing until Wait or Check is called. Its
// methods are safe for concurrent use: each call has its own watches.
type Waiter struct {
	clients Clients
	reqs    []Requirement
	opts    options

	objects     []objKey            // every object to follow, once each
	scopes      []rbacScope         // every RBAC kind to watch, once each
	probes      map[int]*probeSpec  // by requirement index
	rbacProbes  map[rbacScope][]int // which probes an RBAC change re-runs
	probeScopes map[int][]rbacScope // the RBAC watches that start a probe
	crdProbes   map[string][]int    // which probes a CRD change re-runs
}

// New checks the clients, the requirements and the options, and returns a
// Waiter for them. It does not block and makes no request. Nil clients, a
// nil requirement, a requirement with an empty name, a zero
// GroupVersionResource or another malformed field, two requirements with
// the same Name, and nil options give an error wrapping ErrInvalidInput
// that names the culprit. An empty list of requirements is valid: Wait
// then returns nil at once.
func New(c Clients, reqs []Requirement, opts ...Option) (*Waiter, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("cnibootstrap: New: %w", err)
	}
	w := &Waiter{
		clients: c, reqs: slices.Clone(reqs), probes: map[int]*probeSpec{},
		rbacProbes: map[rbacScope][]int{}, probeScopes: map[int][]rbacScope{}, crdProbes: map[string][]int{},
		opts: options{newBackoff: defaultBackoff},
	}
	for i, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("cnibootstrap: New: %w", invalid("option %d is nil", i))
		}
		if err := o(&w.opts); err != nil {
			return nil, fmt.Errorf("cnibootstrap: New: %w", err)
		}
	}
	names := map[string]int{}
	for i, r := range w.reqs {
		if isNil(r) {
			return nil, fmt.Errorf("cnibootstrap: New: %w", invalid("requirement %d is nil", i))
		}
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("cnibootstrap: New: requirement %d: %w", i, err)
		}
		if j, dup := names[r.Name()]; dup {
			return nil, fmt.Errorf("cnibootstrap: New: %w", invalid("requirements %d and %d are both %q", j, i, r.Name()))
		}
		names[r.Name()] = i
		n := r.needs()
		for _, k := range n.objects {
			if !slices.Contains(w.objects, k) {
				w.objects = append(w.objects, k)
			}
		}
		if n.probe != nil {
			w.probes[i] = n.probe
			if n.probe.afterCRD != "" {
				w.crdProbes[n.probe.afterCRD] = append(w.crdProbes[n.probe.afterCRD], i)
			}
		}
		for _, s := range n.rbac {
			if !slices.Contains(w.scopes, s) {
				w.scopes = append(w.scopes, s)
			}
			if n.probe != nil && n.probe.onRBAC {
				w.rbacProbes[s] = append(w.rbacProbes[s], i)
				w.probeScopes[i] = append(w.probeScopes[i], s)
			}
		}
	}
	return w, nil
}

// Wait is New followed by Waiter.Wait: it blocks until every requirement
// holds at the same time, or ctx ends, or the waiter's credentials are
// rejected. See Waiter.Wait.
func Wait(ctx context.Context, c Clients, reqs []Requirement, opts ...Option) error {
	w, err := New(c, reqs, opts...)
	if err != nil {
		return err
	}
	return w.Wait(ctx)
}

// Wait blocks until every requirement holds at the same time and returns
// nil. It watches what the requirements name, each object with a watch
// narrowed to its name, and re-evaluates all of them on every event;
// SubjectAccessReviews and discovery lookups are re-run when RBAC objects
// or the CRD change, and on the backoff floor (WithBackoff). A review
// answered before the latest RBAC change does not count until it is
// re-run.
//
// When ctx ends first, Wait returns promptly an *UnmetError that wraps
// ctx.Err() (and its cause) and lists every requirement not met, with
// why. When the apiserver answers one of the waiter's own requests with
// 401, Wait returns at once an error wrapping ErrUnauthorized. A 403 on
// the waiter's own requests does not end it (the rule may be granted
// later); it becomes the reason, a *ForbiddenError naming the missing
// permission.
//
// Every goroutine Wait starts has ended when it returns.
func (w *Waiter) Wait(ctx context.Context) error {
	if len(w.reqs) == 0 {
		return nil
	}
	e := w.env(ctx)
	run, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	out := make(chan any)
	for _, k := range w.objects {
		ow := &objWatch{key: k, env: e, out: out}
		wg.Go(func() { ow.run(run) })
	}
	for _, s := range w.scopes {
		rw := &rbacWatch{scope: s, env: e, out: out}
		wg.Go(func() { rw.run(run) })
	}
	probes := make(map[int]*probeRun, len(w.probes))
	for i, spec := range w.probes {
		p := newProbeRun(i, spec)
		probes[i] = p
		wg.Go(func() { p.run(run, e, out) })
	}

	v := newView()
	var last []Unmet
	for {
		select {
		case <-ctx.Done():
			v.final = true
			return &UnmetError{Unmet: w.evaluate(v), Total: len(w.reqs), Err: ctxErr(ctx)}
		case m := <-out:
			if err := w.apply(v, m, probes); err != nil {
				return err
			}
		}
		unmet := w.evaluate(v)
		done := len(unmet) == 0 && !v.stale()
		if w.opts.progress != nil && (done || (len(unmet) > 0 && (last == nil || !sameUnmet(last, unmet)))) {
			w.opts.progress(unmet)
			last = unmet
		}
		if done {
			return nil
		}
	}
}

// apply records one message in v, triggering the probes it concerns.
func (w *Waiter) apply(v *view, m any, probes map[int]*probeRun) error {
	switch m := m.(type) {
	case objUpdate:
		v.objects[m.key] = m.state
		if m.key.gvr == crdGVR && m.state.obj != nil && crdNotReady(m.state.obj) == "" {
			for _, i := range w.crdProbes[m.key.name] {
				probes[i].trigger(m.state.obj)
				v.markStale(i)
			}
		}
	case rbacUpdate:
		_, seen := v.rbac[m.scope]
		v.rbac[m.scope] = m.err
		for _, i := range w.rbacProbes[m.scope] {
			// The first report of the last of a probe's scopes starts it.
			first := !seen && !slices.ContainsFunc(w.probeScopes[i], func(s rbacScope) bool { _, ok := v.rbac[s]; return !ok })
			if m.changed || first {
				probes[i].trigger(nil)
				v.markStale(i)
			}
		}
	case probeUpdate:
		v.probes[m.self] = probeState{ran: true, res: m.res, stale: m.gen != probes[m.self].gen.Load()}
	case fatalUpdate:
		return m.err
	}
	return nil
}

// Check evaluates every requirement once, without watching: one narrowed
// list per object, one review or discovery lookup per probe. It blocks
// for those requests and returns nil when every requirement holds, an
// *UnmetError listing those that do not (with Err set to ctx's error if
// ctx ended meanwhile), or at once an error wrapping ErrUnauthorized. It
// is meant for diagnostics ("why is the CNI not starting?"); to wait, use
// Wait.
func (w *Waiter) Check(ctx context.Context) error {
	dyn := w.clients.Dynamic
	v := newView()
	for _, k := range w.objects {
		obj, _, err := listOne(ctx, dyn, k)
		st := objState{observed: true, obj: obj, err: err}
		switch {
		case isFatal(err):
			return err
		case isNotFound(err) && k.gvr != crdGVR:
			var crd objState
			if k.gvr.Group != "" {
				cobj, _, cerr := listOne(ctx, dyn, objKey{gvr: crdGVR, name: k.gvr.GroupResource().String()})
				if isFatal(cerr) {
					return cerr
				}
				crd = objState{observed: true, obj: cobj, err: cerr}
			}
			st = objState{observed: true, notServed: notServedReason(k.gvr, crd)}
		}
		v.objects[k] = st
	}
	for i, spec := range w.probes {
		var crd *unstructured.Unstructured
		if spec.afterCRD != "" {
			st := v.objects[objKey{gvr: crdGVR, name: spec.afterCRD}]
			if st.obj == nil || crdNotReady(st.obj) != "" {
				continue // the CRD requirement reports why
			}
			crd = st.obj
		}
		res := spec.run(ctx, w.clients, crd)
		if isFatal(res.err) {
			return res.err
		}
		v.probes[i] = probeState{ran: true, res: res}
	}
	unmet := w.evaluate(v)
	if len(unmet) == 0 {
		return nil
	}
	var err error
	if ctx.Err() != nil {
		err = ctxErr(ctx)
	}
	return &UnmetError{Unmet: unmet, Total: len(w.reqs), Err: err}
}

// sameUnmet reports whether two reports say the same.
func sameUnmet(a, b []Unmet) bool {
	return slices.EqualFunc(a, b, func(x, y Unmet) bool { return x.String() == y.String() })
}

// evaluate returns every requirement not met in v, in order.
func (w *Waiter) evaluate(v *view) []Unmet {
	var unmet []Unmet
	for i, r := range w.reqs {
		if u := r.eval(v, i); u != nil {
			unmet = append(unmet, *u)
		}
	}
	return unmet
}

func (w *Waiter) env(ctx context.Context) *env {
	log := logr.FromContextOrDiscard(ctx)
	if w.opts.logger != nil {
		log = *w.opts.logger
	}
	return &env{clients: w.clients, newBackoff: w.opts.newBackoff, log: log.WithName("cnibootstrap")}
}

// ctxErr is ctx's error, wrapping its cause too when that says more.
func ctxErr(ctx context.Context) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return fmt.Errorf("%w: %w", err, cause)
	}
	return err
}
