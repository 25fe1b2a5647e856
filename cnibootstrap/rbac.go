package cnibootstrap

import (
	"fmt"
	"slices"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	clusterRoleGVR        = rbacv1.SchemeGroupVersion.WithResource("clusterroles")
	clusterRoleBindingGVR = rbacv1.SchemeGroupVersion.WithResource("clusterrolebindings")
	roleGVR               = rbacv1.SchemeGroupVersion.WithResource("roles")
	roleBindingGVR        = rbacv1.SchemeGroupVersion.WithResource("rolebindings")
)

// ClusterRoleExists requires a ClusterRole to exist and its rules to cover
// Rules: every verb on every resource (and resource name) of every group
// Rules lists, and every verb on every non-resource URL, granted by some
// rule of the role, wildcards included. Its Name is "clusterrole <Role>";
// reasons read like "not found" or
// "does not grant watch clusterinformations.crd.projectcalico.org".
//
// A role that exists is not proof that anyone may act: pair it with
// Allowed for the ServiceAccount that needs it.
type ClusterRoleExists struct {
	// Role is the ClusterRole's name, a valid path segment (as RBAC names
	// are: "system:..." is fine, "/" is not).
	Role string
	// Rules, when set, must be covered by the role's rules. Each rule
	// needs Verbs, and either APIGroups with Resources or NonResourceURLs.
	Rules []rbacv1.PolicyRule
}

// Name returns "clusterrole <Role>".
func (r ClusterRoleExists) Name() string { return "clusterrole " + r.Role }

func (r ClusterRoleExists) validate() error {
	if err := validObjectName("ClusterRoleExists", "Role", r.Role); err != nil {
		return err
	}
	for i, rule := range r.Rules {
		switch {
		case len(rule.Verbs) == 0:
			return invalid("ClusterRoleExists %q: rule %d has no Verbs", r.Role, i)
		case len(rule.Resources) == 0 && len(rule.NonResourceURLs) == 0:
			return invalid("ClusterRoleExists %q: rule %d has neither Resources nor NonResourceURLs", r.Role, i)
		case len(rule.Resources) > 0 && len(rule.APIGroups) == 0:
			return invalid("ClusterRoleExists %q: rule %d has Resources but no APIGroups (use \"\" for the core group)", r.Role, i)
		case len(rule.NonResourceURLs) > 0 && (len(rule.Resources) > 0 || len(rule.ResourceNames) > 0):
			return invalid("ClusterRoleExists %q: rule %d mixes NonResourceURLs with Resources", r.Role, i)
		}
	}
	return nil
}

func (r ClusterRoleExists) key() objKey { return objKey{gvr: clusterRoleGVR, name: r.Role} }

func (r ClusterRoleExists) needs() needs { return needs{objects: []objKey{r.key()}} }

func (r ClusterRoleExists) eval(v *view, _ int) *Unmet {
	obj, u := v.object(r.Name(), r.key())
	if u != nil {
		return u
	}
	var role rbacv1.ClusterRole
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &role); err != nil {
		return &Unmet{Requirement: r.Name(), Reason: "cannot decode: " + err.Error(), Err: err}
	}
	if missing := uncovered(role.Rules, r.Rules); len(missing) > 0 {
		return &Unmet{Requirement: r.Name(), Reason: "does not grant " + strings.Join(missing, ", ")}
	}
	return nil
}

// uncovered returns, as "verb resource.group" strings, every permission in
// want that no rule in have grants.
func uncovered(have, want []rbacv1.PolicyRule) []string {
	var missing []string
	for _, w := range want {
		for _, verb := range w.Verbs {
			for _, url := range w.NonResourceURLs {
				if !slices.ContainsFunc(have, func(h rbacv1.PolicyRule) bool {
					return matches(h.Verbs, verb) && slices.ContainsFunc(h.NonResourceURLs, func(p string) bool { return urlMatches(p, url) })
				}) {
					missing = append(missing, verb+" "+url)
				}
			}
			for _, group := range w.APIGroups {
				for _, res := range w.Resources {
					names := w.ResourceNames
					if len(names) == 0 {
						names = []string{""}
					}
					for _, name := range names {
						if !slices.ContainsFunc(have, func(h rbacv1.PolicyRule) bool { return grants(h, verb, group, res, name) }) {
							s := verb + " " + schema.GroupResource{Group: group, Resource: res}.String()
							if name != "" {
								s += " named " + name
							}
							missing = append(missing, s)
						}
					}
				}
			}
		}
	}
	return missing
}

// grants reports whether rule h allows verb on resource res (possibly
// "res/subresource") of group, restricted to name when name is not "".
func grants(h rbacv1.PolicyRule, verb, group, res, name string) bool {
	if !matches(h.Verbs, verb) || !matches(h.APIGroups, group) {
		return false
	}
	if !slices.ContainsFunc(h.Resources, func(p string) bool { return resourceMatches(p, res) }) {
		return false
	}
	return len(h.ResourceNames) == 0 || (name != "" && slices.Contains(h.ResourceNames, name))
}

