package cnibootstrap

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

var sarGVR = authorizationv1.SchemeGroupVersion.WithResource("subjectaccessreviews")

// Allowed requires permissions to be effective for a user or a
// ServiceAccount, as the apiserver's authorizer answers
// SubjectAccessReviews — not merely that some role or binding exists. It
// is the answer to typha starting before its ClusterRole: a review says
// yes only once the role, the binding and the authorizer's cache all
// agree.
//
// Name one permission with Verb, Group, Resource (and optionally
// Subresource and ResourceName), or several with Rules — typically the
// rules of the role the account is meant to have, such as calico-typha's
// ClusterRole: every verb on every resource (and resource name) of every
// group, and every verb on every non-resource URL, is one review. The
// requirement holds when all of them are allowed; when some are not, the
// report names each one denied.
//
// The reviews are re-run whenever a ClusterRole or ClusterRoleBinding
// (and, with a Namespace, a Role or RoleBinding in that namespace)
// changes — all of them, since a change can revoke as well as grant — and
// on the backoff floor while some are denied, then only those denied.
// Its Name is "<user> can <permissions>"; when denied the report line
// reads "system:serviceaccount:kube-system:calico-typha cannot list
// clusterinformations.crd.projectcalico.org, watch
// clusterinformations.crd.projectcalico.org".
type Allowed struct {
	// User is the user name to review. Set exactly one of User and
	// ServiceAccount.
	User string
	// ServiceAccount is the ServiceAccount to review, as namespace (a
	// DNS-1123 label) and name (a DNS-1123 subdomain); it is reviewed as the apiserver authenticates its tokens:
	// user "system:serviceaccount:<namespace>:<name>" in the groups
	// "system:serviceaccounts" and "system:serviceaccounts:<namespace>".
	ServiceAccount types.NamespacedName
	// Groups are extra groups of the user. Every review also carries
	// "system:authenticated", as every authenticated request does.
	Groups []string

	// Verb is the verb of the single permission to review, for example
	// "list". Set Verb and Resource, or Rules, not both.
	Verb string
	// Group is the single permission's API group, "" for the core group.
	Group string
	// Resource is the single permission's resource, for example
	// "clusterinformations".
	Resource string
	// Subresource is an optional subresource, for example "status".
	Subresource string
	// ResourceName is an optional object name.
	ResourceName string

	// Rules name several permissions at once, as RBAC rules do: each rule
	// needs Verbs, and either APIGroups with Resources (a subresource
	// written "pods/status", as in a role; ResourceNames narrow it) or
	// NonResourceURLs. Every combination is reviewed.
	Rules []rbacv1.PolicyRule

	// Namespace is the namespace of the requests (a DNS-1123 label); ""
	// reviews them across all namespaces (or on cluster-scoped
	// resources). Non-resource URLs have no namespace: Rules with
	// NonResourceURLs need Namespace "".
	Namespace string
}

// permission is one verb on one resource (or non-resource URL): one
// SubjectAccessReview.
type permission struct {
	verb, group, resource, subresource, name string
	url                                      string // a non-resource URL
}

// String is "<verb> <resource>[/<subresource>].<group>[ named <name>]" or
// "<verb> <url>".
func (p permission) String() string {
	if p.url != "" {
		return p.verb + " " + p.url
	}
	res := p.resource
	if p.subresource != "" {
		res += "/" + p.subresource
	}
	s := p.verb + " " + schema.GroupResource{Group: p.group, Resource: res}.String()
	if p.name != "" {
		s += " named " + p.name
	}
	return s
}

