package cnibootstrap_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// TestServiceReadyEndpoints runs a default backend of two pods behind a
// Service; their httpGet readiness probe points at a test server on
// 127.0.0.1. While it fails, the EndpointSlice controller lists both
// endpoints not ready and Wait (MinReady 2) holds, saying so; when it
// passes, Wait returns with two ready endpoints on the server. The probe
// failing again takes them away (a new Wait holds), and passing again
// brings them back.
func TestServiceReadyEndpoints(t *testing.T) {
	env := nodeCluster(t)
	ns := namespace(t, env.cs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*guard)
	defer cancel()
	srv := newSwitchServer(t, false)
	labels := map[string]string{"app": "default-backend"}
	spec := podSpec(imageV1)
	spec.Containers[0].ReadinessProbe = srv.probe()
	spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	_, err := env.cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "default-backend", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: labels,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = env.cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "default-backend", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	req := cnibootstrap.ServiceReady{Namespace: ns, Service: "default-backend", MinReady: 2}
	require.Equal(t, "service "+ns+"/default-backend ready", req.Name())
	rec := newRecorder()
	w, err := cnibootstrap.New(env.clients, []cnibootstrap.Requirement{req}, cnibootstrap.WithProgress(rec.progress), testBackoff())
	require.NoError(t, err)
	errc := waitAsync(ctx, w)
	require.NoError(t, rec.await("with two endpoints not ready", func(u []cnibootstrap.Unmet) bool {
		return reason(u, req.Name()) == "0 ready endpoints, want 2 (2 endpoints in 1 EndpointSlice)"
	}))
	notReturned(t, errc, "while the probes fail")

	srv.healthy.Store(true)
	require.NoError(t, result(t, errc))
	assert.Equal(t, 2, readyEndpoints(t, env, ns, "default-backend"), "ready endpoints on the server at Wait's return")

	// The probes fail again: the endpoints go not ready, and a Wait holds.
	srv.healthy.Store(false)
	testenv.Eventually(t, guard, 50*time.Millisecond, func() error {
		if n := readyEndpoints(t, env, ns, "default-backend"); n > 0 {
			return fmt.Errorf("%d ready endpoints", n)
		}
		return nil
	})
	rec = newRecorder()
	w, err = cnibootstrap.New(env.clients, []cnibootstrap.Requirement{req}, cnibootstrap.WithProgress(rec.progress), testBackoff())
	require.NoError(t, err)
	errc = waitAsync(ctx, w)
	require.NoError(t, rec.await("with the endpoints not ready again", func(u []cnibootstrap.Unmet) bool {
		return reason(u, req.Name()) == "0 ready endpoints, want 2 (2 endpoints in 1 EndpointSlice)"
	}))
	notReturned(t, errc, "while the probes fail again")
	srv.healthy.Store(true)
	require.NoError(t, result(t, errc))
	assert.Equal(t, 2, readyEndpoints(t, env, ns, "default-backend"))
}

// readyEndpoints counts the Service's ready endpoints on the server.
func readyEndpoints(t testing.TB, env nodeEnv, ns, svc string) int {
	t.Helper()
	l, err := env.cs.DiscoveryV1().EndpointSlices(ns).List(context.Background(), metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	require.NoError(t, err)
	n := 0
	for _, es := range l.Items {
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				n++
			}
		}
	}
	return n
}
