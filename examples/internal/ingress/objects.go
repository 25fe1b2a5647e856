package ingress

import (
	"context"
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

// Labels of the add-on's objects and pods.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelComponent = "app.kubernetes.io/component"
	LabelVersion   = "app.kubernetes.io/version"
)

func selector(component string) map[string]string {
	return map[string]string{LabelName: Chart, LabelComponent: component}
}

func podLabels(component, version string) map[string]string {
	l := selector(component)
	l[LabelVersion] = version
	return l
}

func meta(name, ns, component, version string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: podLabels(component, version)}
}

// readiness is an httpGet probe on the example's health server, read by
// the kubelet's real prober every second.
func (a *Addon) readiness(component, version string) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Host: "127.0.0.1", Port: intstr.FromInt(a.health.port), Path: "/" + component + "/" + version + "/healthz"}},
		PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1,
	}
}

// installJob is the release's helm-install Job, shaped like
// helm-controller's: restartPolicy OnFailure and a backoffLimit of 1000,
// so a chart that fails to render crash-loops in place and the Job never
// says Failed.
func (a *Addon) installJob(rel Release) *batchv1.Job {
	backoffLimit := int32(1000)
	after := 500 * time.Millisecond
	if rel.ChartExitCode != 0 {
		after = 200 * time.Millisecond
	}
	return &batchv1.Job{
		ObjectMeta: meta(ChartJob, a.opts.Namespace, "helm-install", rel.Version),
		Spec: batchv1.JobSpec{
			BackoffLimit: &backoffLimit,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LabelName: Chart, LabelComponent: "helm-install", LabelVersion: rel.Version}},
				Spec: corev1.PodSpec{
					RestartPolicy:                 corev1.RestartPolicyOnFailure,
					TerminationGracePeriodSeconds: new(int64),
					Containers: []corev1.Container{{
						Name:  "helm",
						Image: "rancher/klipper-helm:v0.9.4-build20250113",
						Args:  []string{"install", Chart, "--version", rel.Version},
						Env:   testenv.FakeExit(rel.ChartExitCode, after),
					}},
				},
			},
		},
	}
}

// ensureJob makes the release's install Job the one in the cluster: a Job
// of another release is deleted (its pods with it) and replaced, as
// helm-controller does when a chart changes. Idempotent; an AlreadyExists
// while the old Job is going away is returned for the hook to retry.
func (a *Addon) ensureJob(ctx context.Context, rel Release) error {
	jobs := a.opts.Kube.BatchV1().Jobs(a.opts.Namespace)
	cur, err := jobs.Get(ctx, ChartJob, metav1.GetOptions{})
	switch {
	case err == nil && cur.DeletionTimestamp == nil && cur.Labels[LabelVersion] == rel.Version:
		return nil
	case err == nil:
		bg := metav1.DeletePropagationBackground
		err = jobs.Delete(ctx, ChartJob, metav1.DeleteOptions{PropagationPolicy: &bg, Preconditions: &metav1.Preconditions{UID: &cur.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("deleting install Job %s of %s: %w", ChartJob, cur.Labels[LabelVersion], err)
		}
		a.record(HookInstallChart, "replaced", "install Job %s of %s deleted", ChartJob, cur.Labels[LabelVersion])
	case !apierrors.IsNotFound(err):
		return err
	}
	if _, err := jobs.Create(ctx, a.installJob(rel), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating install Job %s for %s: %w", ChartJob, rel.Version, err)
	}
	return nil
}

// applyBackend creates or updates the default backend's Deployment (one
// replica, the chart's default) and Service at the release.
func (a *Addon) applyBackend(ctx context.Context, rel Release) error {
	ns := a.opts.Namespace
	svc := &corev1.Service{
		ObjectMeta: meta(Backend, ns, "default-backend", rel.Version),
		Spec: corev1.ServiceSpec{Selector: selector("default-backend"),
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(8080)}}},
	}
	if _, err := a.opts.Kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("service %s: %w", Backend, err)
	}
	spec := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: podLabels("default-backend", rel.Version)},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "default-backend", Image: "registry.k8s.io/defaultbackend-amd64:" + rel.Version,
				Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: a.readiness("default-backend", rel.Version),
			}},
		},
	}
	deps := a.opts.Kube.AppsV1().Deployments(ns)
	cur, err := deps.Get(ctx, Backend, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		one := int32(1)
		_, err = deps.Create(ctx, &appsv1.Deployment{
			ObjectMeta: meta(Backend, ns, "default-backend", rel.Version),
			Spec:       appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: selector("default-backend")}, Template: spec},
		}, metav1.CreateOptions{})
		return wrap("deployment "+Backend, err)
	}
	if err != nil {
		return wrap("deployment "+Backend, err)
	}
	cur.Labels, cur.Spec.Template = podLabels("default-backend", rel.Version), spec
	_, err = deps.Update(ctx, cur, metav1.UpdateOptions{})
	return wrap("deployment "+Backend, err)
}

