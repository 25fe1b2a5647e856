package cnibootstrap

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

var (
	podGVR                = corev1.SchemeGroupVersion.WithResource("pods")
	deploymentGVR         = appsv1.SchemeGroupVersion.WithResource("deployments")
	daemonSetGVR          = appsv1.SchemeGroupVersion.WithResource("daemonsets")
	statefulSetGVR        = appsv1.SchemeGroupVersion.WithResource("statefulsets")
	replicaSetGVR         = appsv1.SchemeGroupVersion.WithResource("replicasets")
	controllerRevisionGVR = appsv1.SchemeGroupVersion.WithResource("controllerrevisions")
)

// WorkloadKind is the kind of workload RolledOut waits for.
type WorkloadKind string

// The workload kinds RolledOut accepts.
const (
	Deployment  WorkloadKind = "Deployment"
	DaemonSet   WorkloadKind = "DaemonSet"
	StatefulSet WorkloadKind = "StatefulSet"
)

// RolledOut requires a Deployment, DaemonSet or StatefulSet to have
// finished its rollout, as `kubectl rollout status` judges it, and no pod
// of an older revision to remain — the old controller fully gone before
// whatever waits on the new one starts (the RKE2 ingress-nginx upgrade,
// rke2 #7652, where old and new controllers coexisted). Its Name is
// "<kind> <namespace>/<workload> rolled out", for example
// "daemonset kube-system/rke2-ingress-nginx-controller rolled out".
//
// It holds when the controller has observed the workload's current
// generation and:
//   - Deployment: updated replicas reach spec.replicas, no other replica
//     is counted, available replicas reach the updated ones, the new
//     ReplicaSet (the one the Deployment controls whose pod template is
//     the Deployment's) has spec.replicas available, and no pod matched by
//     the Deployment's selector carries another pod-template-hash;
//   - DaemonSet: updated and available pods reach desiredNumberScheduled,
//     and no pod carries a controller-revision-hash other than that of the
//     current revision (the ControllerRevision the DaemonSet controls
//     whose template is the DaemonSet's);
//   - StatefulSet: ready and available pods reach spec.replicas; with a
//     RollingUpdate partition P, the replicas−P pods of ordinal ≥ P are
//     updated, and each of them carries status.updateRevision (pods below
//     the partition keep their revision, as asked); without one,
//     currentRevision equals updateRevision and every pod carries it; and
//     no pod of an ordinal ≥ spec.replicas remains.
//
// Pods that are terminating still count as remaining (they still run);
// pods that have Succeeded or Failed do not. With the OnDelete strategy it
// holds only once the old pods have been deleted by someone.
//
// Final failure: a Deployment whose Progressing condition has reason
// ProgressDeadlineExceeded (at the current generation) ends Wait with a
// *FailedError. Nothing else is final: a DaemonSet or StatefulSet has no
// deadline, and a rollout stuck on a pod that never becomes ready is
// reported ("1 of 3 updated pods available") until ctx ends.
//
// The workload is followed with a list and a watch narrowed by name; its
// pods (and a Deployment's ReplicaSets, a DaemonSet's
// ControllerRevisions) with a list and a watch narrowed by the workload's
// spec.selector, restarted if the workload is replaced by one with
// another selector.
type RolledOut struct {
	// Kind is Deployment, DaemonSet or StatefulSet.
	Kind WorkloadKind
	// Namespace is the workload's namespace; it must be set.
	Namespace string
	// Workload is the workload's name.
	Workload string
}

// Name returns "<kind> <namespace>/<workload> rolled out", the kind in
// lower case.
func (r RolledOut) Name() string {
	return strings.ToLower(string(r.Kind)) + " " + r.Namespace + "/" + r.Workload + " rolled out"
}

