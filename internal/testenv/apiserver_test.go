package testenv

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

func TestAPIServerStarts(t *testing.T) {
	start := time.Now()
	a := NewAPIServer(t)
	t.Logf("kube-apiserver ready in %s", time.Since(start))
	cs, err := a.Clientset()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var code int
	require.NoError(t, cs.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).StatusCode(&code).Error())
	require.Equal(t, http.StatusOK, code)

	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "hello", Namespace: "default"}, Data: map[string]string{"k": "v"}}
	_, err = cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
	require.NoError(t, err)
	got, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "hello", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "v", got.Data["k"])
}

func TestAPIServerServiceAccountRBAC(t *testing.T) {
	a := NewAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	saCfg, err := a.ServiceAccountConfig(ctx, "kube-system", "reader")
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(saCfg)
	require.NoError(t, err)
	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

	_, err = dyn.Resource(crds).List(ctx, metav1.ListOptions{})
	require.Error(t, err)
	require.True(t, apierrors.IsForbidden(err), "want 403, got %v", err)

	require.NoError(t, a.BindClusterRules(ctx, "kube-system", "reader", "crd-reader", []rbacv1.PolicyRule{{
		APIGroups: []string{"apiextensions.k8s.io"}, Resources: []string{"customresourcedefinitions"}, Verbs: []string{"list"},
	}}))
	// RBAC changes reach the authorizer through its informer: await them.
	Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
		_, err := dyn.Resource(crds).List(ctx, metav1.ListOptions{})
		return err
	})
}

// TestAPIServerVersions starts every supported kube-apiserver version (each
// one's cached build; KUBEBOOT_KUBE_APISERVER only stands in for the
// selected one) and checks that /version reports exactly that version and
// that it serves.
func TestAPIServerVersions(t *testing.T) {
	for _, v := range KubernetesVersions() {
		t.Run(v, func(t *testing.T) {
			a := NewAPIServer(t, WithKubernetesVersion(v))
			require.Equal(t, v, a.KubernetesVersion())
			cs, err := a.Clientset()
			require.NoError(t, err)
			info, err := cs.Discovery().ServerVersion()
			require.NoError(t, err)
			require.Equal(t, v, info.GitVersion)
			parts := strings.Split(strings.TrimPrefix(v, "v"), ".")
			require.Equal(t, parts[0], info.Major)
			require.Equal(t, parts[1], info.Minor)

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "version", Namespace: "default"}, Data: map[string]string{"v": v}}
			_, err = cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
			require.NoError(t, err)
		})
	}
	_, err := StartAPIServer(context.Background(), WithKubernetesVersion("v1.20.0"))
	require.ErrorContains(t, err, "v1.20.0")
}
