package cnibootstrap_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/kubeboot/kubeboot/cnibootstrap"
)

// ExampleWait holds Calico back until what it needs is usable (rke2
// #7808): the ClusterInformation CRD established, ClusterInformation
// "default" with datastoreReady true, typha's ClusterRole, and typha's
// ServiceAccount really allowed to list ClusterInformations. It is
// compiled but not run: it needs a cluster (here, the in-cluster
// config of a ServiceAccount bound to the rules in the package doc).
func ExampleWait() {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		log.Fatal(err)
	}
	clients, err := cnibootstrap.NewClients(cfg)
	if err != nil {
		log.Fatal(err)
	}
	reqs := []cnibootstrap.Requirement{
		cnibootstrap.CRDEstablished{CRD: "clusterinformations.crd.projectcalico.org"},
		cnibootstrap.ObjectExists{
			GVR:       schema.GroupVersionResource{Group: "crd.projectcalico.org", Version: "v1", Resource: "clusterinformations"},
			Object:    "default",
			Condition: cnibootstrap.FieldEquals("spec.datastoreReady", true),
		},
		cnibootstrap.ClusterRoleExists{Role: "calico-typha", Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"crd.projectcalico.org"},
			Resources: []string{"clusterinformations"},
			Verbs:     []string{"get", "list", "watch"},
		}}},
		cnibootstrap.Allowed{
			ServiceAccount: types.NamespacedName{Namespace: "kube-system", Name: "calico-typha"},
			Verb:           "list", Group: "crd.projectcalico.org", Resource: "clusterinformations",
		},
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err = cnibootstrap.Wait(ctx, clients, reqs, cnibootstrap.WithProgress(func(unmet []cnibootstrap.Unmet) {
		for _, u := range unmet {
			log.Printf("waiting for %s", u)
		}
	}))
	var unmet *cnibootstrap.UnmetError
	switch {
	case err == nil:
		fmt.Println("calico prerequisites are usable")
	case errors.Is(err, cnibootstrap.ErrUnauthorized):
		log.Printf("fix the waiter's credentials: %v", err)
	case errors.As(err, &unmet):
		for _, u := range unmet.Unmet {
			log.Printf("still missing: %s", u)
		}
	}
}

// ExampleFieldEquals shows the reasons a Condition gives.
func ExampleFieldEquals() {
	ready := cnibootstrap.FieldEquals("spec.datastoreReady", true)
	obj := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{"datastoreReady": false},
	}}
	fmt.Println(ready(obj))
	obj.Object["spec"] = map[string]any{}
	fmt.Println(ready(obj))
	obj.Object["spec"] = map[string]any{"datastoreReady": true}
	fmt.Println(ready(obj))
	// Output:
	// spec.datastoreReady is false, want true
	// spec.datastoreReady is not set, want true
	// <nil>
}
