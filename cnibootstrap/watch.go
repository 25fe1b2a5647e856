package cnibootstrap

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
)

// env is what every goroutine of one Wait shares.
type env struct {
	clients    Clients
	newBackoff func() backoff.BackOff
	log        logr.Logger
	// fatal carries the first error that ends the Wait (a 401, a panic,
	// a broken policy); later ones are dropped.
	fatal chan error
}

func newEnv(c Clients, newBackoff func() backoff.BackOff, log logr.Logger) *env {
	e := &env{clients: c, newBackoff: newBackoff, fatal: make(chan error, 1)}
	e.log = safeLogger(log, func(err error) { e.fail(fmt.Errorf("cnibootstrap: %w", err)) })
	return e
}

// fail ends the Wait with err, unless another error did already.
func (e *env) fail(err error) {
	select {
	case e.fatal <- err:
	default:
	}
}

// failFor ends the Wait with err, naming the requirements the failing
// goroutine served; a 401 (which names its request) is passed as it is.
func (e *env) failFor(names string, err error) {
	if isFatal(err) {
		e.fail(err)
		return
	}
	e.fail(fmt.Errorf("cnibootstrap: %s: %w", names, err))
}

// start runs fn on a goroutine of wg under recover: a panic there (in a
// client in Clients; the other callbacks are protected where they are
// called) ends the Wait naming the requirements served.
func (e *env) start(wg *sync.WaitGroup, names string, fn func()) {
	wg.Go(func() {
		defer func() {
			if v := recover(); v != nil {
				e.failFor(names, newPanicError("a client in Clients", v))
			}
		}()
		fn()
	})
}

// messages from the goroutines of one Wait to its loop.
type (
	objUpdate struct {
		key   objKey
		state objState
	}
	rbacUpdate struct {
		scope   rbacScope
		err     error // the watch's last error; nil once it works again
		changed bool  // something may have changed: re-run the reviews
	}
	probeUpdate struct {
		self int
		gen  uint64
		res  probeResult
	}
)

// send delivers msg to out unless ctx ends first.
func send(ctx context.Context, out chan<- any, msg any) {
	select {
	case out <- msg:
	case <-ctx.Done():
	}
}

func (k objKey) resource(d dynamic.Interface) dynamic.ResourceInterface {
	if k.namespace != "" {
		return d.Resource(k.gvr).Namespace(k.namespace)
	}
	return d.Resource(k.gvr)
}

func (k objKey) listOptions() metav1.ListOptions {
	return metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", k.name).String()}
}

func (k objKey) request(verb string) request {
	return request{verb: verb, gvr: k.gvr, namespace: k.namespace, name: k.name}
}

// listObjects lists the objects under k with a metadata.name field
// selector (so a rule with resourceNames grants it) and returns their state
// (observed, with every match by namespace) and the list's resourceVersion
// to watch from. Errors are classified.
func listObjects(ctx context.Context, d dynamic.Interface, k objKey) (objState, string, error) {
	l, err := k.resource(d).List(ctx, k.listOptions())
	if err != nil {
		return objState{}, "", classify(err, k.request("list"))
	}
	st := objState{observed: true, objs: map[string]*unstructured.Unstructured{}}
	for i := range l.Items {
		o := &l.Items[i]
		if o.GetName() == k.name && (k.namespace == "" || o.GetNamespace() == k.namespace) {
			st.objs[o.GetNamespace()] = o
		}
	}
	return st, l.GetResourceVersion(), nil
}

// errWatchEnded: the server closed a watch before sending anything.
var errWatchEnded = errors.New("watch closed by the server before any event")

// minWatchLife is how long a watch must have stayed open for follow to
// re-open it at once when the server closes it cleanly (as the apiserver
// does after its watch timeout, minutes later); one closed sooner is
// re-opened after the backoff floor, so a server that ends every watch at
// once cannot make the waiter spin.
const minWatchLife = time.Second

// follow watches ri from resourceVersion rv with opts, calling onEvent for
// every added, modified or deleted object, and resumes from the last
// resourceVersion seen (bookmarks included) when the server closes the
// watch: at once (resetting b) if the watch stayed open at least
// minWatchLife, otherwise after b's next delay. It returns when ctx ends
// or a watch fails, with the number of events (bookmarks included) it
// received and the classified error (410 Gone from an expired
// resourceVersion included, for the caller to relist), or b's error (a
// *PanicError).
func follow(ctx context.Context, b *policy, ri dynamic.ResourceInterface, opts metav1.ListOptions, rv string, req request,
	onEvent func(watch.EventType, *unstructured.Unstructured)) (int, error) {
	events := 0
	for {
		o := opts
		o.ResourceVersion, o.AllowWatchBookmarks = rv, true
		opened := time.Now()
		w, err := ri.Watch(ctx, o)
		if err != nil {
			return events, classify(err, req)
		}
		n, err := drain(ctx, w, &rv, onEvent)
		w.Stop()
		events += n
		switch {
		case ctx.Err() != nil:
			return events, ctx.Err()
		case err != nil:
			return events, classify(err, req)
		case n == 0:
			return events, classify(errWatchEnded, req)
		case time.Since(opened) >= minWatchLife:
			err = b.reset()
		default:
			err = pause(ctx, b)
		}
		if err != nil {
			return events, err
		}
	}
}

