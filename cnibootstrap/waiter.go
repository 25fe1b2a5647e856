package cnibootstrap

import (
	"context"
	"errors"
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
	sets        []setKey            // every label-selected set to follow, once each
	derived     map[objKey][]setKey // the sets whose selector an object gives
	scopes      []rbacScope         // every RBAC kind to watch, once each
	probes      map[int]*probeSpec  // by requirement index
	rbacProbes  map[rbacScope][]int // which probes an RBAC change re-runs
	probeScopes map[int][]rbacScope // the RBAC watches that start a probe
	objProbes   map[objKey][]int    // which probes an object's change re-runs

	objNames   map[objKey]string    // the requirements each object serves, for errors
	setNames   map[setKey]string    // the requirements each set serves
	scopeNames map[rbacScope]string // the requirements each RBAC watch serves
}

// New checks the clients, the requirements and the options, and returns a
// Waiter for them. It does not block and makes no request; it calls the
// WithBackoff factory once, and every Condition once on an empty object,
// to check them. Nil clients (typed nils too: a nil
// *kubernetes.Clientset, *fake.Clientset or any other nil pointer in the
// interface), a nil requirement, a requirement with an empty name, a zero
// GroupVersionResource or another malformed field (names are checked by
// apimachinery's rules: namespaces are DNS-1123 labels; object names are
// path segments, DNS-1123 subdomains for the kinds that require them;
// groups are DNS-1123 subdomains, versions and resources DNS-1123
// labels), two requirements with
// the same Name, nil options, a backoff factory that returns a nil policy
// and a Condition or factory that panics give an error wrapping
// ErrInvalidInput that names the culprit. An empty list of requirements is
// valid: Wait then returns nil at once.
func New(c Clients, reqs []Requirement, opts ...Option) (*Waiter, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("cnibootstrap: New: %w", err)
	}
	w := &Waiter{
		clients: c, reqs: slices.Clone(reqs), probes: map[int]*probeSpec{},
		rbacProbes: map[rbacScope][]int{}, probeScopes: map[int][]rbacScope{}, objProbes: map[objKey][]int{},
		derived: map[objKey][]setKey{}, objNames: map[objKey]string{}, setNames: map[setKey]string{}, scopeNames: map[rbacScope]string{},
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
	if _, err := newPolicy(w.opts.newBackoff); err != nil {
		return nil, fmt.Errorf("cnibootstrap: New: WithBackoff: %w", asInvalid(err))
	}
	names := map[string]int{}
	for i, r := range w.reqs {
		if isNil(r) {
			return nil, fmt.Errorf("cnibootstrap: New: %w", invalid("requirement %d is nil", i))
		}
		var name string
		var n needs
		err := protect(fmt.Sprintf("requirement %d", i), func() error {
			if err := r.validate(); err != nil {
				return err
			}
			name, n = r.Name(), r.needs()
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("cnibootstrap: New: requirement %d: %w", i, asInvalid(err))
		}
		if j, dup := names[name]; dup {
			return nil, fmt.Errorf("cnibootstrap: New: %w", invalid("requirements %d and %d are both %q", j, i, name))
		}
		names[name] = i
		for _, k := range n.objects {
			if !slices.Contains(w.objects, k) {
				w.objects = append(w.objects, k)
			}
			w.objNames[k] = joinName(w.objNames[k], name)
		}
		for _, s := range n.sets {
			if !slices.Contains(w.sets, s) {
				w.sets = append(w.sets, s)
				if s.derived() {
					w.derived[s.from] = append(w.derived[s.from], s)
				}
			}
			w.setNames[s] = joinName(w.setNames[s], name)
		}
		if n.probe != nil {
			w.probes[i] = n.probe
			if n.probe.after != nil {
				w.objProbes[*n.probe.after] = append(w.objProbes[*n.probe.after], i)
			}
		}
		for _, s := range n.rbac {
			if !slices.Contains(w.scopes, s) {
				w.scopes = append(w.scopes, s)
			}
			w.scopeNames[s] = joinName(w.scopeNames[s], name)
			if n.probe != nil && n.probe.onRBAC {
				w.rbacProbes[s] = append(w.rbacProbes[s], i)
				w.probeScopes[i] = append(w.probeScopes[i], s)
			}
		}
	}
	return w, nil
}

// joinName adds a requirement name to a list of them.
func joinName(list, name string) string {
	if list == "" {
		return name
	}
	return list + ", " + name
}

// asInvalid makes err (a panic or another failure of a callback checked by
// New) wrap ErrInvalidInput as well.
func asInvalid(err error) error {
	if errors.Is(err, ErrInvalidInput) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrInvalidInput, err)
}

