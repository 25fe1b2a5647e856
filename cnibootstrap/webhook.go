package cnibootstrap

import (
	"context"
	"errors"
	"fmt"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
)

var (
	validatingWebhookGVR = admissionregistrationv1.SchemeGroupVersion.WithResource("validatingwebhookconfigurations")
	mutatingWebhookGVR   = admissionregistrationv1.SchemeGroupVersion.WithResource("mutatingwebhookconfigurations")
)

// WebhookKind says which kind of admission webhook configuration
// WebhookServing follows.
type WebhookKind string

// The webhook configuration kinds WebhookServing accepts.
const (
	ValidatingWebhook WebhookKind = "Validating"
	MutatingWebhook   WebhookKind = "Mutating"
)

// failedCalling is what the apiserver's admission error says when it could
// not call a webhook (connection refused, TLS failure, timeout, a
// malformed answer), for both kinds of webhook.
const failedCalling = "failed calling webhook"

// WebhookServing requires an admission webhook to be answering, as the
// apiserver sees it: the Validating- or MutatingWebhookConfiguration
// exists (and is not being deleted), each of its webhooks that calls a
// Service has a caBundle, and a server-side dry-run create of Probe — an
// object the webhook intercepts, such as an Ingress for ingress-nginx's
// admission webhook — is not refused with "failed calling webhook". A
// configuration with its caBundle is not proof enough: in the RKE2
// ingress-nginx upgrade, creating an Ingress still failed after both were
// there, because the webhook's server was not answering yet. Its Name is
// "<kind>webhookconfiguration <configuration> serving", the kind in lower
// case.
//
// The dry-run (dryRun=All: nothing is stored) counts as serving when it
// succeeds, when an admission webhook denies it (the webhook answered),
// and when it is refused with AlreadyExists (that comes after admission).
// Any other answer — "failed calling webhook", a 422 from the apiserver's
// own validation (which runs before the validating webhooks, so they were
// not reached), a 403, a 404 for a resource not served, a 5xx — leaves
// the requirement unmet with that answer as the reason, and is re-tried.
// A webhook whose failurePolicy is Ignore cannot be judged this way: the
// apiserver ignores a failed call without telling the client, so the
// dry-run passes whether the webhook answers or not.
//
// The configuration is followed with a list and a watch narrowed by name;
// the dry-run is re-run whenever the configuration changes and, while it
// fails, on the backoff floor (the webhook's server cannot be watched).
// Nothing is final: a webhook may start answering at any time.
type WebhookServing struct {
	// Kind is ValidatingWebhook or MutatingWebhook.
	Kind WebhookKind
	// Configuration is the webhook configuration's name, a DNS-1123
	// subdomain.
	Configuration string
	// ProbeGVR is the resource of Probe, for example
	// {Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"},
	// checked as ObjectExists.GVR.
	ProbeGVR schema.GroupVersionResource
	// Probe is the object to dry-run create, with its apiVersion, kind,
	// name (or generateName; a name must be a valid path segment) and,
	// for a namespaced resource, namespace (a DNS-1123 label); it must
	// be one the webhook's rules intercept. New copies it: later
	// changes to it do not count.
	Probe *unstructured.Unstructured
}

// Name returns "<kind>webhookconfiguration <configuration> serving".
func (r WebhookServing) Name() string {
	return strings.ToLower(string(r.Kind)) + "webhookconfiguration " + r.Configuration + " serving"
}

func (r WebhookServing) validate() error {
	switch {
	case r.Kind != ValidatingWebhook && r.Kind != MutatingWebhook:
		return invalid("WebhookServing %q: Kind %q is not Validating or Mutating", r.Configuration, r.Kind)
	case r.Configuration == "":
		return invalid("WebhookServing: empty Configuration name")
	}
	what := fmt.Sprintf("WebhookServing %q", r.Configuration)
	if errs := validation.IsDNS1123Subdomain(r.Configuration); len(errs) > 0 {
		return invalid("WebhookServing: malformed Configuration name %q: %s", r.Configuration, strings.Join(errs, "; "))
	}
	if err := validGVR(what, "ProbeGVR", r.ProbeGVR); err != nil {
		return err
	}
	switch {
	case isNil(r.Probe) || r.Probe.Object == nil:
		return invalid("WebhookServing %q: nil Probe", r.Configuration)
	}
	if err := protect("WebhookServing.Probe", func() error { r.Probe.DeepCopy(); return nil }); err != nil {
		return invalid("WebhookServing %q: Probe holds a value that is not JSON (%v)", r.Configuration, err)
	}
	gv, err := schema.ParseGroupVersion(r.Probe.GetAPIVersion())
	switch {
	case r.Probe.GetKind() == "" || r.Probe.GetAPIVersion() == "":
		return invalid("WebhookServing %q: Probe needs apiVersion and kind", r.Configuration)
	case err != nil || gv != r.ProbeGVR.GroupVersion():
		return invalid("WebhookServing %q: Probe apiVersion %q is not ProbeGVR's %q", r.Configuration, r.Probe.GetAPIVersion(), r.ProbeGVR.GroupVersion())
	case r.Probe.GetName() == "" && r.Probe.GetGenerateName() == "":
		return invalid("WebhookServing %q: Probe needs a name or a generateName", r.Configuration)
	}
	if ns := r.Probe.GetNamespace(); ns != "" {
		if err := validNamespace(what+" Probe", ns); err != nil {
			return err
		}
	}
	if name := r.Probe.GetName(); name != "" {
		return validObjectName(what, "Probe", name)
	}
	return nil
}