// expiry paces the relists of one list-and-watch loop after a 410 Gone
// (an expired resourceVersion). A watch that expired is answered with an
// immediate relist, as informers do, but only once in a row: if the next
// watch expires too before delivering any event, or a list itself answers
// 410 (a list without a resourceVersion never should), the loop goes
// through its backoff floor as after any other error, so a server that
// answers 410 to everything cannot make it spin.
type expiry struct{ spent bool }

// watched records that a watch delivered n events.
func (x *expiry) watched(n int) {
	if n > 0 {
		x.spent = false
	}
}

// relistAtOnce reports whether err, the error of a watch (fromWatch) or
// of the list before it, calls for an immediate relist.
func (x *expiry) relistAtOnce(err error, fromWatch bool) bool {
	if !fromWatch || !isExpired(err) || x.spent {
		return false
	}
	x.spent = true
	return true
}

func drain(ctx context.Context, w watch.Interface, rv *string, onEvent func(watch.EventType, *unstructured.Unstructured)) (int, error) {
	n := 0
	for {
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return n, nil
			}
			if ev.Type == watch.Error {
				return n, apierrors.FromObject(ev.Object)
			}
			n++
			if m, err := meta.Accessor(ev.Object); err == nil && m.GetResourceVersion() != "" {
				*rv = m.GetResourceVersion()
			}
			if ev.Type == watch.Bookmark {
				continue
			}
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				return n, errors.New("watch returned an object that is not unstructured")
			}
			onEvent(ev.Type, u)
		}
	}
}

// objWatch follows one object with a list and a watch narrowed to its name,
// and sends every state it learns to out.
type objWatch struct {
	key   objKey
	env   *env
	out   chan<- any
	names string // the requirements served, for errors
}

func (w *objWatch) report(ctx context.Context, st objState) {
	send(ctx, w.out, objUpdate{key: w.key, state: st})
}