func (r RolledOut) validate() error {
	switch {
	case r.Kind != Deployment && r.Kind != DaemonSet && r.Kind != StatefulSet:
		return invalid("RolledOut %s/%s: Kind %q is not Deployment, DaemonSet or StatefulSet", r.Namespace, r.Workload, r.Kind)
	case r.Workload == "":
		return invalid("RolledOut %s in %q: empty Workload name", r.Kind, r.Namespace)
	case r.Namespace == "":
		return invalid("RolledOut %s %q: empty Namespace", r.Kind, r.Workload)
	}
	return validNames("RolledOut "+string(r.Kind), r.Namespace, r.Workload)
}

func (r RolledOut) gvr() schema.GroupVersionResource {
	switch r.Kind {
	case DaemonSet:
		return daemonSetGVR
	case StatefulSet:
		return statefulSetGVR
	}
	return deploymentGVR
}

func (r RolledOut) key() objKey {
	return objKey{gvr: r.gvr(), namespace: r.Namespace, name: r.Workload}
}

func (r RolledOut) pods() setKey { return setKey{gvr: podGVR, namespace: r.Namespace, from: r.key()} }

// revisions is the set that says which revision is current: a
// Deployment's ReplicaSets, a DaemonSet's ControllerRevisions; a
// StatefulSet's status says it.
func (r RolledOut) revisions() (setKey, bool) {
	switch r.Kind {
	case Deployment:
		return setKey{gvr: replicaSetGVR, namespace: r.Namespace, from: r.key()}, true
	case DaemonSet:
		return setKey{gvr: controllerRevisionGVR, namespace: r.Namespace, from: r.key()}, true
	}
	return setKey{}, false
}

func (r RolledOut) needs() needs {
	n := needs{objects: []objKey{r.key()}, sets: []setKey{r.pods()}}
	if s, ok := r.revisions(); ok {
		n.sets = append(n.sets, s)
	}
	return n
}

func (r RolledOut) eval(v *view, _ int) *Unmet {
	obj, u := v.object(r.Name(), r.key())
	if u != nil {
		return u
	}
	unmet := func(format string, args ...any) *Unmet {
		return &Unmet{Requirement: r.Name(), Reason: fmt.Sprintf(format, args...)}
	}
	if specSelector(obj) == "" {
		return unmet("spec.selector is empty or malformed")
	}
	var why string
	var err error
	switch r.Kind {
	case Deployment:
		why, err = r.deployment(v, obj)
	case DaemonSet:
		why, err = r.daemonSet(v, obj)
	case StatefulSet:
		why, err = r.statefulSet(v, obj)
	}
	var fe *FailedError
	switch {
	case asFailed(err, &fe):
		return &Unmet{Requirement: r.Name(), Reason: fe.Reason + ": " + fe.Message, Err: fe}
	case err != nil:
		return &Unmet{Requirement: r.Name(), Reason: err.Error(), Err: err}
	case why != "":
		return unmet("%s", why)
	}
	return nil
}

// asFailed is errors.As for a *FailedError returned as it is.
func asFailed(err error, fe **FailedError) bool {
	f, ok := err.(*FailedError)
	if ok {
		*fe = f
	}
	return ok
}

// unobserved says the controller has not seen the latest spec.
func unobserved(gen, observed int64) string {
	if observed < gen {
		return fmt.Sprintf("waiting for the controller to observe generation %d (observed %d)", gen, observed)
	}
	return ""
}

