package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

func TestCalicoWaitExample(t *testing.T) {
	a := testenv.NewAPIServer(t)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := a.Kubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Nothing exists yet: a short timeout lists all four requirements.
	var out bytes.Buffer
	err := run(ctx, []string{"--kubeconfig", kubeconfig, "--timeout", "2s"}, &out)
	var unmet *cnibootstrap.UnmetError
	if !errors.As(err, &unmet) {
		t.Fatalf("want an *UnmetError at the deadline, got %v", err)
	}
	for _, want := range []string{"crd clusterinformations.crd.projectcalico.org", "clusterrole calico-typha", "cannot list clusterinformations"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("timeout error lacks %q: %v", want, err)
		}
	}

	// Now create everything while the program waits.
	created := make(chan error, 1)
	go func() { created <- createCalico(ctx, a) }()
	out.Reset()
	if err := run(ctx, []string{"--kubeconfig", kubeconfig, "--timeout", "90s"}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "calico prerequisites ready") {
		t.Fatalf("output:\n%s", out.String())
	}
}

// createCalico creates Calico's objects in the worst order: binding, role,
// CRD, then the object, not ready first and ready last.
func createCalico(ctx context.Context, a *testenv.APIServer) error {
	cs, err := a.Clientset()
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(a.Config())
	if err != nil {
		return err
	}
	const group = "crd.projectcalico.org"
	if _, err := cs.CoreV1().ServiceAccounts("kube-system").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "calico-typha", Namespace: "kube-system"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "calico-typha"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "calico-typha"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "kube-system", Name: "calico-typha"}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "calico-typha"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{group}, Resources: []string{"clusterinformations"}, Verbs: []string{"get", "list", "watch"}}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "clusterinformations." + group},
		"spec": map[string]any{
			"group": group, "scope": "Cluster",
			"names": map[string]any{"kind": "ClusterInformation", "listKind": "ClusterInformationList", "plural": "clusterinformations", "singular": "clusterinformation"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object",
					"properties": map[string]any{"spec": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}},
		},
	}}
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if _, err := dyn.Resource(crdGVR).Create(ctx, crd, metav1.CreateOptions{}); err != nil {
		return err
	}
	ci := dyn.Resource(schema.GroupVersionResource{Group: group, Version: "v1", Resource: "clusterinformations"})
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": group + "/v1", "kind": "ClusterInformation",
		"metadata": map[string]any{"name": "default"}, "spec": map[string]any{"datastoreReady": false},
	}}
	// The resource is served a moment after the CRD is established.
	for {
		_, err = ci.Create(ctx, obj, metav1.CreateOptions{})
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
	cur, err := ci.Get(ctx, "default", metav1.GetOptions{})
	if err != nil {
		return err
	}
	if err := unstructured.SetNestedField(cur.Object, true, "spec", "datastoreReady"); err != nil {
		return err
	}
	_, err = ci.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}
