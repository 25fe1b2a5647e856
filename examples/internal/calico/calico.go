// Package calico holds the Calico-shaped objects of incident 3 (rke2 #7808)
// that the examples create and wait for: the ClusterInformation CRD and
// object the CNI plugin needs, and typha's ServiceAccount, ClusterRole and
// binding. It is shared by examples/controlplane and examples/calicowait.
package calico

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeboot/kubeboot/cnibootstrap"
)

// Names of Calico's objects.
const (
	Group     = "crd.projectcalico.org"
	CRD       = "clusterinformations." + Group
	Role      = "calico-typha"
	Namespace = "kube-system"
	Account   = "calico-typha"
)

var (
	crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	// ClusterInformations is the resource of ClusterInformation objects.
	ClusterInformations = schema.GroupVersionResource{Group: Group, Version: "v1", Resource: "clusterinformations"}
	// TyphaRules are the rules typha's ClusterRole must grant.
	TyphaRules = []rbacv1.PolicyRule{{APIGroups: []string{Group}, Resources: []string{"clusterinformations"}, Verbs: []string{"get", "list", "watch"}}}
)

// Requirements is what must be usable before Calico starts, for typha
// running as the ServiceAccount typhaNamespace/calico-typha.
func Requirements(typhaNamespace string) []cnibootstrap.Requirement {
	return []cnibootstrap.Requirement{
		cnibootstrap.CRDEstablished{CRD: CRD},
		cnibootstrap.ObjectExists{GVR: ClusterInformations, Object: "default", Condition: cnibootstrap.FieldEquals("spec.datastoreReady", true)},
		cnibootstrap.ClusterRoleExists{Role: Role, Rules: TyphaRules},
		cnibootstrap.Allowed{ServiceAccount: types.NamespacedName{Namespace: typhaNamespace, Name: Account}, Verb: "list", Group: Group, Resource: "clusterinformations"},
	}
}

// Objects creates Calico's cluster objects (typha in kube-system); each
// method is idempotent, so a hook can retry it.
type Objects struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
}

// IgnoreExists returns nil for an AlreadyExists error, err otherwise.
func IgnoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// CreateServiceAccount creates typha's ServiceAccount.
func (o Objects) CreateServiceAccount(ctx context.Context) error {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: Account, Namespace: Namespace}}
	_, err := o.Kube.CoreV1().ServiceAccounts(Namespace).Create(ctx, sa, metav1.CreateOptions{})
	return IgnoreExists(err)
}

// CreateRole creates typha's ClusterRole.
func (o Objects) CreateRole(ctx context.Context) error {
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: Role}, Rules: TyphaRules}
	_, err := o.Kube.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
	return IgnoreExists(err)
}

// CreateBinding binds typha's ClusterRole to its ServiceAccount.
func (o Objects) CreateBinding(ctx context.Context) error {
	b := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: Role},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: Role},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: Namespace, Name: Account}},
	}
	_, err := o.Kube.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{})
	return IgnoreExists(err)
}

// CreateCRD creates the ClusterInformation CRD, shaped like Calico's.
func (o Objects) CreateCRD(ctx context.Context) error {
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": CRD},
		"spec": map[string]any{
			"group": Group,
			"scope": "Cluster",
			"names": map[string]any{"kind": "ClusterInformation", "listKind": "ClusterInformationList", "plural": "clusterinformations", "singular": "clusterinformation"},
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object",
					"properties": map[string]any{
						"spec": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true},
					},
				}},
			}},
		},
	}}
	_, err := o.Dynamic.Resource(crdGVR).Create(ctx, crd, metav1.CreateOptions{})
	return IgnoreExists(err)
}

// SetClusterInformation creates or updates ClusterInformation "default" with
// spec.datastoreReady = ready. It fails while the CRD is not served yet.
func (o Objects) SetClusterInformation(ctx context.Context, ready bool) error {
	res := o.Dynamic.Resource(ClusterInformations)
	cur, err := res.Get(ctx, "default", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": Group + "/v1",
			"kind":       "ClusterInformation",
			"metadata":   map[string]any{"name": "default"},
			"spec":       map[string]any{"datastoreReady": ready, "clusterType": "k8s,bgp,kubeadm"},
		}}
		_, err = res.Create(ctx, obj, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	if err := unstructured.SetNestedField(cur.Object, ready, "spec", "datastoreReady"); err != nil {
		return fmt.Errorf("ClusterInformation default: %w", err)
	}
	_, err = res.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}