// run lists and watches until ctx ends; on errors it reports them and
// retries on the backoff floor; while the resource is not served it
// follows the CRD that would serve it (see untilServed). A 401, or a
// failure of the backoff policy, ends the Wait through env.fail.
func (w *objWatch) run(ctx context.Context) {
	b, err := newPolicy(w.env.newBackoff)
	if err != nil {
		w.env.failFor(w.names, err)
		return
	}
	var crd *crdFollower // started while the resource is not served
	defer func() { crd.stop() }()
	var x expiry
	for ctx.Err() == nil {
		st, rv, err := listObjects(ctx, w.env.clients.Dynamic, w.key)
		watched := err == nil
		if err == nil {
			crd.stop()
			crd = nil
			// A (re)list replaces everything known; each event then
			// changes the object of its namespace only.
			w.report(ctx, st)
			var n int
			n, err = follow(ctx, b, w.key.resource(w.env.clients.Dynamic), w.key.listOptions(), rv, w.key.request("watch"),
				func(t watch.EventType, u *unstructured.Unstructured) {
					if u.GetName() != w.key.name || (w.key.namespace != "" && u.GetNamespace() != w.key.namespace) {
						return
					}
					ns := u.GetNamespace()
					if t == watch.Deleted {
						u = nil
					}
					st = st.withObject(ns, u)
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
		case isNotFound(err) && w.key.gvr != crdGVR:
			if crd == nil {
				crd = w.startCRDFollower(ctx)
			}
			if err := w.untilServed(ctx, b, crd); err != nil {
				if ctx.Err() == nil {
					w.env.failFor(w.names, err)
				}
				return
			}
		default:
			w.env.log.V(1).Info("watch failed; retrying", "object", w.key.request("watch").String(), "err", err.Error())
			w.report(ctx, objState{observed: true, err: err})
			if err := pause(ctx, b); err != nil {
				if ctx.Err() == nil {
					w.env.failFor(w.names, err)
				}
				return
			}
		}
	}
}

// crdFollower follows, with an objWatch of its own, the CRD that would
// serve a resource that is not served yet. Its state lives across the
// retries of one outage.
type crdFollower struct {
	updates chan any
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	state   objState
	// triedRV is the resourceVersion of the CRD when the object's list was
	// last retried because the CRD looked ready: the same version does not
	// trigger another immediate retry (no busy loop when a served CRD
	// still 404s, e.g. for a version it does not serve yet).
	triedRV string
}

func (w *objWatch) startCRDFollower(ctx context.Context) *crdFollower {
	if w.key.gvr.Group == "" {
		return nil // the core group is never served by a CRD
	}
	ctx, cancel := context.WithCancel(ctx)
	f := &crdFollower{updates: make(chan any), cancel: cancel}
	cw := &objWatch{key: objKey{gvr: crdGVR, name: w.key.gvr.GroupResource().String()}, env: w.env, out: f.updates, names: w.names}
	w.env.start(&f.wg, w.names, func() { cw.run(ctx) })
	return f
}

func (f *crdFollower) stop() {
	if f != nil {
		f.cancel()
		f.wg.Wait()
	}
}

// untilServed reports the resource as not served, with what is known of
// its CRD, until it is worth listing again: at once when the CRD becomes
// established and serves the version (a new resourceVersion of it), or on
// the backoff floor when the CRD cannot tell (there is none, as for an
// aggregated API or the core group; it cannot be read; or it looks ready
// but the list still 404s). While the CRD exists but is not established,
// only its events wake it: no polling. It returns nil to retry the list,
// ctx's error, or the policy's error.
func (w *objWatch) untilServed(ctx context.Context, b *policy, crd *crdFollower) error {
	for {
		var st objState
		if crd != nil {
			st = crd.state
		}
		w.report(ctx, objState{observed: true, notServed: notServedReason(w.key.gvr, st)})
		obj := st.one()
		ready := obj != nil && crdServes(obj, w.key.gvr.Version)
		if ready && obj.GetResourceVersion() != crd.triedRV {
			crd.triedRV = obj.GetResourceVersion()
			return b.reset()
		}
		var floor *time.Timer
		if crd == nil || (st.observed && (st.err != nil || obj == nil || ready)) {
			d, err := b.next()
			if err != nil {
				return err
			}
			floor = time.NewTimer(d)
		}
		m, err := w.awaitCRD(ctx, floor, crd)
		if m == nil || err != nil {
			return err // the floor passed (nil), or ctx ended
		}
		crd.state = m.state
	}
}

// awaitCRD returns the next update of the CRD follower, or nil, nil when
// the floor timer fires first, or ctx's error. It stops the timer.
func (w *objWatch) awaitCRD(ctx context.Context, floor *time.Timer, crd *crdFollower) (*objUpdate, error) {
	var floorC <-chan time.Time
	if floor != nil {
		defer floor.Stop()
		floorC = floor.C
	}
	var updates chan any
	if crd != nil {
		updates = crd.updates
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-floorC:
		return nil, nil
	case m := <-updates:
		u, _ := m.(objUpdate) // the follower sends nothing else
		return &u, nil
	}
}

// rbacWatch watches one RBAC kind, all of it or in one namespace, and tells
// the loop whenever something in it changes, so that SubjectAccessReviews
// are re-run. It only needs the events, not the objects: its list asks for
// one item, just for a resourceVersion to watch from.
type rbacWatch struct {
	scope rbacScope
	env   *env
	out   chan<- any
	names string // the requirements served, for errors
}

func (w *rbacWatch) run(ctx context.Context) {
	b, err := newPolicy(w.env.newBackoff)
	if err != nil {
		w.env.failFor(w.names, err)
		return
	}
	ri := objKey{gvr: w.scope.gvr, namespace: w.scope.namespace}.resource(w.env.clients.Dynamic)
	req := request{gvr: w.scope.gvr, namespace: w.scope.namespace}
	listReq, watchReq := req, req
	listReq.verb, watchReq.verb = "list", "watch"
	first := true
	var x expiry
	for ctx.Err() == nil {
		l, err := ri.List(ctx, metav1.ListOptions{Limit: 1})
		watched := err == nil
		if err == nil {
			// After the first list, a relist means events may have been
			// missed: count it as a change.
			send(ctx, w.out, rbacUpdate{scope: w.scope, changed: !first})
			first = false
			var n int
			n, err = follow(ctx, b, ri, metav1.ListOptions{}, l.GetResourceVersion(), watchReq,
				func(watch.EventType, *unstructured.Unstructured) {
					send(ctx, w.out, rbacUpdate{scope: w.scope, changed: true})
				})
			x.watched(n)
			if n > 0 {
				if rerr := b.reset(); rerr != nil {
					w.env.failFor(w.names, rerr)
					return
				}
			}
		} else {
			err = classify(err, listReq)
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
		w.env.log.V(1).Info("RBAC watch failed; retrying", "request", watchReq.String(), "err", err.Error())
		send(ctx, w.out, rbacUpdate{scope: w.scope, err: err})
		if err := pause(ctx, b); err != nil {
			if ctx.Err() == nil {
				w.env.failFor(w.names, err)
			}
			return
		}
	}
}