// validCall checks the receiver and the context of Wait and Check.
func (w *Waiter) validCall(method string, ctx context.Context) error {
	switch {
	case w == nil:
		return fmt.Errorf("cnibootstrap: %s: %w", method, invalid("nil *Waiter (use New)"))
	case isNil(ctx):
		return fmt.Errorf("cnibootstrap: %s: %w", method, nilCtx(ctx))
	}
	return nil
}

// nilCtx is the error for a nil ctx (isNil(ctx)): "nil context.Context",
// or, for a nil pointer in the interface, its type as well.
func nilCtx(ctx context.Context) error {
	if ctx == nil {
		return invalid("nil context.Context")
	}
	return invalid("nil context.Context (a nil %T)", ctx)
}

// Wait is New followed by Waiter.Wait: it blocks until every requirement
// holds at the same time, or ctx ends, or the waiter's credentials are
// rejected. See Waiter.Wait. A nil ctx (a nil pointer in the interface
// too) is an error wrapping ErrInvalidInput.
func Wait(ctx context.Context, c Clients, reqs []Requirement, opts ...Option) error {
	if isNil(ctx) {
		return fmt.Errorf("cnibootstrap: Wait: %w", nilCtx(ctx))
	}
	w, err := New(c, reqs, opts...)
	if err != nil {
		return err
	}
	return w.Wait(ctx)
}

