// Package cnibootstrap waits until the cluster objects a CNI plugin (or any
// add-on) needs are really usable: CRDs Established, named objects present
// and ready, ClusterRoles present with the rules required, and a
// ServiceAccount's permissions effective.
//
// # Why
//
// With Calico 3.29.2 in RKE2 (rke2 #7808), pods failed with
// "error getting ClusterInformation: ... clusterinformations.crd.projectcalico.org
// "default" not found", because only the first calico-node creates that
// object, and typha failed with Unauthorized/Forbidden because its
// ClusterRole was not there yet. The Tigera operator creates CRDs without
// waiting for them to be Established and polls discovery with a 1–30 s
// backoff. Two facts are easy to miss (DESIGN.md, incident 3): a CRD that
// exists is not yet usable — its Established condition says when it is —
// and a ClusterRole that exists is not proof that a ServiceAccount may act;
// a SubjectAccessReview is.
//
// # Use
//
// Requirements are values the caller combines; each has a Name that
// appears in reports:
//
//	reqs := []cnibootstrap.Requirement{
//		cnibootstrap.CRDEstablished{CRD: "clusterinformations.crd.projectcalico.org"},
//		cnibootstrap.ObjectExists{GVR: clusterInformations, Object: "default",
//			Condition: cnibootstrap.FieldEquals("spec.datastoreReady", true)},
//		cnibootstrap.ClusterRoleExists{Role: "calico-typha", Rules: typhaRules},
//		cnibootstrap.Allowed{ServiceAccount: types.NamespacedName{Namespace: "kube-system", Name: "calico-typha"},
//			Verb: "list", Group: "crd.projectcalico.org", Resource: "clusterinformations"},
//	}
//
// One Allowed can also name every permission of a role at once, with
// Rules (for typha, the rules of its ClusterRole); the report then names
// each permission still denied:
//
//	cnibootstrap.Allowed{ServiceAccount: typha, Rules: typhaClusterRole.Rules}
//	clients, err := cnibootstrap.NewClients(restConfig)
//	...
//	err = cnibootstrap.Wait(ctx, clients, reqs, cnibootstrap.WithProgress(report))
//
// Wait returns nil once every requirement holds at the same time. When ctx
// ends first, its *UnmetError lists every requirement not met with its
// reason:
//
//	cnibootstrap: 3 of 4 requirements not met (context deadline exceeded):
//	crd clusterinformations.crd.projectcalico.org: Established=False (Installing);
//	clusterrole calico-typha: not found;
//	system:serviceaccount:kube-system:calico-typha cannot list clusterinformations.crd.projectcalico.org
//
// New builds a reusable Waiter whose Check evaluates everything once, for
// diagnostics. Bad input (nil clients, empty names, a zero
// GroupVersionResource) is an error wrapping ErrInvalidInput from New,
// never a panic.
//
// # How it waits
//
// Wait reacts to events, it does not poll what can be watched. Every
// object a requirement names is followed with one list and one watch
// narrowed by a metadata.name field selector, and every event re-evaluates
// all the requirements. An object whose resource is not served yet (its
// CRD is missing or not established: the list answers 404) is reported as
// such while the waiter follows that CRD, narrowed the same way, and its
// watch starts the moment the CRD is established — no busy loop, and no
// wait for the next poll. SubjectAccessReviews cannot be watched: they are
// re-run whenever a ClusterRole or ClusterRoleBinding (and, for a
// namespaced request, a Role or RoleBinding in its namespace) changes, and
// otherwise on a backoff floor (exponential with jitter, capped; see
// WithBackoff) while the answer is no; a review answered before the latest
// RBAC change does not count until it is re-run. The same floor paces
// retries after failed requests, and retries of an object whose CRD does
// not exist at all (its resource might come from an aggregated API
// instead). While nothing changes the waiter's requests do not grow with
// the wait: one list and one watch per object and per RBAC kind, and one
// review per permission already granted; only denied reviews (only the
// denied permissions are asked again), objects without a CRD and the
// credential check (below) add the floor's few requests (exponential from
// 250 ms, then one per 30 s).
//
// Errors on the waiter's own requests are classified in one place: a 401
// ends Wait and Check at once with an error wrapping ErrUnauthorized (no
// prerequisite can fix a bad credential); a 403 does not (the missing rule
// is often part of the same bootstrap) but becomes the reason, a
// *ForbiddenError naming the verb, resource and group the waiter lacks.
// Open watches do not see a credential revoked after they started, so
// once per interval of the backoff floor the waiter sends a GET of
// /version to find out (with the default policy: seven in the first 32 s,
// then one per 30 s or so).
//
// Code the caller supplies — Conditions, the WithProgress function, the
// backoff factory and policies, the logger's sink, the clients — runs
// under recover; a panic is a *PanicError (see its doc), never a crash of
// the host process. Retry delays are never shorter than MinDelay.
//
// Every goroutine Wait starts has ended when it returns.
//
// # RBAC the waiter needs
//
// The credentials in Clients need these rules. Every read is a list and a
// watch with a metadata.name field selector, so the rules may be narrowed
// with resourceNames; the waiter never uses get.
//
//   - CRDEstablished{CRD: c}: list, watch on customresourcedefinitions
//     (group apiextensions.k8s.io), resourceNames [c]. With InDiscovery,
//     also get on the non-resource URLs /apis/<group>/<version>, which the
//     default system:discovery ClusterRole grants every authenticated user.
//   - ObjectExists{GVR: g, Namespace: n, Object: o}: list, watch on g's
//     resource in g's group, resourceNames [o] (a Role in n is enough for a
//     namespaced object; with an empty Namespace on a namespaced resource,
//     "any namespace", the list and watch span all namespaces, so a
//     ClusterRole is needed). While the resource is not served: list, watch on
//     customresourcedefinitions, resourceNames [<resource>.<group>];
//     without it the waiter retries the object on the backoff floor.
//   - ClusterRoleExists{Role: r}: list, watch on clusterroles (group
//     rbac.authorization.k8s.io), resourceNames [r].
//   - ClusterRoleBindingExists{Binding: b}: list, watch on
//     clusterrolebindings (group rbac.authorization.k8s.io), resourceNames [b].
//   - Allowed: create on subjectaccessreviews (group
//     authorization.k8s.io), one review per permission; list, watch on all
//     clusterroles and clusterrolebindings (any of them may grant the
//     permission); with a Namespace n, also list, watch on roles and
//     rolebindings in n. Without the watches the reviews are re-run on
//     the floor only, and the reason says so.
//   - Always: get on the non-resource URL /version, for the credential
//     check, which the default system:public-info-viewer ClusterRole
//     grants everyone (a 403 there is harmless: only a 401 counts).
//
// For the Calico case above that is, as a ClusterRole:
//
//	rules:
//	- apiGroups: [apiextensions.k8s.io]
//	  resources: [customresourcedefinitions]
//	  resourceNames: [clusterinformations.crd.projectcalico.org]
//	  verbs: [list, watch]
//	- apiGroups: [crd.projectcalico.org]
//	  resources: [clusterinformations]
//	  resourceNames: [default]
//	  verbs: [list, watch]
//	- apiGroups: [rbac.authorization.k8s.io]
//	  resources: [clusterroles, clusterrolebindings]
//	  verbs: [list, watch]
//	- apiGroups: [authorization.k8s.io]
//	  resources: [subjectaccessreviews]
//	  verbs: [create]
//
// CRDs are read through the dynamic client as unstructured objects, so
// users of this package do not inherit the apiextensions-apiserver module.
package cnibootstrap
