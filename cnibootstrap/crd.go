package cnibootstrap

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
)

// crdGVR is where CustomResourceDefinitions are read, as unstructured
// objects.
var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// CRDEstablished requires a CustomResourceDefinition to exist, not be
// being deleted, and have its Established condition True. NamesAccepted
// alone is not enough: a CRD whose names conflict with another's is stored
// but never served. Its Name is "crd <CRD>"; reasons read like
// "not found", "Established=False (Installing)" or
// "Established=False (NotAccepted), NamesAccepted=False (KindConflict: ...)".
type CRDEstablished struct {
	// CRD is the CRD's name, "<plural>.<group>", for example
	// "clusterinformations.crd.projectcalico.org".
	CRD string
	// InDiscovery also requires every version the CRD serves to be listed,
	// with the CRD's plural, in the apiserver's discovery document for its
	// group/version (what clients that resolve kinds through discovery,
	// like kubectl and controller-runtime, need). Discovery cannot be
	// watched: it is checked when the CRD becomes established or changes,
	// and then on the backoff floor.
	InDiscovery bool
}

// Name returns "crd <CRD>".
func (r CRDEstablished) Name() string { return "crd " + r.CRD }

func (r CRDEstablished) validate() error {
	if r.CRD == "" {
		return invalid("CRDEstablished: empty CRD name")
	}
	if !strings.Contains(r.CRD, ".") || len(validation.IsDNS1123Subdomain(r.CRD)) > 0 {
		return invalid("CRDEstablished %q: the CRD name must be <plural>.<group>", r.CRD)
	}
	return nil
}

func (r CRDEstablished) key() objKey { return objKey{gvr: crdGVR, name: r.CRD} }

func (r CRDEstablished) needs() needs {
	n := needs{objects: []objKey{r.key()}}
	if r.InDiscovery {
		k := r.key()
		n.probe = &probeSpec{run: discoveryProbe, after: &k,
			ready: func(crd *unstructured.Unstructured) bool { return crdNotReady(crd) == "" }}
	}
	return n
}

func (r CRDEstablished) eval(v *view, self int) *Unmet {
	obj, u := v.object(r.Name(), r.key())
	if u != nil {
		return u
	}
	if why := crdNotReady(obj); why != "" {
		return &Unmet{Requirement: r.Name(), Reason: why}
	}
	if !r.InDiscovery {
		return nil
	}
	res, u := v.probe(r.Name(), self)
	if u != nil {
		u.Reason = "established; discovery " + u.Reason
		return u
	}
	if !res.ok {
		return &Unmet{Requirement: r.Name(), Reason: "established; " + res.reason, Err: res.err}
	}
	return nil
}

// crdCondition is the part of a CRD condition the waiter reads.
type crdCondition struct{ status, reason, message string }

func findCRDCondition(obj *unstructured.Unstructured, typ string) *crdCondition {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != typ {
			continue
		}
		str := func(k string) string { s, _ := m[k].(string); return s }
		return &crdCondition{status: str("status"), reason: str("reason"), message: str("message")}
	}
	return nil
}

// crdNotReady returns "" when the CRD is established and not being
// deleted, otherwise why not, naming the conditions.
func crdNotReady(obj *unstructured.Unstructured) string {
	if obj.GetDeletionTimestamp() != nil {
		return "being deleted"
	}
	est := findCRDCondition(obj, "Established")
	if est == nil {
		return "Established condition not reported yet"
	}
	if est.status == string(metav1.ConditionTrue) {
		return ""
	}
	why := "Established=" + est.status
	if est.reason != "" {
		why += " (" + est.reason + ")"
	}
	if na := findCRDCondition(obj, "NamesAccepted"); na != nil && na.status != string(metav1.ConditionTrue) {
		why += ", NamesAccepted=" + na.status
		switch {
		case na.reason != "" && na.message != "":
			why += " (" + na.reason + ": " + na.message + ")"
		case na.reason != "":
			why += " (" + na.reason + ")"
		}
	}
	return why
}

// crdServedVersions returns the versions the CRD serves.
func crdServedVersions(obj *unstructured.Unstructured) []string {
	versions, _, _ := unstructured.NestedSlice(obj.Object, "spec", "versions")
	var served []string
	for _, v := range versions {
		m, ok := v.(map[string]any)
		if !ok {
			continue
		}
		name, _ := m["name"].(string)
		if ok, _ := m["served"].(bool); ok && name != "" {
			served = append(served, name)
		}
	}
	return served
}

// crdServes reports whether the CRD is established, not being deleted and
// serves version.
func crdServes(obj *unstructured.Unstructured, version string) bool {
	return obj != nil && crdNotReady(obj) == "" && slices.Contains(crdServedVersions(obj), version)
}

// notServedReason says why gvr is not served, from what is known of the
// CRD that would serve it (crd; not observed when the group is the core
// group, which no CRD serves).
func notServedReason(gvr schema.GroupVersionResource, crd objState) string {
	const prefix = "resource not served"
	crdName := gvr.GroupResource().String()
	switch {
	case gvr.Group == "" || !crd.observed:
		return prefix + " yet"
	case crd.err != nil:
		return prefix + " yet (crd " + crdName + ": " + crd.err.Error() + ")"
	case crd.one() == nil:
		return prefix + ": crd " + crdName + " not found"
	case crdNotReady(crd.one()) != "":
		return prefix + ": crd " + crdName + " " + crdNotReady(crd.one())
	case !slices.Contains(crdServedVersions(crd.one()), gvr.Version):
		return prefix + ": crd " + crdName + " does not serve version " + gvr.Version
	}
	return prefix + " yet (crd " + crdName + " is established)"
}

// discoveryProbe checks that every version crd serves lists its plural in
// discovery.
func discoveryProbe(ctx context.Context, c Clients, in probeInput) probeResult {
	crd := in.obj
	if crd == nil {
		return probeResult{reason: "crd not established"}
	}
	group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
	plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
	disco := c.Kube.Discovery()
	if isNil(disco) || isNil(disco.RESTClient()) {
		err := invalid("Clients.Kube has no discovery REST client")
		return probeResult{reason: err.Error(), err: err}
	}
	for _, version := range crdServedVersions(crd) {
		url := "/apis/" + group + "/" + version
		raw, err := disco.RESTClient().Get().AbsPath(url).Do(ctx).Raw()
		var list metav1.APIResourceList
		if err == nil {
			if err = json.Unmarshal(raw, &list); err != nil {
				err = fmt.Errorf("decode discovery document: %w", err)
			}
		}
		if err != nil {
			if cerr := classify(err, request{verb: "get", url: url}); isFatal(cerr) || !isNotFound(cerr) {
				return probeResult{reason: cerr.Error(), err: cerr}
			}
		}
		if !slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == plural }) {
			return probeResult{reason: fmt.Sprintf("%s not yet in discovery at %s", plural, url)}
		}
	}
	return probeResult{ok: true}
}