// Wait blocks until every requirement holds at the same time and returns
// nil. It watches what the requirements name, each object with a watch
// narrowed to its name and each set of objects (pods, EndpointSlices)
// with a watch narrowed by labels, and re-evaluates all of them on every
// event; SubjectAccessReviews, discovery lookups and webhook dry-runs are
// re-run when RBAC objects, the CRD or the webhook configuration change,
// and on the backoff floor (WithBackoff). A review
// answered before the latest RBAC change does not count until it is
// re-run.
//
// When ctx ends first, Wait returns promptly an *UnmetError that wraps
// ctx.Err() (and its cause) and lists every requirement not met, with
// why. When a requirement fails for good (a Job Failed, a Deployment past
// its progress deadline, an object kstatus calls Failed: see the package
// doc's "Final failures"), Wait returns at once an *UnmetError whose Err
// is that requirement's *FailedError, so errors.Is(err, ErrFailed) and
// errors.As(err, &failedErr) see it; the WithProgress function has been
// called with that report first. When the apiserver answers one of the waiter's own requests with
// 401, Wait returns at once an error wrapping ErrUnauthorized: that
// includes a credential revoked while every watch is open (its
// ServiceAccount deleted, say), which open watches do not report; the
// waiter re-validates its credentials with a GET of /version once per
// interval of the backoff floor, so such a 401 is seen within one interval
// after the apiserver starts refusing the credential (at most about 36 s
// with the default policy: 30 s and its 20% jitter). When one of its
// requests cannot be sent at all — the client library rejects the
// clients' address before sending anything (a port outside 1-65535, a
// scheme other than http or https; NewClients refuses those, clients
// built otherwise may carry them) — Wait returns at once an error
// wrapping ErrInvalidInput that names the request, since no retry can
// fix it. A 403 on the waiter's own requests does not end it
// (the rule may be granted later); it becomes the reason, a
// *ForbiddenError naming the missing permission.
//
// Code the caller supplied is run under recover (see PanicError): a
// panicking Condition leaves its requirement unmet; a panic in the
// WithProgress function, the backoff factory or policy, the logger's sink
// or a client ends Wait at once with an error wrapping the *PanicError
// (and ErrCallbackPanicked) that names the requirements concerned. A nil
// ctx (a nil pointer in the interface too) or a nil *Waiter is an error
// wrapping ErrInvalidInput.
//
// Every goroutine Wait starts has ended when it returns.
func (w *Waiter) Wait(ctx context.Context) error {
	if err := w.validCall("Wait", ctx); err != nil {
		return err
	}
	if len(w.reqs) == 0 {
		return nil
	}
	e, err := w.env(ctx)
	if err != nil {
		return err
	}
	run, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	out := make(chan any)
	for _, k := range w.objects {
		ow := &objWatch{key: k, env: e, out: out, names: w.objNames[k]}
		e.start(&wg, ow.names, func() { ow.run(run) })
	}
	for _, s := range w.scopes {
		rw := &rbacWatch{scope: s, env: e, out: out, names: w.scopeNames[s]}
		e.start(&wg, rw.names, func() { rw.run(run) })
	}
	probes := make(map[int]*probeRun, len(w.probes))
	for i, spec := range w.probes {
		p := newProbeRun(i, w.reqs[i].Name(), spec)
		probes[i] = p
		e.start(&wg, p.name, func() { p.run(run, e, out) })
	}
	e.start(&wg, "credential check", func() { e.watchCredentials(run) })

	v := newView()
	// Sets with a fixed selector start now; those whose selector comes
	// from an object start (and restart) as that object is seen.
	runs := map[setKey]*setRun{}
	startSet := func(s setKey, sel string) {
		r := runs[s]
		if r == nil {
			r = &setRun{}
			runs[s] = r
		}
		if r.cancel != nil {
			r.cancel()
		}
		r.gen++
		r.sel, r.cancel = sel, nil
		v.sets[s] = setState{sel: sel}
		if sel == "" {
			return
		}
		sctx, scancel := context.WithCancel(run)
		r.cancel = scancel
		sw := &setWatch{key: s, sel: sel, gen: r.gen, env: e, out: out, names: w.setNames[s]}
		e.start(&wg, sw.names, func() { sw.run(sctx) })
	}
	defer func() {
		for _, r := range runs {
			if r.cancel != nil {
				r.cancel()
			}
		}
	}()
	for _, s := range w.sets {
		if !s.derived() {
			startSet(s, s.selector)
		}
	}
	var last []Unmet
	for {
		select {
		case <-ctx.Done():
			v.final = true
			return &UnmetError{Unmet: w.evaluate(v), Total: len(w.reqs), Err: ctxErr(ctx)}
		case err := <-e.fatal:
			return err
		case m := <-out:
			w.apply(v, m, probes, runs, startSet)
		}
		unmet := w.evaluate(v)
		done := len(unmet) == 0 && !v.stale()
		if w.opts.progress != nil && (done || (len(unmet) > 0 && (last == nil || !sameUnmet(last, unmet)))) {
			if err := protect("the WithProgress function", func() error { w.opts.progress(unmet); return nil }); err != nil {
				return fmt.Errorf("cnibootstrap: %w", err)
			}
			last = unmet
		}
		if fe := failure(unmet); fe != nil {
			return &UnmetError{Unmet: unmet, Total: len(w.reqs), Err: fe}
		}
		if done {
			return nil
		}
	}
}

