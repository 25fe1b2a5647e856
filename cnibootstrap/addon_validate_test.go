package cnibootstrap_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kubeboot/kubeboot/cnibootstrap"
)

// TestAddOnRequirementsRejectBadInput: every add-on requirement refuses
// malformed fields at New (and at the one-call Wait), naming the
// requirement and the field, typed nils included, before any request.
func TestAddOnRequirementsRejectBadInput(t *testing.T) {
	good := offlineClients(t)
	probe := ingress("ns", "probe")
	withProbe := func(p *unstructured.Unstructured) cnibootstrap.Requirement {
		return cnibootstrap.WebhookServing{Kind: cnibootstrap.ValidatingWebhook, Configuration: "cfg", ProbeGVR: ingressGVR, Probe: p}
	}
	mutate := func(f func(*unstructured.Unstructured)) *unstructured.Unstructured {
		p := probe.DeepCopy()
		f(p)
		return p
	}
	for _, tc := range []struct {
		name string
		req  cnibootstrap.Requirement
		want string
	}{
		{"rolledout without kind", cnibootstrap.RolledOut{Namespace: "ns", Workload: "w"}, `RolledOut ns/w: Kind "" is not Deployment, DaemonSet or StatefulSet`},
		{"rolledout bad kind", cnibootstrap.RolledOut{Kind: "ReplicaSet", Namespace: "ns", Workload: "w"}, `Kind "ReplicaSet" is not`},
		{"rolledout without name", cnibootstrap.RolledOut{Kind: cnibootstrap.Deployment, Namespace: "ns"}, "empty Workload name"},
		{"rolledout without namespace", cnibootstrap.RolledOut{Kind: cnibootstrap.DaemonSet, Workload: "w"}, `RolledOut DaemonSet "w": empty Namespace`},
		{"rolledout malformed name", cnibootstrap.RolledOut{Kind: cnibootstrap.StatefulSet, Namespace: "ns", Workload: "a,b"}, "malformed name"},
		{"rolledout typed nil", (*cnibootstrap.RolledOut)(nil), "requirement 0 is nil"},
		{"job without name", cnibootstrap.JobComplete{Namespace: "ns"}, "empty Job name"},
		{"job without namespace", cnibootstrap.JobComplete{Job: "j"}, `JobComplete "j": empty Namespace`},
		{"job negative failafter", cnibootstrap.JobComplete{Namespace: "ns", Job: "j", FailAfter: -1}, "negative FailAfter -1"},
		{"job typed nil", (*cnibootstrap.JobComplete)(nil), "requirement 0 is nil"},
		{"service without name", cnibootstrap.ServiceReady{Namespace: "ns"}, "empty Service name"},
		{"service without namespace", cnibootstrap.ServiceReady{Service: "s"}, "empty Namespace"},
		{"service negative minready", cnibootstrap.ServiceReady{Namespace: "ns", Service: "s", MinReady: -2}, "negative MinReady -2"},
		{"service malformed name", cnibootstrap.ServiceReady{Namespace: "ns", Service: "s=x"}, "malformed Service name"},
		{"webhook bad kind", cnibootstrap.WebhookServing{Kind: "Audit", Configuration: "cfg", ProbeGVR: ingressGVR, Probe: probe}, `Kind "Audit" is not Validating or Mutating`},
		{"webhook without configuration", cnibootstrap.WebhookServing{Kind: cnibootstrap.MutatingWebhook, ProbeGVR: ingressGVR, Probe: probe}, "empty Configuration name"},
		{"webhook zero gvr", cnibootstrap.WebhookServing{Kind: cnibootstrap.ValidatingWebhook, Configuration: "cfg", Probe: probe}, "ProbeGVR needs a Version and a Resource"},
		{"webhook subresource", cnibootstrap.WebhookServing{Kind: cnibootstrap.ValidatingWebhook, Configuration: "cfg", ProbeGVR: schema.GroupVersionResource{Version: "v1", Resource: "pods/exec"}, Probe: probe}, "must not name a subresource"},
		{"webhook nil probe", withProbe(nil), `WebhookServing "cfg": nil Probe`},
		{"webhook probe without object", withProbe(&unstructured.Unstructured{}), `WebhookServing "cfg": nil Probe`},
		{"webhook probe not json", withProbe(mutate(func(p *unstructured.Unstructured) { p.Object["spec"] = struct{}{} })), "Probe holds a value that is not JSON"},
		{"webhook probe without kind", withProbe(mutate(func(p *unstructured.Unstructured) { p.SetKind("") })), "Probe needs apiVersion and kind"},
		{"webhook probe other version", withProbe(mutate(func(p *unstructured.Unstructured) { p.SetAPIVersion("extensions/v1beta1") })), `Probe apiVersion "extensions/v1beta1" is not ProbeGVR's "networking.k8s.io/v1"`},
		{"webhook probe without name", withProbe(mutate(func(p *unstructured.Unstructured) { p.SetName("") })), "Probe needs a name or a generateName"},
		{"webhook malformed configuration", cnibootstrap.WebhookServing{Kind: cnibootstrap.ValidatingWebhook, Configuration: "a/b", ProbeGVR: ingressGVR, Probe: probe}, `malformed Configuration name "a/b"`},
		{"webhook malformed probe gvr", cnibootstrap.WebhookServing{Kind: cnibootstrap.ValidatingWebhook, Configuration: "cfg", ProbeGVR: schema.GroupVersionResource{Group: "Bad Group", Version: "v1", Resource: "x"}, Probe: probe}, `malformed ProbeGVR.Group "Bad Group"`},
		{"webhook probe namespace", withProbe(mutate(func(p *unstructured.Unstructured) { p.SetNamespace("kube system") })), `WebhookServing "cfg" Probe: malformed namespace "kube system"`},
		{"webhook probe name", withProbe(mutate(func(p *unstructured.Unstructured) { p.SetName("..") })), `malformed Probe name ".."`},
		{"rolledout malformed namespace", cnibootstrap.RolledOut{Kind: cnibootstrap.Deployment, Namespace: "kube system", Workload: "w"}, `malformed namespace "kube system"`},
		{"job malformed name", cnibootstrap.JobComplete{Namespace: "ns", Job: "a/b"}, "malformed name"},
		{"webhook typed nil", (*cnibootstrap.WebhookServing)(nil), "requirement 0 is nil"},
		{"ready zero gvr", cnibootstrap.ObjectReady{Object: "x"}, "GVR needs a Version and a Resource"},
		{"ready without name", cnibootstrap.ObjectReady{GVR: ingressGVR}, "empty Object name"},
		{"ready typed nil", (*cnibootstrap.ObjectReady)(nil), "requirement 0 is nil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := cnibootstrap.New(good, []cnibootstrap.Requirement{tc.req})
			require.ErrorIs(t, err, cnibootstrap.ErrInvalidInput)
			assert.Nil(t, w)
			assert.Contains(t, err.Error(), tc.want)
			require.ErrorIs(t, cnibootstrap.Wait(context.Background(), good, []cnibootstrap.Requirement{tc.req}), cnibootstrap.ErrInvalidInput)
		})
	}
}

