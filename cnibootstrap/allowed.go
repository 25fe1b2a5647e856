package cnibootstrap

import (
	"context"
	"slices"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

var sarGVR = authorizationv1.SchemeGroupVersion.WithResource("subjectaccessreviews")

// Allowed requires a permission to be effective for a user or a
// ServiceAccount, as the apiserver's authorizer answers a
// SubjectAccessReview — not merely that some role or binding exists. It
// is the answer to typha starting before its ClusterRole: the review says
// yes only once the role, the binding and the authorizer's cache all agree.
//
// The review is re-run whenever a ClusterRole or ClusterRoleBinding (and,
// for a namespaced request, a Role or RoleBinding in that namespace)
// changes, and on the backoff floor. Its Name is
// "<user> can <verb> <resource>.<group>"; when denied the report line reads
// "system:serviceaccount:kube-system:calico-typha cannot list clusterinformations.crd.projectcalico.org".
type Allowed struct {
	// User is the user name to review. Set exactly one of User and
	// ServiceAccount.
	User string
	// ServiceAccount is the ServiceAccount to review, as namespace and
	// name; it is reviewed as the apiserver authenticates its tokens:
	// user "system:serviceaccount:<namespace>:<name>" in the groups
	// "system:serviceaccounts" and "system:serviceaccounts:<namespace>".
	ServiceAccount types.NamespacedName
	// Groups are extra groups of the user. Every review also carries
	// "system:authenticated", as every authenticated request does.
	Groups []string

	// Verb is the verb to review, for example "list".
	Verb string
	// Group is the resource's API group, "" for the core group.
	Group string
	// Resource is the resource, for example "clusterinformations".
	Resource string
	// Subresource is an optional subresource, for example "status".
	Subresource string
	// ResourceName is an optional object name.
	ResourceName string
	// Namespace is the namespace of the request; "" reviews the request
	// across all namespaces (or on a cluster-scoped resource).
	Namespace string
}

func (r Allowed) user() string {
	if r.User != "" {
		return r.User
	}
	return "system:serviceaccount:" + r.ServiceAccount.Namespace + ":" + r.ServiceAccount.Name
}

func (r Allowed) groups() []string {
	var gs []string
	if r.User == "" {
		gs = append(gs, "system:serviceaccounts", "system:serviceaccounts:"+r.ServiceAccount.Namespace)
	}
	gs = append(gs, r.Groups...)
	if !slices.Contains(gs, "system:authenticated") {
		gs = append(gs, "system:authenticated")
	}
	return gs
}

// action is "<verb> <resource>[/<subresource>].<group>[ named <name>][ in namespace <ns>]".
func (r Allowed) action() string {
	res := r.Resource
	if r.Subresource != "" {
		res += "/" + r.Subresource
	}
	s := r.Verb + " " + schema.GroupResource{Group: r.Group, Resource: res}.String()
	if r.ResourceName != "" {
		s += " named " + r.ResourceName
	}
	if r.Namespace != "" {
		s += " in namespace " + r.Namespace
	}
	return s
}

// Name returns "<user> can <action>", for example
// "system:serviceaccount:kube-system:calico-typha can list clusterinformations.crd.projectcalico.org".
func (r Allowed) Name() string { return r.user() + " can " + r.action() }

func (r Allowed) validate() error {
	sa := r.ServiceAccount != (types.NamespacedName{})
	switch {
	case r.User == "" && !sa:
		return invalid("Allowed %s: set User or ServiceAccount", r.action())
	case r.User != "" && sa:
		return invalid("Allowed %s: set only one of User (%q) and ServiceAccount (%s)", r.action(), r.User, r.ServiceAccount)
	case sa && (r.ServiceAccount.Namespace == "" || r.ServiceAccount.Name == ""):
		return invalid("Allowed %s: ServiceAccount %q needs a namespace and a name", r.action(), r.ServiceAccount.String())
	case r.Verb == "":
		return invalid("Allowed for %s: empty Verb", r.user())
	case r.Resource == "":
		return invalid("Allowed for %s: empty Resource", r.user())
	case strings.Contains(r.Resource, "/"):
		return invalid("Allowed %s: put the subresource of %q in Subresource", r.Name(), r.Resource)
	}
	return nil
}

func (r Allowed) needs() needs {
	n := needs{
		rbac:  []rbacScope{{gvr: clusterRoleGVR}, {gvr: clusterRoleBindingGVR}},
		probe: &probeSpec{run: r.review, onRBAC: true},
	}
	if r.Namespace != "" {
		n.rbac = append(n.rbac, rbacScope{gvr: roleGVR, namespace: r.Namespace}, rbacScope{gvr: roleBindingGVR, namespace: r.Namespace})
	}
	return n
}

// review runs one SubjectAccessReview.
func (r Allowed) review(ctx context.Context, c Clients, _ *unstructured.Unstructured) probeResult {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   r.user(),
		Groups: r.groups(),
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: r.Namespace, Verb: r.Verb, Group: r.Group, Resource: r.Resource,
			Subresource: r.Subresource, Name: r.ResourceName,
		},
	}}
	res, err := c.Kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		err = classify(err, request{verb: "create", gvr: sarGVR})
		return probeResult{reason: err.Error(), err: err}
	}
	if res.Status.Allowed {
		return probeResult{ok: true}
	}
	reason := "cannot " + r.action()
	if res.Status.EvaluationError != "" {
		reason += " (evaluation error: " + res.Status.EvaluationError + ")"
	}
	return probeResult{reason: reason}
}

func (r Allowed) eval(v *view, self int) *Unmet {
	res, u := v.probe(r.Name(), self)
	switch {
	case u != nil:
	case res.ok:
		return nil
	case res.err != nil:
		u = &Unmet{Requirement: r.Name(), Reason: res.reason, Err: res.err}
	default:
		u = &Unmet{Requirement: r.Name(), Reason: res.reason, line: r.user() + " " + res.reason}
	}
	// Without its RBAC watches the review is re-run on the floor only:
	// say so, naming the permission the waiter lacks.
	if err := v.rbacErr(r.needs().rbac); err != nil {
		note := " (RBAC changes not watched: " + err.Error() + ")"
		u.Reason += note
		if u.line != "" {
			u.line += note
		}
		if u.Err == nil {
			u.Err = err
		}
	}
	return u
}
