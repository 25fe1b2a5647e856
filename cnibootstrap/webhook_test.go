package cnibootstrap_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kubeboot/kubeboot/cnibootstrap"
)

var ingressGVR = schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"}

// ingress is an Ingress for the webhook tests' probes and creates.
func ingress(ns, name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{"defaultBackend": map[string]any{"service": map[string]any{
			"name": "default-backend", "port": map[string]any{"number": int64(80)}}}},
	}}
}

// admissionServer is a URL-based validating webhook on 127.0.0.1, serving
// TLS with a certificate from the harness CA, that allows or denies.
type admissionServer struct {
	deny   atomic.Bool
	calls  atomic.Int64
	dryRun atomic.Int64
}

func (s *admissionServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, "bad review", http.StatusBadRequest)
		return
	}
	s.calls.Add(1)
	if review.Request.DryRun != nil && *review.Request.DryRun {
		s.dryRun.Add(1)
	}
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: !s.deny.Load()}
	if !resp.Allowed {
		resp.Result = &metav1.Status{Code: http.StatusForbidden, Message: "ingress class not allowed"}
	}
	review.Response, review.Request = resp, nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&review)
}

// TestWebhookServingDryRun is the ingress-nginx admission webhook case:
// the configuration and its CA are in place, but the webhook's server is
// down, so creating an Ingress fails with "failed calling webhook". Wait
// holds, saying so, while the server is down, and returns once the
// apiserver's dry-run create of the probe Ingress passes — the server
// having seen that dry-run — after which a real create passes too. A
// webhook that answers "denied" is serving as well.
func TestWebhookServingDryRun(t *testing.T) {
	env := nodeCluster(t)
	ns := namespace(t, env.cs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*guard)
	defer cancel()

	pair, err := env.api.CA().Issue(t.TempDir(), "webhook", "127.0.0.1")
	require.NoError(t, err)
	cert, err := tls.LoadX509KeyPair(pair.CertFile, pair.KeyFile)
	require.NoError(t, err)
	// Reserve a port for the webhook, and keep it closed for now: the
	// apiserver's calls are refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())

	const cfgName = "ingress-nginx-admission"
	url := "https://" + addr + "/networking/v1/ingresses"
	fail, none := admissionregistrationv1.Fail, admissionregistrationv1.SideEffectClassNone
	_, err = env.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: cfgName + "-" + ns},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    "validate.nginx.ingress.kubernetes.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: env.api.CA().PEM()},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}, Rule: admissionregistrationv1.Rule{APIGroups: []string{"networking.k8s.io"}, APIVersions: []string{"v1"}, Resources: []string{"ingresses"}}}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr(int32(2)),
			// Only this test's namespace: the other tests do not meet it.
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
		}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = env.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), cfgName+"-"+ns, metav1.DeleteOptions{})
	})

	req := cnibootstrap.WebhookServing{Kind: cnibootstrap.ValidatingWebhook, Configuration: cfgName + "-" + ns,
		ProbeGVR: ingressGVR, Probe: ingress(ns, "kubeboot-probe")}
	require.Equal(t, "validatingwebhookconfiguration "+cfgName+"-"+ns+" serving", req.Name())
	rec := newRecorder()
	w, err := cnibootstrap.New(env.clients, []cnibootstrap.Requirement{req}, cnibootstrap.WithProgress(rec.progress), testBackoff())
	require.NoError(t, err)
	errc := waitAsync(ctx, w)
	require.NoError(t, rec.await("failing to call the webhook", func(u []cnibootstrap.Unmet) bool {
		return strings.Contains(reason(u, req.Name()), "failed calling webhook")
	}))
	reports := rec.all()
	t.Logf("report while the server is down: %v", reports[len(reports)-1])
	// Evidence from outside the waiter: a real create fails the same way.
	_, err = env.clients.Dynamic.Resource(ingressGVR).Namespace(ns).Create(ctx, ingress(ns, "before"), metav1.CreateOptions{})
	require.ErrorContains(t, err, "failed calling webhook")
	notReturned(t, errc, "while the webhook server is down")

	srv := &admissionServer{}
	hs := &http.Server{Handler: srv, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second}
	l, err = net.Listen("tcp", addr)
	require.NoError(t, err, "the webhook's port was taken meanwhile")
	served := make(chan error, 1)
	go func() { served <- hs.ServeTLS(l, "", "") }()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = hs.Shutdown(sctx)
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("webhook server: %v", err)
		}
	}()

	require.NoError(t, result(t, errc))
	assert.Positive(t, srv.dryRun.Load(), "the webhook saw the waiter's dry-run")
	_, err = env.clients.Dynamic.Resource(ingressGVR).Namespace(ns).Create(ctx, ingress(ns, "after"), metav1.CreateOptions{})
	require.NoError(t, err, "a real create after Wait returned")
	_, err = env.clients.Dynamic.Resource(ingressGVR).Namespace(ns).Get(ctx, "kubeboot-probe", metav1.GetOptions{})
	assert.Error(t, err, "the dry-run probe must not have been stored")

	// A webhook that denies is answering: serving.
	srv.deny.Store(true)
	calls := srv.calls.Load()
	require.NoError(t, w.Check(ctx), "Check with a denying webhook")
	assert.Greater(t, srv.calls.Load(), calls, "Check's dry-run reached the webhook")
	_, err = env.clients.Dynamic.Resource(ingressGVR).Namespace(ns).Create(ctx, ingress(ns, "denied"), metav1.CreateOptions{})
	require.ErrorContains(t, err, "denied the request")
}
