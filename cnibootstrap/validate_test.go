package cnibootstrap_test

import (
	"context"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubeboot/kubeboot/cnibootstrap"
)

// offlineClients are clients for an address nothing listens on: New
// makes no request, so they are enough to test its checks.
func offlineClients(t *testing.T) cnibootstrap.Clients {
	t.Helper()
	c, err := cnibootstrap.NewClients(&rest.Config{Host: "https://127.0.0.1:1"})
	require.NoError(t, err)
	return c
}

func TestNewRejectsBadInput(t *testing.T) {
	good := offlineClients(t)
	crd := cnibootstrap.CRDEstablished{CRD: clusterInformationCRD}
	rule := func(r rbacv1.PolicyRule) []rbacv1.PolicyRule { return []rbacv1.PolicyRule{r} }
	for _, tc := range []struct {
		name    string
		clients cnibootstrap.Clients
		reqs    []cnibootstrap.Requirement
		opts    []cnibootstrap.Option
		want    string
	}{
		{name: "nil dynamic", clients: cnibootstrap.Clients{Kube: good.Kube}, want: "Clients.Dynamic is nil"},
		{name: "nil kube", clients: cnibootstrap.Clients{Dynamic: good.Dynamic}, want: "Clients.Kube is nil"},
		{name: "typed nil dynamic", clients: cnibootstrap.Clients{Dynamic: (*dynamic.DynamicClient)(nil), Kube: good.Kube}, want: "Clients.Dynamic is nil"},
		{name: "typed nil kube", clients: cnibootstrap.Clients{Dynamic: good.Dynamic, Kube: (*kubernetes.Clientset)(nil)}, want: "Clients.Kube is nil"},
		{name: "nil requirement", reqs: []cnibootstrap.Requirement{crd, nil}, want: "requirement 1 is nil"},
		{name: "typed nil requirement", reqs: []cnibootstrap.Requirement{(*cnibootstrap.CRDEstablished)(nil)}, want: "requirement 0 is nil"},
		{name: "duplicate", reqs: []cnibootstrap.Requirement{crd, crd}, want: `requirements 0 and 1 are both "crd clusterinformations.crd.projectcalico.org"`},
		{name: "crd without name", reqs: []cnibootstrap.Requirement{cnibootstrap.CRDEstablished{}}, want: "CRDEstablished: empty CRD name"},
		{name: "crd name without group", reqs: []cnibootstrap.Requirement{cnibootstrap.CRDEstablished{CRD: "clusterinformations"}}, want: "must be <plural>.<group>"},
		{name: "crd name malformed", reqs: []cnibootstrap.Requirement{cnibootstrap.CRDEstablished{CRD: "Cluster_Informations.x"}}, want: "must be <plural>.<group>"},
		{name: "object zero gvr", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectExists{Object: "default"}}, want: "GVR needs a Version and a Resource"},
		{name: "object without resource", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: schema.GroupVersionResource{Version: "v1"}, Object: "x"}}, want: "GVR needs a Version and a Resource"},
		{name: "object subresource", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: schema.GroupVersionResource{Version: "v1", Resource: "pods/status"}, Object: "x"}}, want: "must not name a subresource"},
		{name: "object without name", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: clusterInformationGVR}}, want: "empty Object name"},
		{name: "field condition empty path", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: clusterInformationGVR, Object: "default", Condition: cnibootstrap.FieldEquals("", true)}}, want: `malformed path ""`},
		{name: "field condition bad path", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: clusterInformationGVR, Object: "default", Condition: cnibootstrap.FieldEquals("spec..x", true)}}, want: `malformed path "spec..x"`},
		{name: "field condition bad want", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: clusterInformationGVR, Object: "default", Condition: cnibootstrap.FieldEquals("spec.x", []int{1})}}, want: "want must be a bool, string or number, not []int"},
		{name: "field condition NaN", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: clusterInformationGVR, Object: "default", Condition: cnibootstrap.FieldEquals("spec.x", math.NaN())}}, want: `FieldEquals("spec.x"): want NaN can never be equal`},
		{name: "role without name", reqs: []cnibootstrap.Requirement{cnibootstrap.ClusterRoleExists{}}, want: "empty Role name"},
		{name: "rule without verbs", reqs: []cnibootstrap.Requirement{cnibootstrap.ClusterRoleExists{Role: "r", Rules: rule(rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}})}}, want: "rule 0 has no Verbs"},
		{name: "rule without groups", reqs: []cnibootstrap.Requirement{cnibootstrap.ClusterRoleExists{Role: "r", Rules: rule(rbacv1.PolicyRule{Verbs: []string{"get"}, Resources: []string{"pods"}})}}, want: "has Resources but no APIGroups"},
		{name: "rule without resources", reqs: []cnibootstrap.Requirement{cnibootstrap.ClusterRoleExists{Role: "r", Rules: rule(rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{""}})}}, want: "neither Resources nor NonResourceURLs"},
		{name: "rule mixing urls and resources", reqs: []cnibootstrap.Requirement{cnibootstrap.ClusterRoleExists{Role: "r", Rules: rule(rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"pods"}, NonResourceURLs: []string{"/healthz"}})}}, want: "mixes NonResourceURLs with Resources"},
		{name: "binding without name", reqs: []cnibootstrap.Requirement{cnibootstrap.ClusterRoleBindingExists{Role: "r"}}, want: "empty Binding name"},
		{name: "binding subject kind", reqs: []cnibootstrap.Requirement{cnibootstrap.ClusterRoleBindingExists{Binding: "b", Subject: rbacv1.Subject{Kind: "Robot", Name: "x"}}}, want: `Subject Kind "Robot"`},
		{name: "binding subject without name", reqs: []cnibootstrap.Requirement{cnibootstrap.ClusterRoleBindingExists{Binding: "b", Subject: rbacv1.Subject{Kind: "User"}}}, want: "Subject has no Name"},
		{name: "binding sa without namespace", reqs: []cnibootstrap.Requirement{cnibootstrap.ClusterRoleBindingExists{Binding: "b", Subject: rbacv1.Subject{Kind: "ServiceAccount", Name: "x"}}}, want: `ServiceAccount subject "x" has no Namespace`},
		{name: "allowed without subject", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{Verb: "list", Resource: "pods"}}, want: "Allowed list pods: set User or ServiceAccount"},
		{name: "allowed with both subjects", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{User: "u", ServiceAccount: typhaSA, Verb: "list", Resource: "pods"}}, want: "set only one of User"},
		{name: "allowed sa without namespace", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{ServiceAccount: types.NamespacedName{Name: "x"}, Verb: "list", Resource: "pods"}}, want: "needs a namespace and a name"},
		{name: "allowed without verb", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{User: "u", Resource: "pods"}}, want: "Allowed for u: empty Verb"},
		{name: "allowed without resource", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{User: "u", Verb: "get"}}, want: "Allowed for u: empty Resource"},
		{name: "allowed subresource in resource", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{User: "u", Verb: "get", Resource: "pods/log"}}, want: "put the subresource"},
		{name: "allowed single form and rules", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{User: "u", Verb: "get", Resource: "pods", Rules: rule(rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"pods"}})}}, want: "or Rules, not both"},
		{name: "allowed rule without verbs", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{User: "u", Rules: rule(rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}})}}, want: "Allowed for u: rule 0 has no Verbs"},
		{name: "allowed rule without groups", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{User: "u", Rules: rule(rbacv1.PolicyRule{Verbs: []string{"get"}, Resources: []string{"pods"}})}}, want: "rule 0 has Resources but no APIGroups"},
		{name: "allowed rule without resources", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{User: "u", Rules: rule(rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{""}})}}, want: "neither Resources nor NonResourceURLs"},
		{name: "allowed rule urls in namespace", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{User: "u", Namespace: "ns", Rules: rule(rbacv1.PolicyRule{Verbs: []string{"get"}, NonResourceURLs: []string{"/metrics"}})}}, want: `has NonResourceURLs, which have no namespace, but Namespace is "ns"`},
		{name: "allowed rule malformed resource", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{User: "u", Rules: rule(rbacv1.PolicyRule{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"pods/log/x"}})}}, want: `malformed resource "pods/log/x"`},
		{name: "allowed rule empty verb", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{User: "u", Rules: rule(rbacv1.PolicyRule{Verbs: []string{""}, APIGroups: []string{""}, Resources: []string{"pods"}})}}, want: "has an empty verb"},
		{name: "allowed rule relative url", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{User: "u", Rules: rule(rbacv1.PolicyRule{Verbs: []string{"get"}, NonResourceURLs: []string{"metrics"}})}}, want: `non-resource URL "metrics" that does not start with /`},
		// Names the apiserver could never hold (they went into URLs and
		// selectors and waited for the deadline), by apimachinery's rules.
		{name: "object namespace with space", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: configMapGVR, Namespace: "kube system", Object: "x"}}, want: `ObjectExists "x": malformed namespace "kube system"`},
		{name: "object namespace dotdot", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: configMapGVR, Namespace: "..", Object: "x"}}, want: `malformed namespace ".."`},
		{name: "object name with slash", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: configMapGVR, Namespace: "a", Object: "a/b"}}, want: `ObjectExists configmaps: malformed Object name "a/b"`},
		{name: "object name dotdot", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: configMapGVR, Object: ".."}}, want: `malformed Object name ".."`},
		{name: "object bad group", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: schema.GroupVersionResource{Group: "Bad Group", Version: "v1", Resource: "things"}, Object: "x"}}, want: `malformed GVR.Group "Bad Group"`},
		{name: "object bad version", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: schema.GroupVersionResource{Group: "g.io", Version: "v 1", Resource: "things"}, Object: "x"}}, want: `malformed GVR.Version "v 1"`},
		{name: "object bad resource", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: schema.GroupVersionResource{Group: "g.io", Version: "v1", Resource: "UPPER"}, Object: "x"}}, want: `malformed GVR.Resource "UPPER"`},
		{name: "ready bad namespace", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectReady{GVR: configMapGVR, Namespace: "kube system", Object: "x"}}, want: `ObjectReady "x": malformed namespace`},
		{name: "ready bad name", reqs: []cnibootstrap.Requirement{cnibootstrap.ObjectReady{GVR: configMapGVR, Object: "a%2Fb"}}, want: `ObjectReady configmaps: malformed Object name`},
		{name: "role name with slash", reqs: []cnibootstrap.Requirement{cnibootstrap.ClusterRoleExists{Role: "a/b"}}, want: `ClusterRoleExists: malformed Role name "a/b"`},
		{name: "binding name dotdot", reqs: []cnibootstrap.Requirement{cnibootstrap.ClusterRoleBindingExists{Binding: "../x"}}, want: `ClusterRoleBindingExists: malformed Binding name "../x"`},
		{name: "binding role with slash", reqs: []cnibootstrap.Requirement{cnibootstrap.ClusterRoleBindingExists{Binding: "b", Role: "r/x"}}, want: `malformed Role name "r/x"`},
		{name: "binding sa subject namespace", reqs: []cnibootstrap.Requirement{cnibootstrap.ClusterRoleBindingExists{Binding: "b", Subject: rbacv1.Subject{Kind: "ServiceAccount", Namespace: "kube system", Name: "x"}}}, want: `malformed namespace "kube system"`},
		{name: "binding sa subject name", reqs: []cnibootstrap.Requirement{cnibootstrap.ClusterRoleBindingExists{Binding: "b", Subject: rbacv1.Subject{Kind: "ServiceAccount", Namespace: "ns", Name: "a/b"}}}, want: `malformed ServiceAccount name "a/b"`},
		{name: "allowed sa namespace", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{ServiceAccount: types.NamespacedName{Namespace: "kube system", Name: "a"}, Verb: "list", Resource: "pods"}}, want: `malformed namespace "kube system"`},
		{name: "allowed sa name", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{ServiceAccount: types.NamespacedName{Namespace: "ns", Name: "a/b"}, Verb: "list", Resource: "pods"}}, want: `malformed ServiceAccount name "a/b"`},
		{name: "allowed namespace", reqs: []cnibootstrap.Requirement{cnibootstrap.Allowed{User: "u", Namespace: "..", Verb: "list", Resource: "pods"}}, want: `Allowed for u: malformed namespace ".."`},
		{name: "nil option", opts: []cnibootstrap.Option{nil}, want: "option 0 is nil"},
		{name: "nil progress", opts: []cnibootstrap.Option{cnibootstrap.WithProgress(nil)}, want: "WithProgress(nil)"},
		{name: "nil backoff", opts: []cnibootstrap.Option{cnibootstrap.WithBackoff(nil)}, want: "WithBackoff(nil)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.clients
			if c.Dynamic == nil && c.Kube == nil {
				c = good
			}
			w, err := cnibootstrap.New(c, tc.reqs, tc.opts...)
			require.ErrorIs(t, err, cnibootstrap.ErrInvalidInput)
			assert.Nil(t, w)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "cnibootstrap: New: ")

			// The one-call form refuses the same input, without blocking.
			require.ErrorIs(t, cnibootstrap.Wait(context.Background(), c, tc.reqs, tc.opts...), cnibootstrap.ErrInvalidInput)
		})
	}

	_, err := cnibootstrap.NewClients(nil)
	require.ErrorIs(t, err, cnibootstrap.ErrInvalidInput)
	_, err = cnibootstrap.NewClients(&rest.Config{Host: "::not a url::"})
	require.ErrorIs(t, err, cnibootstrap.ErrInvalidInput)
}