// deployment returns why the Deployment is not rolled out, "" when it is,
// a *FailedError past its progress deadline, or an error.
func (r RolledOut) deployment(v *view, obj *unstructured.Unstructured) (string, error) {
	var d appsv1.Deployment
	if err := decode(obj, &d); err != nil {
		return "", err
	}
	if why := unobserved(d.Generation, d.Status.ObservedGeneration); why != "" {
		return why, nil
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return "", &FailedError{Requirement: r.Name(), Kind: string(Deployment), Namespace: d.Namespace, Name: d.Name,
				Reason: c.Reason, Message: c.Message}
		}
	}
	want := ptrOr(d.Spec.Replicas, 1)
	s := d.Status
	switch {
	case s.UpdatedReplicas < want:
		return fmt.Sprintf("%d of %d new replicas updated", s.UpdatedReplicas, want), nil
	case s.Replicas > s.UpdatedReplicas:
		return fmt.Sprintf("%d old replicas pending termination", s.Replicas-s.UpdatedReplicas), nil
	case s.AvailableReplicas < s.UpdatedReplicas:
		return fmt.Sprintf("%d of %d updated replicas available", s.AvailableReplicas, s.UpdatedReplicas), nil
	}
	rsKey, _ := r.revisions()
	sets, u := v.members(r.Name(), rsKey, "replicasets")
	if u != nil {
		return u.Reason, u.Err
	}
	tmpl, _, _ := unstructured.NestedMap(obj.Object, "spec", "template")
	var newRS *appsv1.ReplicaSet
	for _, o := range sets {
		rtmpl, _, _ := unstructured.NestedMap(o.Object, "spec", "template")
		if controlledBy(o, d.UID) && o.GetDeletionTimestamp() == nil && sameTemplate(tmpl, rtmpl, appsv1.DefaultDeploymentUniqueLabelKey) {
			newRS = &appsv1.ReplicaSet{}
			if err := decode(o, newRS); err != nil {
				return "", err
			}
			break
		}
	}
	if newRS == nil {
		return "new ReplicaSet not observed yet", nil
	}
	if newRS.Status.AvailableReplicas < want {
		return fmt.Sprintf("new ReplicaSet %s: %d of %d replicas available", newRS.Name, newRS.Status.AvailableReplicas, want), nil
	}
	hash := newRS.Labels[appsv1.DefaultDeploymentUniqueLabelKey]
	return r.oldPods(v, appsv1.DefaultDeploymentUniqueLabelKey, func(p *corev1.Pod) bool {
		h, ok := p.Labels[appsv1.DefaultDeploymentUniqueLabelKey]
		return ok && h != hash
	})
}

// daemonSet returns why the DaemonSet is not rolled out, "" when it is.
func (r RolledOut) daemonSet(v *view, obj *unstructured.Unstructured) (string, error) {
	var ds appsv1.DaemonSet
	if err := decode(obj, &ds); err != nil {
		return "", err
	}
	if why := unobserved(ds.Generation, ds.Status.ObservedGeneration); why != "" {
		return why, nil
	}
	s := ds.Status
	switch {
	case s.UpdatedNumberScheduled < s.DesiredNumberScheduled:
		return fmt.Sprintf("%d of %d updated pods scheduled", s.UpdatedNumberScheduled, s.DesiredNumberScheduled), nil
	case s.NumberAvailable < s.DesiredNumberScheduled:
		return fmt.Sprintf("%d of %d updated pods available", s.NumberAvailable, s.DesiredNumberScheduled), nil
	}
	crKey, _ := r.revisions()
	revs, u := v.members(r.Name(), crKey, "controllerrevisions")
	if u != nil {
		return u.Reason, u.Err
	}
	tmpl, _, _ := unstructured.NestedMap(obj.Object, "spec", "template")
	hash := ""
	for _, o := range revs {
		data, _, _ := unstructured.NestedMap(o.Object, "data", "spec", "template")
		if controlledBy(o, ds.UID) && sameTemplate(tmpl, data, "") {
			hash = o.GetLabels()[appsv1.DefaultDaemonSetUniqueLabelKey]
			if hash == "" {
				hash = strings.TrimPrefix(o.GetName(), ds.Name+"-")
			}
			break
		}
	}
	if hash == "" {
		return "current ControllerRevision not observed yet", nil
	}
	return r.oldPods(v, appsv1.DefaultDaemonSetUniqueLabelKey, func(p *corev1.Pod) bool {
		h, ok := p.Labels[appsv1.DefaultDaemonSetUniqueLabelKey]
		return ok && h != hash
	})
}