func (r WebhookServing) key() objKey {
	gvr := validatingWebhookGVR
	if r.Kind == MutatingWebhook {
		gvr = mutatingWebhookGVR
	}
	return objKey{gvr: gvr, name: r.Configuration}
}

func (r WebhookServing) needs() needs {
	k := r.key()
	probe := r.Probe.DeepCopy()
	return needs{objects: []objKey{k}, probe: &probeSpec{
		run:   func(ctx context.Context, c Clients, _ probeInput) probeResult { return r.dryRun(ctx, c, probe) },
		after: &k,
		ready: func(obj *unstructured.Unstructured) bool {
			return obj.GetDeletionTimestamp() == nil && webhooksNotReady(obj) == ""
		},
	}}
}

// probeString names the probe object in reasons.
func (r WebhookServing) probeString(probe *unstructured.Unstructured) string {
	name := probe.GetName()
	if name == "" {
		name = probe.GetGenerateName() + "*"
	}
	if ns := probe.GetNamespace(); ns != "" {
		name = ns + "/" + name
	}
	return r.ProbeGVR.GroupResource().String() + " " + name
}

// dryRun creates a copy of probe with dryRun=All and says whether the
// answer shows the webhook serving.
func (r WebhookServing) dryRun(ctx context.Context, c Clients, probe *unstructured.Unstructured) probeResult {
	obj := probe.DeepCopy()
	ri := c.Dynamic.Resource(r.ProbeGVR)
	var res dynamic.ResourceInterface = ri
	if ns := obj.GetNamespace(); ns != "" {
		res = ri.Namespace(ns)
	}
	_, err := res.Create(ctx, obj, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	what := "dry-run create of " + r.probeString(probe)
	var status apierrors.APIStatus
	switch {
	case err == nil:
		return probeResult{ok: true}
	case strings.Contains(err.Error(), failedCalling):
		return probeResult{reason: what + ": " + err.Error()}
	case errors.As(err, &status) && webhookDenied(err.Error()):
		return probeResult{ok: true} // a webhook answered: no
	case apierrors.IsAlreadyExists(err):
		return probeResult{ok: true} // refused by storage, after admission
	}
	cerr := classify(err, request{verb: "create", gvr: r.ProbeGVR, namespace: obj.GetNamespace(), name: obj.GetName()})
	if isFatal(cerr) {
		return probeResult{reason: cerr.Error(), err: cerr}
	}
	var fe *ForbiddenError
	if errors.As(cerr, &fe) {
		return probeResult{reason: cerr.Error(), err: cerr}
	}
	return probeResult{reason: what + ": " + err.Error(), err: cerr}
}

// webhookDenied reports whether an admission error says a webhook denied
// the request ("admission webhook \"x\" denied the request: ...").
func webhookDenied(msg string) bool {
	return strings.Contains(msg, "admission webhook") && strings.Contains(msg, "denied the request")
}

// webhooksNotReady returns "" when the configuration has webhooks and each
// that calls a Service has a caBundle, otherwise why not.
func webhooksNotReady(obj *unstructured.Unstructured) string {
	hooks, _, _ := unstructured.NestedSlice(obj.Object, "webhooks")
	if len(hooks) == 0 {
		return "has no webhooks"
	}
	var missing []string
	for _, h := range hooks {
		m, ok := h.(map[string]any)
		if !ok {
			continue
		}
		name, _ := m["name"].(string)
		svc, _, _ := unstructured.NestedMap(m, "clientConfig", "service")
		ca, _, _ := unstructured.NestedString(m, "clientConfig", "caBundle")
		if svc != nil && ca == "" {
			ns, _ := svc["namespace"].(string)
			sname, _ := svc["name"].(string)
			missing = append(missing, fmt.Sprintf("webhook %s (service %s/%s)", name, ns, sname))
		}
	}
	if len(missing) > 0 {
		return "no caBundle for " + strings.Join(missing, ", ")
	}
	return ""
}

func (r WebhookServing) eval(v *view, self int) *Unmet {
	obj, u := v.object(r.Name(), r.key())
	if u != nil {
		return u
	}
	if why := webhooksNotReady(obj); why != "" {
		return &Unmet{Requirement: r.Name(), Reason: why}
	}
	res, u := v.probe(r.Name(), self)
	switch {
	case u != nil:
		u.Reason = "dry-run " + u.Reason
		return u
	case !res.ok:
		return &Unmet{Requirement: r.Name(), Reason: res.reason, Err: res.err}
	}
	return nil
}