// TestNoRequirements: nothing to wait for is met at once, with no request
// (the clients point nowhere).
func TestNoRequirements(t *testing.T) {
	w, err := cnibootstrap.New(offlineClients(t), nil)
	require.NoError(t, err)
	require.NoError(t, w.Wait(context.Background()))
	require.NoError(t, w.Check(context.Background()))
}

// TestNames pins the names requirements report under.
func TestNames(t *testing.T) {
	for _, tc := range []struct {
		r    cnibootstrap.Requirement
		want string
	}{
		{cnibootstrap.CRDEstablished{CRD: clusterInformationCRD}, nameCRD},
		{cnibootstrap.ObjectExists{GVR: clusterInformationGVR, Object: "default"}, nameObject},
		{cnibootstrap.ObjectExists{GVR: schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, Namespace: "kube-system", Object: "kubeadm-config"}, "configmaps/v1 kube-system/kubeadm-config"},
		{cnibootstrap.ClusterRoleExists{Role: "calico-typha"}, nameRole},
		{cnibootstrap.ClusterRoleBindingExists{Binding: "calico-typha"}, "clusterrolebinding calico-typha"},
		{cnibootstrap.Allowed{ServiceAccount: typhaSA, Verb: "list", Group: "crd.projectcalico.org", Resource: "clusterinformations"}, nameTypha},
		{cnibootstrap.Allowed{User: "alice", Verb: "get", Resource: "pods", Subresource: "log", ResourceName: "p", Namespace: "ns"}, "alice can get pods/log named p in namespace ns"},
		{cnibootstrap.Allowed{User: "alice", Namespace: "ns", Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"", "apps"}, Resources: []string{"pods", "deployments/status"}, ResourceNames: []string{"a", "b"}, Verbs: []string{"get", "patch"}},
			{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}},
			"alice can get,patch pods,deployments/status,pods.apps,deployments/status.apps named a,b; get /metrics in namespace ns"},
	} {
		assert.Equal(t, tc.want, tc.r.Name())
	}
}
