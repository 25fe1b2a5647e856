package cnibootstrap

import (
	"strings"

	"k8s.io/apimachinery/pkg/api/validation/path"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
)

// This file checks the names requirements carry, by apimachinery's rules:
// the waiter puts them in URLs, field and label selectors and reviews, so
// a name the apiserver could never hold would only wait for the deadline.

// validNames checks a namespace and an object name of a kind whose names
// are DNS-1123 subdomains (workloads, Jobs, Services).
func validNames(what, namespace, name string) error {
	if err := validNamespace(what+" "+namespace+"/"+name, namespace); err != nil {
		return err
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return invalid("%s %s/%s: malformed name: %s", what, namespace, name, strings.Join(errs, "; "))
	}
	return nil
}

// validNamespace checks a namespace ("" is not one): a DNS-1123 label.
func validNamespace(what, namespace string) error {
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return invalid("%s: malformed namespace %q: %s", what, namespace, strings.Join(errs, "; "))
	}
	return nil
}

// validObjectName checks the name of an object of any resource by the rule
// every resource's names follow (a path segment: no "/" or "%", not "."
// or ".."); a resource may be stricter (most want DNS-1123 subdomains;
// RBAC objects allow "system:..." names), so only that is enforced.
func validObjectName(what, field, name string) error {
	if name == "" {
		return invalid("%s: empty %s name", what, field)
	}
	if errs := path.IsValidPathSegmentName(name); len(errs) > 0 {
		return invalid("%s: malformed %s name %q: %s", what, field, name, strings.Join(errs, "; "))
	}
	return nil
}

// validGVR checks a resource to read or create: a Version and a Resource
// (not a subresource) are required; the group is "" (the core group) or a
// DNS-1123 subdomain, the version and the resource DNS-1123 labels (as
// every built-in and custom resource's are: a CRD's plural and versions
// are DNS-1035 labels).
func validGVR(what, field string, gvr schema.GroupVersionResource) error {
	switch {
	case gvr.Resource == "" || gvr.Version == "":
		return invalid("%s: %s needs a Version and a Resource, got %q", what, field, gvr.String())
	case strings.Contains(gvr.Resource, "/"):
		return invalid("%s: %s.Resource %q must not name a subresource", what, field, gvr.Resource)
	}
	if gvr.Group != "" {
		if errs := validation.IsDNS1123Subdomain(gvr.Group); len(errs) > 0 {
			return invalid("%s: malformed %s.Group %q: %s", what, field, gvr.Group, strings.Join(errs, "; "))
		}
	}
	if errs := validation.IsDNS1123Label(gvr.Version); len(errs) > 0 {
		return invalid("%s: malformed %s.Version %q: %s", what, field, gvr.Version, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(gvr.Resource); len(errs) > 0 {
		return invalid("%s: malformed %s.Resource %q: %s", what, field, gvr.Resource, strings.Join(errs, "; "))
	}
	return nil
}

// validServiceAccount checks a ServiceAccount's namespace and name (a
// DNS-1123 subdomain).
func validServiceAccount(what, namespace, name string) error {
	if err := validNamespace(what, namespace); err != nil {
		return err
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return invalid("%s: malformed ServiceAccount name %q: %s", what, name, strings.Join(errs, "; "))
	}
	return nil
}