// statefulSet returns why the StatefulSet is not rolled out, "" when it is.
func (r RolledOut) statefulSet(v *view, obj *unstructured.Unstructured) (string, error) {
	var sts appsv1.StatefulSet
	if err := decode(obj, &sts); err != nil {
		return "", err
	}
	if why := unobserved(sts.Generation, sts.Status.ObservedGeneration); why != "" {
		return why, nil
	}
	want := ptrOr(sts.Spec.Replicas, 1)
	partition := int32(0)
	if ru := sts.Spec.UpdateStrategy.RollingUpdate; sts.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType && ru != nil && ru.Partition != nil {
		partition = min(max(*ru.Partition, 0), want)
	}
	s := sts.Status
	switch {
	case s.ReadyReplicas < want:
		return fmt.Sprintf("%d of %d pods ready", s.ReadyReplicas, want), nil
	case s.AvailableReplicas < want:
		return fmt.Sprintf("%d of %d pods available", s.AvailableReplicas, want), nil
	case s.UpdateRevision == "":
		return "update revision not reported yet", nil
	case partition > 0 && s.UpdatedReplicas < want-partition:
		return fmt.Sprintf("%d of %d pods at or above partition %d updated", s.UpdatedReplicas, want-partition, partition), nil
	case partition == 0 && s.UpdatedReplicas < want:
		return fmt.Sprintf("%d of %d pods updated", s.UpdatedReplicas, want), nil
	case partition == 0 && s.CurrentRevision != s.UpdateRevision:
		return fmt.Sprintf("current revision %s is not update revision %s yet", s.CurrentRevision, s.UpdateRevision), nil
	}
	return r.oldPods(v, appsv1.StatefulSetRevisionLabel, func(p *corev1.Pod) bool {
		ord, ok := ordinal(p, sts.Name)
		switch {
		case !ok:
			return false
		case ord >= want:
			return true // beyond spec.replicas: still to be removed
		case ord < partition:
			return false
		}
		return p.Labels[appsv1.StatefulSetRevisionLabel] != s.UpdateRevision
	})
}

// ordinal returns a StatefulSet pod's ordinal, from its pod-index label or
// its name.
func ordinal(p *corev1.Pod, set string) (int32, bool) {
	s, ok := p.Labels[appsv1.PodIndexLabel]
	if !ok {
		s, ok = strings.CutPrefix(p.Name, set+"-")
		if !ok {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 32)
	return int32(n), err == nil && n >= 0
}

// oldPods returns "" when no running or terminating pod of the workload is
// old (by isOld), otherwise which remain; label is the revision label,
// shown with each pod.
func (r RolledOut) oldPods(v *view, label string, isOld func(*corev1.Pod) bool) (string, error) {
	pods, u := v.members(r.Name(), r.pods(), "pods")
	if u != nil {
		return u.Reason, u.Err
	}
	var old []string
	for _, o := range pods {
		var p corev1.Pod
		if err := decode(o, &p); err != nil {
			return "", err
		}
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || !isOld(&p) {
			continue
		}
		s := p.Name + " (" + label + " " + p.Labels[label]
		if p.DeletionTimestamp != nil {
			s += ", terminating"
		}
		old = append(old, s+")")
	}
	switch len(old) {
	case 0:
		return "", nil
	case 1:
		return "1 old pod remains: " + old[0], nil
	}
	const show = 3
	more := ""
	if len(old) > show {
		more = fmt.Sprintf(" and %d more", len(old)-show)
	}
	return fmt.Sprintf("%d old pods remain: %s%s", len(old), strings.Join(old[:min(show, len(old))], ", "), more), nil
}

// controlledBy reports whether o's controller is the object with uid.
func controlledBy(o *unstructured.Unstructured, uid types.UID) bool {
	return slices.ContainsFunc(o.GetOwnerReferences(), func(ref metav1.OwnerReference) bool {
		return ref.Controller != nil && *ref.Controller && ref.UID == uid
	})
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
