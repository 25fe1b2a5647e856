package cnibootstrap

import (
	"fmt"
	"strings"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

var endpointSliceGVR = discoveryv1.SchemeGroupVersion.WithResource("endpointslices")

// ServiceReady requires a Service to have at least MinReady ready
// endpoints, counted from its EndpointSlices (those labelled
// kubernetes.io/service-name=<service>): endpoints whose ready condition
// is true or unset (which, per the API, consumers treat as ready),
// counted once each across slices (a dual-stack pod is in one slice per
// address family) by the pod they point to, or by address. A pod becomes
// a ready endpoint when its readiness probe passes, so this is "the
// default backend answers", not "its Deployment exists". Its Name is
// "service <namespace>/<service> ready"; reasons read like
// "1 ready endpoint, want 2 (3 endpoints in 1 EndpointSlice)" or
// "no EndpointSlices".
//
// Nothing is final: endpoints come and go.
//
// The EndpointSlices are followed with one list and one watch narrowed by
// that label; the Service object itself is not read.
type ServiceReady struct {
	// Namespace is the Service's namespace; it must be set.
	Namespace string
	// Service is the Service's name.
	Service string
	// MinReady is the number of ready endpoints required; 0 means 1.
	MinReady int
}

// Name returns "service <namespace>/<service> ready".
func (r ServiceReady) Name() string { return "service " + r.Namespace + "/" + r.Service + " ready" }

func (r ServiceReady) validate() error {
	switch {
	case r.Service == "":
		return invalid("ServiceReady in %q: empty Service name", r.Namespace)
	case r.Namespace == "":
		return invalid("ServiceReady %q: empty Namespace", r.Service)
	case r.MinReady < 0:
		return invalid("ServiceReady %s/%s: negative MinReady %d", r.Namespace, r.Service, r.MinReady)
	}
	if errs := validation.IsDNS1035Label(r.Service); len(errs) > 0 {
		// The name goes into a label selector: it must be a Service name.
		return invalid("ServiceReady %s/%s: malformed Service name: %s", r.Namespace, r.Service, strings.Join(errs, "; "))
	}
	return validNames("ServiceReady", r.Namespace, r.Service)
}

func (r ServiceReady) slices() setKey {
	return setKey{gvr: endpointSliceGVR, namespace: r.Namespace, selector: discoveryv1.LabelServiceName + "=" + r.Service}
}

func (r ServiceReady) needs() needs { return needs{sets: []setKey{r.slices()}} }

func (r ServiceReady) eval(v *view, _ int) *Unmet {
	objs, u := v.members(r.Name(), r.slices(), "endpointslices")
	if u != nil {
		return u
	}
	want := max(r.MinReady, 1)
	if len(objs) == 0 {
		return &Unmet{Requirement: r.Name(), Reason: "no EndpointSlices"}
	}
	ready, all := map[string]bool{}, map[string]bool{}
	for _, o := range objs {
		var es discoveryv1.EndpointSlice
		if err := decode(o, &es); err != nil {
			return &Unmet{Requirement: r.Name(), Reason: err.Error(), Err: err}
		}
		for _, ep := range es.Endpoints {
			id := endpointID(ep)
			if id == "" {
				continue
			}
			all[id] = true
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				ready[id] = true
			}
		}
	}
	if len(ready) >= want {
		return nil
	}
	return &Unmet{Requirement: r.Name(), Reason: fmt.Sprintf("%s, want %d (%s in %s)",
		plural(len(ready), "ready endpoint", "ready endpoints"), want,
		plural(len(all), "endpoint", "endpoints"), plural(len(objs), "EndpointSlice", "EndpointSlices"))}
}

// endpointID identifies an endpoint across slices: the object it points
// to, or else its first address.
func endpointID(ep discoveryv1.Endpoint) string {
	if ref := ep.TargetRef; ref != nil && ref.Name != "" {
		return strings.Join([]string{ref.Kind, ref.Namespace, ref.Name}, "/")
	}
	if len(ep.Addresses) > 0 {
		return ep.Addresses[0]
	}
	return ""
}
