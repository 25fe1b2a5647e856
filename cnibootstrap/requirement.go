package cnibootstrap

import (
	"context"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// A Requirement is one prerequisite an add-on needs before it can start.
// The package provides them all: CRDEstablished, ObjectExists,
// ClusterRoleExists, ClusterRoleBindingExists and Allowed (the objects
// exist and are usable), and RolledOut, JobComplete, ServiceReady,
// WebhookServing and ObjectReady (the add-ons that use them are rolled
// out and healthy). They are plain values, safe to copy and to share
// between goroutines; New checks them.
type Requirement interface {
	// Name identifies the requirement in reports, for example
	// "crd clusterinformations.crd.projectcalico.org". Names must be
	// unique within one Waiter.
	Name() string

	// validate says what is wrong with the requirement's fields, with an
	// error wrapping ErrInvalidInput.
	validate() error
	// needs says what the requirement reads.
	needs() needs
	// eval returns nil when the requirement holds in v, otherwise why
	// not. self is the requirement's index (its probe's key in v).
	eval(v *view, self int) *Unmet
}

// needs is what one requirement reads: objects followed by a narrowed
// watch, RBAC kinds whose changes re-run its probe, and a probe (a request
// re-run on triggers and on the backoff floor, for what cannot be
// watched).
type needs struct {
	objects []objKey
	sets    []setKey
	rbac    []rbacScope
	probe   *probeSpec
}

// objKey names one object the waiter follows with a watch narrowed by a
// metadata.name field selector.
type objKey struct {
	gvr       schema.GroupVersionResource
	namespace string
	name      string
}

// setKey names a set of objects in one namespace that the waiter follows
// with one list and one watch narrowed by a label selector: a fixed one
// (selector), or the spec.selector of another object the waiter follows
// (from), such as a Deployment's for its pods; the set's watch is then
// (re)started whenever that selector changes.
type setKey struct {
	gvr       schema.GroupVersionResource
	namespace string
	selector  string
	from      objKey
}

// derived reports whether the set's selector comes from another object.
func (s setKey) derived() bool { return s.from != (objKey{}) }

// setState is the waiter's knowledge of one set: the selector it was
// listed with ("" while it has none: the object that gives it is not
// known yet) and the objects, by name.
type setState struct {
	sel string
	st  objState
}

// rbacScope is one RBAC kind, all of it or in one namespace, whose changes
// re-run SubjectAccessReviews.
type rbacScope struct {
	gvr       schema.GroupVersionResource
	namespace string
}

// probeSpec is a request that cannot be watched: a SubjectAccessReview or
// a discovery lookup.
type probeSpec struct {
	// run makes the request (or requests) once.
	run func(ctx context.Context, c Clients, in probeInput) probeResult
	// onRBAC: the probe first runs once the requirement's RBAC watches
	// have all started (or failed), so that no change slips between its
	// first answer and their first list; RBAC changes re-run it.
	onRBAC bool
	// after: the probe first runs when this object (one the requirement
	// follows) exists and ready says yes, and again whenever it changes
	// while ready says yes (a CRD established, a webhook configuration
	// with its CA bundles).
	after *objKey
	ready func(*unstructured.Unstructured) bool
}

// probeInput is what a probe run is given.
type probeInput struct {
	// obj is the object named by after, as last seen ready, or nil.
	obj *unstructured.Unstructured
	// prev is the previous answer when nothing changed since it (a re-run
	// on the backoff floor), nil after a trigger: a probe that asks
	// several questions may then ask again only those prev did not find
	// granted.
	prev *probeResult
}

// probeResult is one probe's answer: ok, or why not (reason), or the
// request's error (err, with reason describing it).
type probeResult struct {
	ok     bool
	reason string
	err    error
	// granted says, for a probe that asks several questions, which were
	// answered yes (by index).
	granted []bool
}

// objState is the waiter's knowledge of one object key: the objects of
// that name, by namespace. A key with a namespace, or on a cluster-scoped
// resource, matches at most one object; a key without a namespace on a
// namespaced resource matches one per namespace, and each is kept, so that
// the deletion of one leaves the others known (as a fresh list would).
type objState struct {
	// observed is false until the first list answered.
	observed bool
	// objs holds the objects that exist, by namespace ("" for a
	// cluster-scoped object); empty when none does. A state is never
	// modified once sent: a change makes a new map.
	objs map[string]*unstructured.Unstructured
	// notServed, when set, says that the resource itself is not served
	// (its list returned 404), and why.
	notServed string
	// err is the last request's error (classified); obj is then unknown.
	err error
}

// probeState is the waiter's knowledge of one probe.
type probeState struct {
	ran bool
	res probeResult
	// stale: something changed since the request behind res was sent, and
	// a new answer is on its way. Wait does not return on a stale answer.
	stale bool
}

// view is everything the waiter knows at one moment; requirements are
// evaluated against it.
type view struct {
	objects map[objKey]objState
	sets    map[setKey]setState
	probes  map[int]probeState
	// rbac holds the last error of each RBAC watch (nil when it works).
	rbac map[rbacScope]error
	// final: this is the last evaluation of a Wait that did not finish, so
	// a stale answer counts as unmet.
	final bool
}

func newView() *view {
	return &view{objects: map[objKey]objState{}, sets: map[setKey]setState{}, probes: map[int]probeState{}, rbac: map[rbacScope]error{}}
}

// markStale records that probe self was triggered again.
func (v *view) markStale(self int) {
	st := v.probes[self]
	st.stale = true
	v.probes[self] = st
}

// rbacErr returns the first error of the RBAC watches in scopes.
func (v *view) rbacErr(scopes []rbacScope) error {
	for _, s := range scopes {
		if err := v.rbac[s]; err != nil {
			return err
		}
	}
	return nil
}

// one returns the object of a key that matches at most one (a CRD, a
// cluster-scoped object, a namespaced one in a given namespace), or nil.
func (s objState) one() *unstructured.Unstructured {
	for _, o := range s.objs {
		return o
	}
	return nil
}

// withObject returns a copy of s in which the object of u's namespace is u,
// or is gone when u is nil (then ns says which namespace).
func (s objState) withObject(ns string, u *unstructured.Unstructured) objState {
	objs := make(map[string]*unstructured.Unstructured, len(s.objs)+1)
	for k, o := range s.objs {
		objs[k] = o
	}
	if u == nil {
		delete(objs, ns)
	} else {
		objs[ns] = u
	}
	s.objs = objs
	return s
}

// object returns the one object under k (a key that matches at most one),
// or an Unmet saying why it is not known to exist. Objects being deleted
// count as absent.
func (v *view) object(name string, k objKey) (*unstructured.Unstructured, *Unmet) {
	objs, u := v.candidates(name, k)
	if u != nil {
		return nil, u
	}
	return objs[0], nil
}

// candidates returns every object under k that exists and is not being
// deleted, ordered by namespace, or an Unmet saying why there is none.
func (v *view) candidates(name string, k objKey) ([]*unstructured.Unstructured, *Unmet) {
	st := v.objects[k]
	switch {
	case !st.observed:
		return nil, &Unmet{Requirement: name, Reason: "not yet observed"}
	case st.err != nil:
		return nil, &Unmet{Requirement: name, Reason: st.err.Error(), Err: st.err}
	case st.notServed != "":
		return nil, &Unmet{Requirement: name, Reason: st.notServed}
	case len(st.objs) == 0:
		return nil, &Unmet{Requirement: name, Reason: "not found"}
	}
	var live []*unstructured.Unstructured
	var deleting []string
	for _, ns := range slices.Sorted(maps.Keys(st.objs)) {
		o := st.objs[ns]
		if o.GetDeletionTimestamp() != nil {
			deleting = append(deleting, qualified(k, o))
			continue
		}
		live = append(live, o)
	}
	if len(live) == 0 {
		why := "being deleted"
		if k.namespace == "" && len(deleting) > 0 && deleting[0] != k.name {
			why = strings.Join(deleting, ", ") + " being deleted"
		}
		return nil, &Unmet{Requirement: name, Reason: why}
	}
	return live, nil
}

// qualified names o as "<namespace>/<name>" when k did not fix its
// namespace and it has one, otherwise by its name.
func qualified(k objKey, o *unstructured.Unstructured) string {
	if k.namespace == "" && o.GetNamespace() != "" {
		return o.GetNamespace() + "/" + o.GetName()
	}
	return o.GetName()
}

// members returns the objects of set s that exist (those being deleted
// included: a terminating pod still runs), ordered by name, or an Unmet
// saying why they are not known; what names them in reasons ("pods").
func (v *view) members(name string, s setKey, what string) ([]*unstructured.Unstructured, *Unmet) {
	ss := v.sets[s]
	switch {
	case ss.sel == "":
		return nil, &Unmet{Requirement: name, Reason: what + " not yet observed (no selector yet)"}
	case !ss.st.observed:
		return nil, &Unmet{Requirement: name, Reason: what + " not yet observed"}
	case ss.st.err != nil:
		return nil, &Unmet{Requirement: name, Reason: what + ": " + ss.st.err.Error(), Err: ss.st.err}
	}
	out := make([]*unstructured.Unstructured, 0, len(ss.st.objs))
	for _, k := range slices.Sorted(maps.Keys(ss.st.objs)) {
		out = append(out, ss.st.objs[k])
	}
	return out, nil
}

// probe returns the probe's answer, or an Unmet saying why there is no
// usable one. A stale answer is returned as it is (Wait does not return
// while any answer is stale), except in the final evaluation.
func (v *view) probe(name string, self int) (probeResult, *Unmet) {
	st := v.probes[self]
	switch {
	case !st.ran:
		return probeResult{}, &Unmet{Requirement: name, Reason: "not yet checked"}
	case st.stale && st.res.ok && v.final:
		return probeResult{}, &Unmet{Requirement: name, Reason: "re-checking after a change"}
	}
	return st.res, nil
}

// stale reports whether any probe answer is out of date.
func (v *view) stale() bool {
	for _, st := range v.probes {
		if st.stale {
			return true
		}
	}
	return false
}
