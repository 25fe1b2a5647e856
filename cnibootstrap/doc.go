// Package cnibootstrap waits until the cluster objects a CNI plugin (or any
// add-on) needs are really usable: CRDs Established, named objects present
// and ready, ClusterRoles present with the rules required, and a
// ServiceAccount's permissions effective — and until the add-ons it
// depends on are rolled out and healthy: Deployments, DaemonSets and
// StatefulSets rolled out with no old pod left, install Jobs complete (or
// failed, said at once), Services with ready endpoints, admission webhooks
// answering, any object ready by kstatus. One waiter, one report, so a
// distribution can order add-on installs and upgrades ("let one add-on
// wait for another", rke2 #960) the way it orders a CNI's start.
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
// The second half is the RKE2 v1.31.4 → v1.31.5 ingress-nginx upgrade
// (rke2 #7652): the controller was replaced while its default backend was
// not ready, old and new controllers coexisted, and the trigger — a chart
// that failed to render — made the helm-install Job crash-loop while
// everything that waited on it waited for its timeout. The fix is
// ordering, and each step is a requirement here: RolledOut (the old
// controller fully gone, not just the new one counted), ServiceReady (the
// default backend answers), WebhookServing (the admission webhook answers a
// dry-run, not merely exists with a caBundle), JobComplete (the install
// Job done, or failing reported as it happens and failed ended at once).
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
// For an add-on upgrade, the same waiter orders the steps:
//
//	backend := []cnibootstrap.Requirement{
//		cnibootstrap.RolledOut{Kind: cnibootstrap.Deployment, Namespace: "kube-system", Workload: "default-backend"},
//		cnibootstrap.ServiceReady{Namespace: "kube-system", Service: "default-backend"},
//	}
//	controller := []cnibootstrap.Requirement{
//		cnibootstrap.JobComplete{Namespace: "kube-system", Job: "helm-install-rke2-ingress-nginx", FailAfter: 3},
//		cnibootstrap.RolledOut{Kind: cnibootstrap.DaemonSet, Namespace: "kube-system", Workload: "rke2-ingress-nginx-controller"},
//		cnibootstrap.WebhookServing{Kind: cnibootstrap.ValidatingWebhook, Configuration: "rke2-ingress-nginx-admission",
//			ProbeGVR: ingresses, Probe: probeIngress},
//	}
//
// # Final failures
//
// Some states can never turn into the requirement holding; Wait then
// returns at once, not at its deadline, an *UnmetError whose Err is a
// *FailedError naming the object (errors.As), which also wraps ErrFailed
// (errors.Is). They are: a Job with the Failed or FailureTarget condition,
// or with JobComplete.FailAfter failures; a Deployment whose Progressing
// condition says ProgressDeadlineExceeded; an object kstatus computes as
// Failed (ObjectReady). Everything else waits: a DaemonSet or StatefulSet
// has no deadline; endpoints and webhooks may start answering at any
// time; and a CRD whose names are not accepted is not final either — its
// names are accepted once the CRD that holds them is deleted, which the
// apiserver does by itself (CRDEstablished reports the conflict while it
// lasts). Check reports a final failure as the *FailedError in its
// requirement's Unmet entry.
//
// New builds a reusable Waiter whose Check evaluates everything once, for
// diagnostics. Bad input (nil clients or contexts, typed nils included;
// empty or malformed names, checked by apimachinery's rules; a zero or
// malformed GroupVersionResource; a FieldEquals that could never hold) is
// an error wrapping ErrInvalidInput from New, Wait or Check, never a panic.
//
// # How it waits
//
// Wait reacts to events, it does not poll what can be watched. Every
// object a requirement names is followed with one list and one watch
// narrowed by a metadata.name field selector, every set of objects (a
// workload's or a Job's pods, a Deployment's ReplicaSets, a DaemonSet's
// ControllerRevisions, a Service's EndpointSlices) with one list and one
// watch narrowed by a label selector (the workload's own spec.selector,
// restarted if the workload is replaced by one with another; or
// kubernetes.io/service-name), and every event re-evaluates all the
// requirements. The webhook dry-run of WebhookServing cannot be watched:
// it is re-run when the webhook configuration changes and, while it
// fails, on the backoff floor. An object whose resource is not served yet (its
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
// *ForbiddenError naming the verb, resource and group the waiter lacks; a
// request the client library cannot send at all (an invalid port or
// scheme in the clients' address) ends them at once with an error
// wrapping ErrInvalidInput. Open watches do not see a credential revoked after they started, so
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
// The credentials in Clients need these rules. Every read of a named
// object is a list and a watch with a metadata.name field selector, so the
// rules may be narrowed with resourceNames (sets of objects read by label,
// and the RBAC kinds Allowed watches, cannot be); the waiter never uses
// get on a resource.
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
//   - RolledOut{Kind: k, Namespace: n, Workload: w}: in n, list, watch on
//     the workload's resource (deployments, daemonsets or statefulsets,
//     group apps), resourceNames [w]; list, watch on pods (core group);
//     for a Deployment, list, watch on replicasets (apps); for a
//     DaemonSet, list, watch on controllerrevisions (apps). The pods,
//     ReplicaSets and ControllerRevisions are read with a label selector,
//     which resourceNames cannot narrow: a Role in n is the narrowest.
//   - JobComplete{Namespace: n, Job: j}: in n, list, watch on jobs (group
//     batch), resourceNames [j]; list, watch on pods.
//   - ServiceReady{Namespace: n}: in n, list, watch on endpointslices
//     (group discovery.k8s.io). The Service itself is not read.
//   - WebhookServing{Kind: k, Configuration: c, ProbeGVR: g}: list, watch
//     on validatingwebhookconfigurations or mutatingwebhookconfigurations
//     (group admissionregistration.k8s.io), resourceNames [c] (a
//     ClusterRole: they are cluster-scoped); create on g's resource in g's
//     group, in the probe's namespace (a dry-run: nothing is stored; RBAC
//     cannot narrow create by name).
//   - ObjectReady: as ObjectExists.
//   - Always: get on the non-resource URL /version, for the credential
//     check, which the default system:public-info-viewer ClusterRole
//     grants everyone (a 403 there is harmless: only a 401 counts).
//
// For the ingress-nginx upgrade above (in kube-system), a Role:
//
//	rules:
//	- apiGroups: [apps]
//	  resources: [deployments]
//	  resourceNames: [default-backend]
//	  verbs: [list, watch]
//	- apiGroups: [apps]
//	  resources: [daemonsets]
//	  resourceNames: [rke2-ingress-nginx-controller]
//	  verbs: [list, watch]
//	- apiGroups: [apps]
//	  resources: [replicasets, controllerrevisions]
//	  verbs: [list, watch]
//	- apiGroups: [batch]
//	  resources: [jobs]
//	  resourceNames: [helm-install-rke2-ingress-nginx]
//	  verbs: [list, watch]
//	- apiGroups: [""]
//	  resources: [pods]
//	  verbs: [list, watch]
//	- apiGroups: [discovery.k8s.io]
//	  resources: [endpointslices]
//	  verbs: [list, watch]
//	- apiGroups: [networking.k8s.io]
//	  resources: [ingresses]
//	  verbs: [create]
//
// and a ClusterRole with list, watch on validatingwebhookconfigurations,
// resourceNames [rke2-ingress-nginx-admission].
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
// ObjectReady judges objects with sigs.k8s.io/cli-utils/pkg/kstatus/status
// (the rules Helm 4 and Flux wait with) rather than re-deriving them; that
// package imports only k8s.io/apimachinery and k8s.io/api/core/v1.
package cnibootstrap