func matches(set []string, v string) bool {
	return slices.Contains(set, rbacv1.VerbAll) || slices.Contains(set, v)
}

// resourceMatches follows the RBAC authorizer: "*" matches everything and
// "*/sub" matches subresource sub of any resource.
func resourceMatches(pattern, res string) bool {
	if pattern == rbacv1.ResourceAll || pattern == res {
		return true
	}
	if sub, ok := strings.CutPrefix(pattern, "*/"); ok {
		_, rsub, has := strings.Cut(res, "/")
		return has && rsub == sub
	}
	return false
}

// urlMatches follows the RBAC authorizer: a trailing "*" is a prefix match.
func urlMatches(pattern, url string) bool {
	if pattern == rbacv1.NonResourceAll || pattern == url {
		return true
	}
	prefix, ok := strings.CutSuffix(pattern, "*")
	return ok && strings.HasPrefix(url, prefix)
}

// ClusterRoleBindingExists requires a ClusterRoleBinding to exist and,
// when set, to bind ClusterRole Role and to have Subject among its
// subjects. Its Name is "clusterrolebinding <Binding>"; reasons read like
// "not found", "binds ClusterRole x, want calico-typha" or
// "has no subject ServiceAccount kube-system/calico-typha".
type ClusterRoleBindingExists struct {
	// Binding is the ClusterRoleBinding's name, a valid path segment.
	Binding string
	// Role, when set, is the ClusterRole the binding must refer to (a
	// valid path segment).
	Role string
	// Subject, when its Name is set, must be one of the binding's
	// subjects. Kind must be "User", "Group" or "ServiceAccount"; a
	// ServiceAccount needs its Namespace (a DNS-1123 label) and a name
	// that is a DNS-1123 subdomain. APIGroup is not compared.
	Subject rbacv1.Subject
}

// Name returns "clusterrolebinding <Binding>".
func (r ClusterRoleBindingExists) Name() string { return "clusterrolebinding " + r.Binding }

func (r ClusterRoleBindingExists) validate() error {
	if err := validObjectName("ClusterRoleBindingExists", "Binding", r.Binding); err != nil {
		return err
	}
	what := fmt.Sprintf("ClusterRoleBindingExists %q", r.Binding)
	if r.Role != "" {
		if err := validObjectName(what, "Role", r.Role); err != nil {
			return err
		}
	}
	s := r.Subject
	if s == (rbacv1.Subject{}) {
		return nil
	}
	switch {
	case s.Name == "":
		return invalid("ClusterRoleBindingExists %q: Subject has no Name", r.Binding)
	case s.Kind != rbacv1.UserKind && s.Kind != rbacv1.GroupKind && s.Kind != rbacv1.ServiceAccountKind:
		return invalid("ClusterRoleBindingExists %q: Subject Kind %q is not User, Group or ServiceAccount", r.Binding, s.Kind)
	case s.Kind == rbacv1.ServiceAccountKind && s.Namespace == "":
		return invalid("ClusterRoleBindingExists %q: ServiceAccount subject %q has no Namespace", r.Binding, s.Name)
	case s.Kind == rbacv1.ServiceAccountKind:
		return validServiceAccount(what+" Subject", s.Namespace, s.Name)
	}
	return nil
}

func (r ClusterRoleBindingExists) key() objKey {
	return objKey{gvr: clusterRoleBindingGVR, name: r.Binding}
}

func (r ClusterRoleBindingExists) needs() needs { return needs{objects: []objKey{r.key()}} }

func (r ClusterRoleBindingExists) eval(v *view, _ int) *Unmet {
	obj, u := v.object(r.Name(), r.key())
	if u != nil {
		return u
	}
	var b rbacv1.ClusterRoleBinding
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &b); err != nil {
		return &Unmet{Requirement: r.Name(), Reason: "cannot decode: " + err.Error(), Err: err}
	}
	if r.Role != "" && (b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != r.Role) {
		return &Unmet{Requirement: r.Name(), Reason: fmt.Sprintf("binds %s %s, want ClusterRole %s", b.RoleRef.Kind, b.RoleRef.Name, r.Role)}
	}
	if r.Subject.Name != "" && !slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool {
		return s.Kind == r.Subject.Kind && s.Name == r.Subject.Name && s.Namespace == r.Subject.Namespace
	}) {
		return &Unmet{Requirement: r.Name(), Reason: "has no subject " + subjectString(r.Subject)}
	}
	return nil
}

func subjectString(s rbacv1.Subject) string {
	if s.Kind == rbacv1.ServiceAccountKind {
		return s.Kind + " " + s.Namespace + "/" + s.Name
	}
	return s.Kind + " " + s.Name
}