// apply records one message in v, triggering the probes it concerns and
// (re)starting the set watches whose selector it changes.
func (w *Waiter) apply(v *view, m any, probes map[int]*probeRun, runs map[setKey]*setRun, startSet func(setKey, string)) {
	switch m := m.(type) {
	case objUpdate:
		v.objects[m.key] = m.state
		obj := m.state.one()
		if obj != nil {
			for _, i := range w.objProbes[m.key] {
				if w.probes[i].ready(obj) {
					probes[i].trigger(obj)
					v.markStale(i)
				}
			}
		}
		for _, s := range w.derived[m.key] {
			if sel := specSelector(obj); runs[s] == nil || runs[s].sel != sel {
				startSet(s, sel)
			}
		}
	case setUpdate:
		if r := runs[m.key]; r != nil && r.gen == m.gen {
			v.sets[m.key] = setState{sel: m.sel, st: m.state}
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
	}
}

// Check evaluates every requirement once, without watching: one narrowed
// list per object and per label-selected set (a workload's pods, a
// Service's EndpointSlices), one review, discovery lookup or dry-run
// create per probe. It blocks for those requests and returns nil when
// every requirement holds, an *UnmetError listing those that do not (with
// Err set to ctx's error if ctx ended meanwhile; a requirement that failed
// for good has a *FailedError as its entry's Err, so errors.Is(err,
// ErrFailed) tells), or at once an error wrapping ErrUnauthorized, or
// one wrapping ErrInvalidInput when a request cannot be sent at all (see
// Waiter.Wait). A
// Condition that panics makes its requirement unmet, with the *PanicError
// as the entry's Err; a client that panics makes Check return an error
// wrapping the *PanicError. A nil ctx (a nil pointer in the interface
// too) or a nil *Waiter is an error wrapping ErrInvalidInput. It is meant for diagnostics ("why is the CNI
// not starting?"); to wait, use Wait.
func (w *Waiter) Check(ctx context.Context) (err error) {
	if err := w.validCall("Check", ctx); err != nil {
		return err
	}
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("cnibootstrap: Check: %w", newPanicError("a client in Clients", v))
		}
	}()
	dyn := w.clients.Dynamic
	v := newView()
	for _, k := range w.objects {
		st, _, err := listObjects(ctx, dyn, k)
		if err != nil {
			st = objState{observed: true, err: err}
		}
		switch {
		case isFatal(err):
			return err
		case isNotFound(err) && k.gvr != crdGVR:
			var crd objState
			if k.gvr.Group != "" {
				var cerr error
				crd, _, cerr = listObjects(ctx, dyn, objKey{gvr: crdGVR, name: k.gvr.GroupResource().String()})
				if isFatal(cerr) {
					return cerr
				}
				if cerr != nil {
					crd = objState{observed: true, err: cerr}
				}
			}
			st = objState{observed: true, notServed: notServedReason(k.gvr, crd)}
		}
		v.objects[k] = st
	}
	for _, s := range w.sets {
		sel := selectorOf(v, s)
		if sel == "" {
			continue // the requirement reports why the object is not there
		}
		st, _, err := listSet(ctx, dyn, s, sel)
		if isFatal(err) {
			return err
		}
		if err != nil {
			st = objState{observed: true, err: err}
		}
		v.sets[s] = setState{sel: sel, st: st}
	}
	for i, spec := range w.probes {
		var obj *unstructured.Unstructured
		if spec.after != nil {
			obj = v.objects[*spec.after].one()
			if obj == nil || !spec.ready(obj) {
				continue // the requirement reports why
			}
		}
		res := spec.run(ctx, w.clients, probeInput{obj: obj})
		if isFatalProbe(res.err) {
			return fatalProbeErr(w.reqs[i].Name(), res.err)
		}
		v.probes[i] = probeState{ran: true, res: res}
	}
	unmet := w.evaluate(v)
	if len(unmet) == 0 {
		return nil
	}
	var cerr error
	if ctx.Err() != nil {
		cerr = ctxErr(ctx)
	}
	return &UnmetError{Unmet: unmet, Total: len(w.reqs), Err: cerr}
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

// env builds the shared state of one Wait; a logger whose WithName
// panics is an error.
func (w *Waiter) env(ctx context.Context) (*env, error) {
	log := logr.FromContextOrDiscard(ctx)
	if w.opts.logger != nil {
		log = *w.opts.logger
	}
	e := newEnv(w.clients, w.opts.newBackoff, log)
	e.log = e.log.WithName("cnibootstrap")
	select {
	case err := <-e.fatal:
		return nil, err
	default:
	}
	return e, nil
}

// ctxErr is ctx's error, wrapping its cause too when that says more.
func ctxErr(ctx context.Context) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return fmt.Errorf("%w: %w", err, cause)
	}
	return err
}
