package apiserverdisco_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// endpointSliceRules is the RBAC the package documents for the
// EndpointSlices source, and all the test's ServiceAccount gets.
var endpointSliceRules = []rbacv1.PolicyRule{{
	APIGroups: []string{"discovery.k8s.io"},
	Resources: []string{"endpointslices"},
	Verbs:     []string{"list", "watch"},
}}

func ptrTo[T any](v T) *T { return &v }

func slice(name, service string, family discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: family,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func endpoint(addr string, ready *bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
}

func port(name string, n int32) discoveryv1.EndpointPort {
	p := discoveryv1.EndpointPort{Port: ptrTo(n), Protocol: ptrTo(corev1.ProtocolTCP)}
	if name != "" {
		p.Name = ptrTo(name)
	}
	return p
}

func TestEndpointSliceSource(t *testing.T) {
	ctx := testCtx(t)
	a := testenv.NewAPIServer(t)
	admin, err := a.Clientset()
	require.NoError(t, err)
	slices := admin.DiscoveryV1().EndpointSlices("default")

	// Least privilege: a ServiceAccount with list and watch on
	// EndpointSlices in default, nothing else.
	cfg, err := a.ServiceAccountConfig(ctx, "disco", "watcher")
	require.NoError(t, err)
	require.NoError(t, a.BindNamespaceRules(ctx, "default", "disco", "watcher", "apiserverdisco-endpointslices", endpointSliceRules))
	sa, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	testenv.Eventually(t, guard, 100*time.Millisecond, func() error { // RBAC reaches the authorizer asynchronously
		_, err := sa.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{Limit: 1})
		return err
	})
	_, err = sa.DiscoveryV1().EndpointSlices("default").Get(ctx, "any", metav1.GetOptions{})
	require.True(t, apierrors.IsForbidden(err), "the ServiceAccount must have no get: %v", err)
	_, err = sa.DiscoveryV1().EndpointSlices("kube-system").List(ctx, metav1.ListOptions{})
	require.True(t, apierrors.IsForbidden(err), "the ServiceAccount must have nothing outside default: %v", err)

	// Documentation-range addresses: data only, nothing connects to them.
	https := []discoveryv1.EndpointPort{port("metrics", 9100), port("https", 6443)}
	_, err = slices.Create(ctx, slice("kubernetes-a", "kubernetes", discoveryv1.AddressTypeIPv4, https,
		endpoint("192.0.2.10", ptrTo(true)),
		endpoint("192.0.2.11", ptrTo(false)), // not ready: left out
		endpoint("192.0.2.12", nil),          // readiness unknown: counts as ready
	), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = slices.Create(ctx, slice("other", "other", discoveryv1.AddressTypeIPv4, https, endpoint("192.0.2.99", nil)), metav1.CreateOptions{})
	require.NoError(t, err)

	var errs errorLog
	w := newWatcher(t, ctx, apiserverdisco.EndpointSlices(sa), apiserverdisco.WithDebounce(0), apiserverdisco.WithErrorHandler(errs.handle))
	rec := record(t, w)
	rec.waitSet(t, "192.0.2.10:6443", "192.0.2.12:6443")

	// Updates follow: an endpoint becomes ready.
	s, err := slices.Get(ctx, "kubernetes-a", metav1.GetOptions{})
	require.NoError(t, err)
	s.Endpoints[1].Conditions.Ready = ptrTo(true)
	_, err = slices.Update(ctx, s, metav1.UpdateOptions{})
	require.NoError(t, err)
	rec.waitSet(t, "192.0.2.10:6443", "192.0.2.11:6443", "192.0.2.12:6443")

	// A second slice, IPv6, whose only port has no name.
	_, err = slices.Create(ctx, slice("kubernetes-b", "kubernetes", discoveryv1.AddressTypeIPv6,
		[]discoveryv1.EndpointPort{port("", 443)}, endpoint("2001:db8::10", ptrTo(true))), metav1.CreateOptions{})
	require.NoError(t, err)
	rec.waitSet(t, "192.0.2.10:6443", "192.0.2.11:6443", "192.0.2.12:6443", "[2001:db8::10]:443")

	// A slice without a usable port is skipped and reported by name.
	_, err = slices.Create(ctx, slice("kubernetes-c", "kubernetes", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{port("a", 1), port("b", 2)}, endpoint("192.0.2.20", nil)), metav1.CreateOptions{})
	require.NoError(t, err)
	errs.waitMalformed(t, "EndpointSlice default/kubernetes-c")

	// A slice goes away.
	require.NoError(t, slices.Delete(ctx, "kubernetes-a", metav1.DeleteOptions{}))
	last := rec.waitSet(t, "[2001:db8::10]:443")

	// The last ready endpoint goes away, as when a single apiserver shuts
	// down gracefully: that is "not yet set", never an empty delivery. A
	// new ready endpoint then proves the watcher got past that update: its
	// Snapshot must be the very next delivery (Version counts deliveries,
	// so a skipped empty one would show as a gap).
	b, err := slices.Get(ctx, "kubernetes-b", metav1.GetOptions{})
	require.NoError(t, err)
	b.Endpoints[0].Conditions.Ready = ptrTo(false)
	b, err = slices.Update(ctx, b, metav1.UpdateOptions{})
	require.NoError(t, err)
	b.Endpoints = append(b.Endpoints, endpoint("2001:db8::11", ptrTo(true)))
	_, err = slices.Update(ctx, b, metav1.UpdateOptions{})
	require.NoError(t, err)
	next := rec.waitSet(t, "[2001:db8::11]:443")
	require.Equal(t, last.Version+1, next.Version, "a set was delivered between the two updates: %v", rec.all())
	require.Equal(t, []string{"[2001:db8::11]:443"}, w.Current().Addresses)

	for _, s := range rec.all() {
		require.NotEmpty(t, s.Addresses, "an empty set was delivered")
		require.NotContains(t, s.Addresses, "192.0.2.99:6443", "a slice of another service was read")
		require.NotContains(t, s.Addresses, "192.0.2.20:6443", "a slice without a usable port was read")
	}
	// The documented rules were enough: no list or watch was refused.
	for _, err := range errs.all() {
		var me *apiserverdisco.MalformedValueError
		require.ErrorAs(t, err, &me, "unexpected error from the informer")
	}

	// Without them, the refusal is reported, not swallowed, and nothing is
	// delivered.
	nocfg, err := a.ServiceAccountConfig(ctx, "disco", "no-rights")
	require.NoError(t, err)
	none, err := kubernetes.NewForConfig(nocfg)
	require.NoError(t, err)
	var denied errorLog
	w2 := newWatcher(t, ctx, apiserverdisco.EndpointSlices(none), apiserverdisco.WithErrorHandler(denied.handle))
	denied.waitCount(t, 1, "a refused list reported")
	require.True(t, apierrors.IsForbidden(denied.all()[0]), "got %v", denied.all()[0])
	require.Zero(t, w2.Current().Version)
}