// applyController creates or updates the controller DaemonSet at the
// release: one pod per node, replaced one node at a time.
func (a *Addon) applyController(ctx context.Context, rel Release) error {
	ns := a.opts.Namespace
	spec := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: podLabels("controller", rel.Version)},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "controller", Image: "rancher/nginx-ingress-controller:" + rel.Version,
				Args: []string{"/nginx-ingress-controller", "--default-backend-service=" + ns + "/" + Backend,
					"--validating-webhook=:8443", "--ingress-class=" + ClassName},
				Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 80}, {Name: "webhook", ContainerPort: 8443}},
				ReadinessProbe: a.readiness("controller", rel.Version),
			}},
		},
	}
	dss := a.opts.Kube.AppsV1().DaemonSets(ns)
	cur, err := dss.Get(ctx, Controller, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		one := intstr.FromInt32(1)
		_, err = dss.Create(ctx, &appsv1.DaemonSet{
			ObjectMeta: meta(Controller, ns, "controller", rel.Version),
			Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: selector("controller")}, Template: spec,
				UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
					RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: &one}}},
		}, metav1.CreateOptions{})
		return wrap("daemonset "+Controller, err)
	}
	if err != nil {
		return wrap("daemonset "+Controller, err)
	}
	cur.Labels, cur.Spec.Template = podLabels("controller", rel.Version), spec
	_, err = dss.Update(ctx, cur, metav1.UpdateOptions{})
	return wrap("daemonset "+Controller, err)
}

// serveWebhook hands the admission webhook over to the release's
// controller: the previous version's server stops (its pods are gone: the
// gate said so), the release's starts, and the webhook configuration points
// at it. Between the two, and until the apiserver has read the new
// configuration, Ingress admission fails: the next gate covers that.
func (a *Addon) serveWebhook(ctx context.Context, rel Release) error {
	a.mu.Lock()
	prev, next := a.webhooks[a.serving], a.webhooks[rel.Version]
	prevVersion := a.serving
	a.mu.Unlock()
	if prev != nil && prevVersion != rel.Version {
		if err := prev.close(); err != nil {
			return fmt.Errorf("stopping the %s webhook server: %w", prevVersion, err)
		}
		a.mu.Lock()
		delete(a.webhooks, prevVersion)
		a.serving = ""
		a.mu.Unlock()
		a.record(HookWebhook, "stopped", "%s admission webhook gone with the %s controller pods", prevVersion, prevVersion)
	}
	if next == nil {
		var err error
		if next, err = a.startWebhook(rel.Version); err != nil {
			return fmt.Errorf("starting the %s webhook server: %w", rel.Version, err)
		}
		a.mu.Lock()
		a.webhooks[rel.Version], a.serving = next, rel.Version
		a.mu.Unlock()
		a.record(HookWebhook, "serving", "%s admission webhook on %s", rel.Version, next.URL())
	}
	url := next.URL()
	fail, none := admissionregistrationv1.Fail, admissionregistrationv1.SideEffectClassNone
	timeout := int32(5)
	want := admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: meta(a.WebhookConfiguration(), "", "admission-webhook", rel.Version),
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         "validate.nginx.ingress.kubernetes.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: a.opts.CA.PEM()},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{"networking.k8s.io"}, APIVersions: []string{"v1"}, Resources: []string{"ingresses"}},
			}},
			FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: &timeout,
			// Only the add-on's namespace: installs elsewhere are not
			// validated by this one.
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": a.opts.Namespace}},
		}},
	}
	cfgs := a.opts.Kube.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	cur, err := cfgs.Get(ctx, want.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cfgs.Create(ctx, &want, metav1.CreateOptions{})
		return wrap("validatingwebhookconfiguration "+want.Name, err)
	}
	if err != nil {
		return wrap("validatingwebhookconfiguration "+want.Name, err)
	}
	cur.Labels, cur.Webhooks = want.Labels, want.Webhooks
	_, err = cfgs.Update(ctx, cur, metav1.UpdateOptions{})
	return wrap("validatingwebhookconfiguration "+want.Name, err)
}

// ingress is one of the Ingress objects a release applies, routed to the
// default backend.
func (a *Addon) ingress(name, version string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
		"metadata": map[string]any{"name": name, "namespace": a.opts.Namespace,
			"labels": map[string]any{LabelName: Chart, LabelVersion: version}},
		"spec": map[string]any{
			"ingressClassName": ClassName,
			"rules": []any{map[string]any{"host": name + ".example.com", "http": map[string]any{"paths": []any{map[string]any{
				"path": "/", "pathType": string(networkingv1.PathTypePrefix),
				"backend": map[string]any{"service": map[string]any{"name": Backend, "port": map[string]any{"number": int64(80)}}},
			}}}}},
		},
	}}
}

// applyIngresses creates or updates the release's Ingress objects; the
// admission webhook validates each.
func (a *Addon) applyIngresses(ctx context.Context, rel Release) error {
	res := a.opts.Clients.Dynamic.Resource(ingressGVR).Namespace(a.opts.Namespace)
	for _, name := range Ingresses {
		want := a.ingress(name, rel.Version)
		cur, err := res.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = res.Create(ctx, want, metav1.CreateOptions{})
		case err == nil:
			want.SetResourceVersion(cur.GetResourceVersion())
			_, err = res.Update(ctx, want, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("ingress %s: %w", name, err)
		}
	}
	a.record(HookIngresses, "applied", "ingresses %v at %s", Ingresses, rel.Version)
	return nil
}

func wrap(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
