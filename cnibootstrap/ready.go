package cnibootstrap

import (
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// ObjectReady requires any object to be ready by the kstatus conventions
// (sigs.k8s.io/cli-utils/pkg/kstatus/status, the rules Helm 4 and Flux
// wait with): the object is Current — its controller has observed its
// generation, no Reconciling or Stalled condition is True, a Ready
// condition (when there is one) is True, and the built-in rules for core
// kinds hold (Deployments, StatefulSets and DaemonSets with every replica
// updated and available, Pods running and ready, Services with an IP,
// PersistentVolumeClaims bound, CRDs established, ...). Its Name is
// "<resource>.<group>/<version> [<namespace>/]<object> ready"; reasons read
// like "InProgress: Deployment generation is 2, but latest observed
// generation is 1".
//
// Its known trap: kstatus counts a Job that has started (or is suspended)
// as Current, not only one that has completed — use JobComplete for
// install Jobs. It also judges a workload's rollout by its status counts
// alone; RolledOut also waits for the old pods to be gone.
//
// Final failure: an object kstatus computes as Failed (a Stalled
// condition, a Deployment past its progress deadline, a failed Job or
// Pod, ...) ends Wait with a *FailedError (Reason "Failed", the message
// kstatus gives). With an empty Namespace on a namespaced resource ("any
// namespace", as for ObjectExists) a Failed object is final only when no
// other object of that name is Current; one in a namespace may still
// appear.
//
// The object is followed with a list and a watch narrowed by name, and,
// while its resource is not served, its CRD, as for ObjectExists.
type ObjectReady struct {
	// GVR is the object's resource, checked as ObjectExists.GVR.
	GVR schema.GroupVersionResource
	// Namespace is the object's namespace (a DNS-1123 label), "" for a
	// cluster-scoped object (on a namespaced resource, "" accepts an
	// object of that name in any namespace).
	Namespace string
	// Object is the object's name, a valid path segment.
	Object string
}

// Name returns "<resource>.<group>/<version> [<namespace>/]<object> ready".
func (r ObjectReady) Name() string {
	s := r.GVR.GroupResource().String() + "/" + r.GVR.Version + " "
	if r.Namespace != "" {
		s += r.Namespace + "/"
	}
	return s + r.Object + " ready"
}

func (r ObjectReady) validate() error {
	return validObjectRef("ObjectReady", r.GVR, r.Namespace, r.Object)
}

func (r ObjectReady) key() objKey { return objKey{gvr: r.GVR, namespace: r.Namespace, name: r.Object} }

func (r ObjectReady) needs() needs { return needs{objects: []objKey{r.key()}} }

func (r ObjectReady) eval(v *view, _ int) *Unmet {
	objs, u := v.candidates(r.Name(), r.key())
	if u != nil {
		return u
	}
	var why []string
	var failed *FailedError
	for _, obj := range objs {
		res, err := kstatus(obj)
		var reason string
		switch {
		case err != nil:
			reason = "kstatus: " + err.Error()
		case res.Status == status.CurrentStatus:
			return nil
		case res.Status == status.FailedStatus:
			if failed == nil && (r.Namespace != "" || obj.GetNamespace() == "") {
				failed = &FailedError{Requirement: r.Name(), Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName(),
					Reason: "Failed", Message: res.Message}
			}
			reason = string(res.Status) + ": " + res.Message
		default:
			reason = string(res.Status)
			if res.Message != "" {
				reason += ": " + res.Message
			}
		}
		if q := qualified(r.key(), obj); q != r.Object {
			reason = q + ": " + reason
		}
		why = append(why, reason)
	}
	u = &Unmet{Requirement: r.Name(), Reason: strings.Join(why, "; ")}
	if failed != nil {
		u.Err = failed
	}
	return u
}

// kstatus computes obj's status on a copy (kstatus reads, but it is not
// ours to trust with the waiter's state), under recover.
func kstatus(obj *unstructured.Unstructured) (res *status.Result, err error) {
	defer func() {
		if v := recover(); v != nil {
			res, err = nil, fmt.Errorf("panicked on %s %s: %v", obj.GetKind(), obj.GetName(), v)
		}
	}()
	res, err = status.Compute(obj.DeepCopy())
	if err == nil && res == nil {
		err = errors.New("no result")
	}
	return res, err
}
