package cnibootstrap

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
)

// This file follows sets of objects narrowed by a label selector: the
// pods of a workload or a Job, a Deployment's ReplicaSets, a DaemonSet's
// ControllerRevisions (all by the workload's own spec.selector), and a
// Service's EndpointSlices (by kubernetes.io/service-name).

// setUpdate is what a set watch sends the loop: the set's state for the
// watch of generation gen (the loop drops those of a replaced watch).
type setUpdate struct {
	key   setKey
	gen   uint64
	sel   string
	state objState
}

func (s setKey) resource(d dynamic.Interface) dynamic.ResourceInterface {
	return d.Resource(s.gvr).Namespace(s.namespace)
}

func (s setKey) request(verb, sel string) request {
	return request{verb: verb, gvr: s.gvr, namespace: s.namespace, selector: sel}
}

// specSelector returns obj's spec.selector as a label selector string, or
// "" when obj is nil, has none, or has an empty or malformed one (the
// requirement's evaluation of obj says why).
func specSelector(obj *unstructured.Unstructured) string {
	if obj == nil {
		return ""
	}
	m, found, err := unstructured.NestedMap(obj.Object, "spec", "selector")
	if !found || err != nil {
		return ""
	}
	var ls metav1.LabelSelector
	if err := fromUnstructured(m, &ls); err != nil {
		return ""
	}
	sel, err := metav1.LabelSelectorAsSelector(&ls)
	if err != nil || sel.Empty() {
		return ""
	}
	return sel.String()
}

// selectorOf returns the selector of set s in v: its fixed one, or the
// spec.selector of the object it follows.
func selectorOf(v *view, s setKey) string {
	if !s.derived() {
		return s.selector
	}
	return specSelector(v.objects[s.from].one())
}

// listSet lists set s with selector sel and returns its state, keyed by
// name, and the resourceVersion to watch from. Errors are classified.
func listSet(ctx context.Context, d dynamic.Interface, s setKey, sel string) (objState, string, error) {
	l, err := s.resource(d).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return objState{}, "", classify(err, s.request("list", sel))
	}
	st := objState{observed: true, objs: make(map[string]*unstructured.Unstructured, len(l.Items))}
	for i := range l.Items {
		if o := &l.Items[i]; o.GetNamespace() == s.namespace {
			st.objs[o.GetName()] = o
		}
	}
	return st, l.GetResourceVersion(), nil
}

// setWatch follows one set with a list and a watch narrowed by a label
// selector, and sends every state it learns to out.
type setWatch struct {
	key   setKey
	sel   string
	gen   uint64
	env   *env
	out   chan<- any
	names string // the requirements served, for errors
}

func (w *setWatch) report(ctx context.Context, st objState) {
	send(ctx, w.out, setUpdate{key: w.key, gen: w.gen, sel: w.sel, state: st})
}

// run lists and watches until ctx ends (the loop cancels it when the
// selector changes); on errors it reports them and retries on the backoff
// floor. A 401, or a failure of the backoff policy, ends the Wait.
func (w *setWatch) run(ctx context.Context) {
	b, err := newPolicy(w.env.newBackoff)
	if err != nil {
		w.env.failFor(w.names, err)
		return
	}
	ri := w.key.resource(w.env.clients.Dynamic)
	var x expiry
	for ctx.Err() == nil {
		st, rv, err := listSet(ctx, w.env.clients.Dynamic, w.key, w.sel)
		watched := err == nil
		if err == nil {
			w.report(ctx, st)
			var n int
			n, err = follow(ctx, b, ri, metav1.ListOptions{LabelSelector: w.sel}, rv, w.key.request("watch", w.sel),
				func(t watch.EventType, u *unstructured.Unstructured) {
					if u.GetNamespace() != w.key.namespace {
						return
					}
					if t == watch.Deleted {
						st = st.withObject(u.GetName(), nil)
					} else {
						st = st.withObject(u.GetName(), u)
					}
					w.report(ctx, st)
				})
			x.watched(n)
			if n > 0 {
				if rerr := b.reset(); rerr != nil {
					w.env.failFor(w.names, rerr)
					return
				}
			}
		}
		switch {
		case ctx.Err() != nil:
			return
		case isFatal(err):
			w.env.fail(err)
			return
		case isPanic(err): // of the backoff policy, in follow
			w.env.failFor(w.names, err)
			return
		case x.relistAtOnce(err, watched):
			continue
		}
		w.env.log.V(1).Info("watch failed; retrying", "objects", w.key.request("watch", w.sel).String(), "err", err.Error())
		w.report(ctx, objState{observed: true, err: err})
		if err := pause(ctx, b); err != nil {
			if ctx.Err() == nil {
				w.env.failFor(w.names, err)
			}
			return
		}
	}
}

// setRun is the loop's record of the watch it runs for one set.
type setRun struct {
	sel    string
	gen    uint64
	cancel context.CancelFunc
}