// permissions lists what r reviews, in order, without duplicates.
func (r Allowed) permissions() []permission {
	if len(r.Rules) == 0 {
		return []permission{{verb: r.Verb, group: r.Group, resource: r.Resource, subresource: r.Subresource, name: r.ResourceName}}
	}
	var ps []permission
	seen := map[permission]bool{}
	add := func(p permission) {
		if !seen[p] {
			seen[p] = true
			ps = append(ps, p)
		}
	}
	for _, rule := range r.Rules {
		for _, verb := range rule.Verbs {
			for _, url := range rule.NonResourceURLs {
				add(permission{verb: verb, url: url})
			}
			for _, group := range rule.APIGroups {
				for _, res := range rule.Resources {
					res, sub, _ := strings.Cut(res, "/")
					names := rule.ResourceNames
					if len(names) == 0 {
						names = []string{""}
					}
					for _, name := range names {
						add(permission{verb: verb, group: group, resource: res, subresource: sub, name: name})
					}
				}
			}
		}
	}
	return ps
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

// inNamespace is " in namespace <ns>", or "" without a Namespace.
func (r Allowed) inNamespace() string {
	if r.Namespace == "" {
		return ""
	}
	return " in namespace " + r.Namespace
}

// action says what is reviewed: for the single form
// "<verb> <resource>[/<subresource>].<group>[ named <name>][ in namespace <ns>]";
// with Rules, one "<verbs> <resources>[ named <names>]" per rule, joined
// by "; " (lists comma-separated), then the namespace.
func (r Allowed) action() string {
	if len(r.Rules) == 0 {
		return permission{verb: r.Verb, group: r.Group, resource: r.Resource, subresource: r.Subresource, name: r.ResourceName}.String() + r.inNamespace()
	}
	parts := make([]string, len(r.Rules))
	for i, rule := range r.Rules {
		var what []string
		what = append(what, rule.NonResourceURLs...)
		for _, g := range rule.APIGroups {
			for _, res := range rule.Resources {
				what = append(what, schema.GroupResource{Group: g, Resource: res}.String())
			}
		}
		parts[i] = strings.Join(rule.Verbs, ",") + " " + strings.Join(what, ",")
		if len(rule.ResourceNames) > 0 {
			parts[i] += " named " + strings.Join(rule.ResourceNames, ",")
		}
	}
	return strings.Join(parts, "; ") + r.inNamespace()
}

// Name returns "<user> can <permissions>", for example
// "system:serviceaccount:kube-system:calico-typha can list clusterinformations.crd.projectcalico.org"
// for the single form, or
// "system:serviceaccount:kube-system:calico-typha can get,list,watch clusterinformations.crd.projectcalico.org,felixconfigurations.crd.projectcalico.org; get /version"
// with Rules (one part per rule).
func (r Allowed) Name() string { return r.user() + " can " + r.action() }

func (r Allowed) validate() error {
	sa := r.ServiceAccount != (types.NamespacedName{})
	single := r.Verb != "" || r.Resource != "" || r.Group != "" || r.Subresource != "" || r.ResourceName != ""
	switch {
	case r.User == "" && !sa:
		return invalid("Allowed %s: set User or ServiceAccount", r.action())
	case r.User != "" && sa:
		return invalid("Allowed %s: set only one of User (%q) and ServiceAccount (%s)", r.action(), r.User, r.ServiceAccount)
	case sa && (r.ServiceAccount.Namespace == "" || r.ServiceAccount.Name == ""):
		return invalid("Allowed %s: ServiceAccount %q needs a namespace and a name", r.action(), r.ServiceAccount.String())
	}
	if sa {
		if err := validServiceAccount("Allowed for ServiceAccount "+r.ServiceAccount.String(), r.ServiceAccount.Namespace, r.ServiceAccount.Name); err != nil {
			return err
		}
	}
	if r.Namespace != "" {
		if err := validNamespace("Allowed for "+r.user(), r.Namespace); err != nil {
			return err
		}
	}
	switch {
	case single && len(r.Rules) > 0:
		return invalid("Allowed for %s: set Verb, Group, Resource, Subresource and ResourceName (one permission) or Rules, not both", r.user())
	case len(r.Rules) > 0:
		return r.validateRules()
	case r.Verb == "":
		return invalid("Allowed for %s: empty Verb", r.user())
	case r.Resource == "":
		return invalid("Allowed for %s: empty Resource", r.user())
	case strings.Contains(r.Resource, "/"):
		return invalid("Allowed %s: put the subresource of %q in Subresource", r.Name(), r.Resource)
	}
	return nil
}

func (r Allowed) validateRules() error {
	for i, rule := range r.Rules {
		bad := func(format string, args ...any) error {
			return invalid("Allowed for %s: rule %d %s", r.user(), i, fmt.Sprintf(format, args...))
		}
		switch {
		case len(rule.Verbs) == 0:
			return bad("has no Verbs")
		case slices.Contains(rule.Verbs, ""):
			return bad("has an empty verb")
		case len(rule.Resources) == 0 && len(rule.NonResourceURLs) == 0:
			return bad("has neither Resources nor NonResourceURLs")
		case len(rule.Resources) > 0 && len(rule.APIGroups) == 0:
			return bad("has Resources but no APIGroups (use \"\" for the core group)")
		case len(rule.NonResourceURLs) > 0 && (len(rule.Resources) > 0 || len(rule.ResourceNames) > 0):
			return bad("mixes NonResourceURLs with Resources")
		case len(rule.NonResourceURLs) > 0 && r.Namespace != "":
			return bad("has NonResourceURLs, which have no namespace, but Namespace is %q", r.Namespace)
		case slices.Contains(rule.ResourceNames, ""):
			return bad("has an empty resource name")
		}
		for _, res := range rule.Resources {
			if res == "" || strings.Count(res, "/") > 1 || strings.HasPrefix(res, "/") || strings.HasSuffix(res, "/") {
				return bad("has a malformed resource %q (want <resource> or <resource>/<subresource>)", res)
			}
		}
		for _, url := range rule.NonResourceURLs {
			if !strings.HasPrefix(url, "/") && url != rbacv1.NonResourceAll {
				return bad("has a non-resource URL %q that does not start with /", url)
			}
		}
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

// reviewParallelism bounds the SubjectAccessReviews one requirement has in
// flight at once.
const reviewParallelism = 4

// review runs one SubjectAccessReview per permission (after a floor pause,
// only for those in.prev did not find granted) and says which are denied.
func (r Allowed) review(ctx context.Context, c Clients, in probeInput) probeResult {
	perms := r.permissions()
	granted := make([]bool, len(perms))
	if in.prev != nil && len(in.prev.granted) == len(perms) {
		copy(granted, in.prev.granted)
	}
	answers := make([]sarAnswer, len(perms))
	sem := make(chan struct{}, reviewParallelism)
	var wg sync.WaitGroup
	var panicked atomic.Pointer[PanicError]
	for i, p := range perms {
		if granted[i] {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			defer func() {
				if v := recover(); v != nil {
					panicked.CompareAndSwap(nil, newPanicError("a client in Clients", v))
				}
			}()
			answers[i] = r.reviewOne(ctx, c, p)
		})
	}
	wg.Wait()
	if pe := panicked.Load(); pe != nil {
		// A client panic ends the Wait (or Check): see isFatalProbe.
		return probeResult{reason: pe.Error(), err: pe}
	}
	var denied []string
	var firstErr error
	for i, a := range answers {
		switch {
		case granted[i]:
		case a.err != nil:
			if firstErr == nil || isFatal(a.err) {
				firstErr = a.err
			}
		case a.allowed:
			granted[i] = true
		default:
			d := perms[i].String()
			if a.evalErr != "" {
				d += " (evaluation error: " + a.evalErr + ")"
			}
			denied = append(denied, d)
		}
	}
	switch {
	case firstErr != nil:
		return probeResult{reason: firstErr.Error(), err: firstErr, granted: granted}
	case len(denied) > 0:
		return probeResult{reason: "cannot " + strings.Join(denied, ", ") + r.inNamespace(), granted: granted}
	}
	return probeResult{ok: true, granted: granted}
}

// sarAnswer is one review's answer.
type sarAnswer struct {
	allowed bool
	evalErr string
	err     error
}

func (r Allowed) reviewOne(ctx context.Context, c Clients, p permission) sarAnswer {
	spec := authorizationv1.SubjectAccessReviewSpec{User: r.user(), Groups: r.groups()}
	if p.url != "" {
		spec.NonResourceAttributes = &authorizationv1.NonResourceAttributes{Path: p.url, Verb: p.verb}
	} else {
		spec.ResourceAttributes = &authorizationv1.ResourceAttributes{
			Namespace: r.Namespace, Verb: p.verb, Group: p.group, Resource: p.resource,
			Subresource: p.subresource, Name: p.name,
		}
	}
	res, err := c.Kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		return sarAnswer{err: classify(err, request{verb: "create", gvr: sarGVR})}
	}
	return sarAnswer{allowed: res.Status.Allowed, evalErr: res.Status.EvaluationError}
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
	// Without its RBAC watches the reviews are re-run on the floor only:
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