// TestAddOnNames pins the names the add-on requirements report under.
func TestAddOnNames(t *testing.T) {
	deploy := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	for _, tc := range []struct {
		r    cnibootstrap.Requirement
		want string
	}{
		{cnibootstrap.RolledOut{Kind: cnibootstrap.DaemonSet, Namespace: "kube-system", Workload: "rke2-ingress-nginx-controller"}, "daemonset kube-system/rke2-ingress-nginx-controller rolled out"},
		{cnibootstrap.RolledOut{Kind: cnibootstrap.StatefulSet, Namespace: "ns", Workload: "db"}, "statefulset ns/db rolled out"},
		{cnibootstrap.JobComplete{Namespace: "kube-system", Job: "helm-install-rke2-ingress-nginx"}, "job kube-system/helm-install-rke2-ingress-nginx complete"},
		{cnibootstrap.ServiceReady{Namespace: "kube-system", Service: "default-backend"}, "service kube-system/default-backend ready"},
		{cnibootstrap.WebhookServing{Kind: cnibootstrap.MutatingWebhook, Configuration: "x"}, "mutatingwebhookconfiguration x serving"},
		{cnibootstrap.ObjectReady{GVR: deploy, Namespace: "ns", Object: "web"}, "deployments.apps/v1 ns/web ready"},
	} {
		assert.Equal(t, tc.want, tc.r.Name())
	}
	// ObjectExists and ObjectReady on one object do not clash.
	_, err := cnibootstrap.New(offlineClients(t), []cnibootstrap.Requirement{
		cnibootstrap.ObjectExists{GVR: deploy, Namespace: "ns", Object: "web"}, cnibootstrap.ObjectReady{GVR: deploy, Namespace: "ns", Object: "web"}})
	require.NoError(t, err)
}
