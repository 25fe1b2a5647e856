package cnibootstrap_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// addOnRules are the rules the package doc gives for the add-on
// requirements of TestAddOnLeastPrivilege, in the add-on's namespace:
// the workloads and the Job narrowed by name, their pods, a Deployment's
// ReplicaSets, a DaemonSet's ControllerRevisions and a Service's
// EndpointSlices by label (resourceNames cannot narrow those), and create
// on the probe's resource for the webhook's dry-run.
func addOnRules() []rbacv1.PolicyRule {
	lw := []string{"list", "watch"}
	return []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, ResourceNames: []string{"backend"}, Verbs: lw},
		{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, ResourceNames: []string{"controller"}, Verbs: lw},
		{APIGroups: []string{"apps"}, Resources: []string{"statefulsets"}, ResourceNames: []string{"store"}, Verbs: lw},
		{APIGroups: []string{"batch"}, Resources: []string{"jobs"}, ResourceNames: []string{"install"}, Verbs: lw},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: lw},
		{APIGroups: []string{"apps"}, Resources: []string{"replicasets", "controllerrevisions"}, Verbs: lw},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: lw},
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ingresses"}, Verbs: []string{"create"}},
	}
}

// webhookRules are the cluster-scoped rules: the webhook configuration by
// name.
func webhookRules(cfg string) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"validatingwebhookconfigurations"},
		ResourceNames: []string{cfg}, Verbs: []string{"list", "watch"}}}
}

// TestAddOnLeastPrivilege runs every add-on requirement under a
// ServiceAccount bound to exactly the documented rules (a Role in the
// add-on's namespace, a ClusterRole for the webhook configuration), with
// the workloads created after Wait starts, so every list, watch, selector
// watch restart and dry-run runs under them. No report may show a
// permission error, Wait returns, and the rules really are narrow.
func TestAddOnLeastPrivilege(t *testing.T) {
	env := nodeCluster(t)
	ns := namespace(t, env.cs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*guard)
	defer cancel()
	cfgName := "addon-admission-" + ns
	require.NoError(t, env.api.BindNamespaceRules(ctx, ns, ns, "addon-waiter", "addon-waiter", addOnRules()))
	require.NoError(t, env.api.BindClusterRules(ctx, ns, "addon-waiter", "addon-waiter-"+ns, webhookRules(cfgName)))
	t.Cleanup(func() {
		_ = env.cs.RbacV1().ClusterRoles().Delete(context.Background(), "addon-waiter-"+ns, metav1.DeleteOptions{})
		_ = env.cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), "addon-waiter-"+ns, metav1.DeleteOptions{})
	})
	cfg, err := env.api.ServiceAccountConfig(ctx, ns, "addon-waiter")
	require.NoError(t, err)
	c, err := cnibootstrap.NewClients(cfg)
	require.NoError(t, err)

	probe := ingress(ns, "kubeboot-probe")
	reqs := []cnibootstrap.Requirement{
		cnibootstrap.RolledOut{Kind: cnibootstrap.Deployment, Namespace: ns, Workload: "backend"},
		cnibootstrap.RolledOut{Kind: cnibootstrap.DaemonSet, Namespace: ns, Workload: "controller"},
		cnibootstrap.RolledOut{Kind: cnibootstrap.StatefulSet, Namespace: ns, Workload: "store"},
		cnibootstrap.JobComplete{Namespace: ns, Job: "install"},
		cnibootstrap.ServiceReady{Namespace: ns, Service: "backend"},
		cnibootstrap.WebhookServing{Kind: cnibootstrap.ValidatingWebhook, Configuration: cfgName, ProbeGVR: ingressGVR, Probe: probe},
		cnibootstrap.ObjectReady{GVR: schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, Namespace: ns, Object: "backend"},
	}
	rec := newRecorder()
	w, err := cnibootstrap.New(c, reqs, cnibootstrap.WithProgress(rec.progress), testBackoff())
	require.NoError(t, err)
	// RBAC reaches the authorizer asynchronously: await it through Check.
	testenv.Eventually(t, guard, 100*time.Millisecond, func() error {
		var fe *cnibootstrap.ForbiddenError
		if err := w.Check(ctx); errors.As(err, &fe) {
			return err
		}
		return nil
	})
	// Narrow: no unnarrowed list of workloads or Jobs, no pods elsewhere,
	// no other webhook configuration.
	_, err = c.Dynamic.Resource(schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}).Namespace(ns).List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "unnarrowed list of Deployments: %v", err)
	_, err = c.Kube.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "pods in another namespace: %v", err)
	_, err = c.Kube.AdmissionregistrationV1().ValidatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "unnarrowed list of webhook configurations: %v", err)

	errc := waitAsync(ctx, w)
	require.NoError(t, rec.await("with every requirement unmet", func(u []cnibootstrap.Unmet) bool { return len(u) == len(reqs) }))

	createAddOn(t, ctx, env, ns, cfgName)
	require.NoError(t, result(t, errc))
	for _, r := range rec.all() {
		for _, u := range r {
			var fe *cnibootstrap.ForbiddenError
			assert.False(t, errors.As(u.Err, &fe), "permission error in a report: %v", u)
		}
	}
}

// createAddOn creates what TestAddOnLeastPrivilege waits for: a backend
// Deployment behind a Service, a controller DaemonSet, a StatefulSet, an
// install Job that succeeds, and a webhook configuration for another
// namespace (so the probe's dry-run reaches no webhook: RBAC is the point).
func createAddOn(t *testing.T, ctx context.Context, env nodeEnv, ns, cfgName string) {
	t.Helper()
	sel := func(app string) (*metav1.LabelSelector, corev1.PodTemplateSpec) {
		l := map[string]string{"app": app}
		return &metav1.LabelSelector{MatchLabels: l}, corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: l}, Spec: podSpec(imageV1)}
	}
	s, tmpl := sel("backend")
	_, err := env.cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(1)), Selector: s, Template: tmpl}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = env.cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: s.MatchLabels, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	s, tmpl = sel("controller")
	_, err = env.cs.AppsV1().DaemonSets(ns).Create(ctx, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "controller", Namespace: ns},
		Spec: appsv1.DaemonSetSpec{Selector: s, Template: tmpl}}, metav1.CreateOptions{})
	require.NoError(t, err)
	s, tmpl = sel("store")
	_, err = env.cs.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "store", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr(int32(1)), ServiceName: "store", Selector: s, Template: tmpl}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = env.cs.BatchV1().Jobs(ns).Create(ctx, installJob(ns, "install", 0, 0), metav1.CreateOptions{})
	require.NoError(t, err)
	url := "https://127.0.0.1:1/unused"
	fail, none := admissionregistrationv1.Fail, admissionregistrationv1.SideEffectClassNone
	_, err = env.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: cfgName},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: "validate.addon.kubeboot.test", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: env.api.CA().PEM()},
			Rules: []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{"networking.k8s.io"}, APIVersions: []string{"v1"}, Resources: []string{"ingresses"}}}},
			FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "elsewhere-" + ns}},
		}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = env.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), cfgName, metav1.DeleteOptions{})
	})
}
