package main

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

// The Calico-shaped objects of incident 3 (rke2 #7808): the CNI plugin needs
// ClusterInformation "default", and typha needs its ClusterRole to be bound
// and effective before it starts.
const (
	cniGroup     = "crd.projectcalico.org"
	cniCRD       = "clusterinformations." + cniGroup
	cniRole      = "calico-typha"
	cniNamespace = "kube-system"
	cniAccount   = "calico-typha"
)

var (
	crdGVR      = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	clusterInfo = schema.GroupVersionResource{Group: cniGroup, Version: "v1", Resource: "clusterinformations"}
	typhaRules  = []rbacv1.PolicyRule{{APIGroups: []string{cniGroup}, Resources: []string{"clusterinformations"}, Verbs: []string{"get", "list", "watch"}}}
)

// cniRequirements is what the CNI hook's gate waits for.
func cniRequirements() []cnibootstrap.Requirement {
	return []cnibootstrap.Requirement{
		cnibootstrap.CRDEstablished{CRD: cniCRD},
		cnibootstrap.ObjectExists{GVR: clusterInfo, Object: "default", Condition: cnibootstrap.FieldEquals("spec.datastoreReady", true)},
		cnibootstrap.ClusterRoleExists{Role: cniRole, Rules: typhaRules},
		cnibootstrap.Allowed{ServiceAccount: types.NamespacedName{Namespace: cniNamespace, Name: cniAccount}, Verb: "list", Group: cniGroup, Resource: "clusterinformations"},
	}
}

// cniObjects creates the add-on's cluster objects; each method is
// idempotent, so a hook can retry it.
type cniObjects struct {
	kube kubernetes.Interface
	dyn  dynamic.Interface
}

func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func (o cniObjects) createServiceAccount(ctx context.Context) error {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: cniAccount, Namespace: cniNamespace}}
	_, err := o.kube.CoreV1().ServiceAccounts(cniNamespace).Create(ctx, sa, metav1.CreateOptions{})
	return ignoreExists(err)
}

func (o cniObjects) createRole(ctx context.Context) error {
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: cniRole}, Rules: typhaRules}
	_, err := o.kube.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
	return ignoreExists(err)
}

func (o cniObjects) createBinding(ctx context.Context) error {
	b := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: cniRole},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cniRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: cniNamespace, Name: cniAccount}},
	}
	_, err := o.kube.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{})
	return ignoreExists(err)
}

func (o cniObjects) createCRD(ctx context.Context) error {
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": cniCRD},
		"spec": map[string]any{
			"group": cniGroup,
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
	_, err := o.dyn.Resource(crdGVR).Create(ctx, crd, metav1.CreateOptions{})
	return ignoreExists(err)
}

// setClusterInformation creates or updates ClusterInformation "default" with
// spec.datastoreReady = ready. It fails while the CRD is not served yet.
func (o cniObjects) setClusterInformation(ctx context.Context, ready bool) error {
	res := o.dyn.Resource(clusterInfo)
	cur, err := res.Get(ctx, "default", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": cniGroup + "/v1",
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
