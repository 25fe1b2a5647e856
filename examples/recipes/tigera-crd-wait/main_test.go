package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

func TestTigeraCRDWaitRecipe(t *testing.T) {
	a := testenv.NewAPIServer(t)
	kubeconfig := testenv.KubeconfigFile(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out testenv.SyncBuffer
	if err := run(ctx, []string{"--kubeconfig", kubeconfig}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, c := range calicoCRDs {
		if want := c.plural + "." + group + " served: 0 objects"; !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestTigeraCRDWaitRecipeNameConflict injects a stale CRD in Calico's group
// that already claims kind IPPool: the recipe's ippools CRD is stored but
// never Established. Discovery — what Tigera's poll reads — just lacks
// ippools; the recipe names the conflict, fails at its deadline listing only
// that CRD, and, run again, returns once the stale CRD is deleted.
func TestTigeraCRDWaitRecipeNameConflict(t *testing.T) {
	a := testenv.NewAPIServer(t)
	kubeconfig := testenv.KubeconfigFile(t, a)
	dyn, err := dynamic.NewForConfig(a.Config())
	if err != nil {
		t.Fatal(err)
	}
	cs, err := a.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stale := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "oldippools." + group},
		"spec": map[string]any{
			"group": group, "scope": "Cluster",
			"names": map[string]any{"plural": "oldippools", "singular": "oldippool", "kind": "IPPool", "listKind": "IPPoolList"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
		},
	}}
	if _, err := dyn.Resource(crdGVR).Create(ctx, stale, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, 50*time.Millisecond, func() error { return inDiscovery(ctx, cs, "oldippools") })

	const conflict = "crd ippools." + group + ": Established=False (NotAccepted), NamesAccepted=False (ListKindConflict"
	var first testenv.SyncBuffer
	err = run(ctx, []string{"--kubeconfig", kubeconfig, "--timeout", "5s"}, &first)
	var unmet *cnibootstrap.UnmetError
	if !errors.As(err, &unmet) {
		t.Fatalf("want an *UnmetError at the deadline, got %v\n%s", err, first.String())
	}
	if len(unmet.Unmet) != 1 || !strings.HasPrefix(unmet.Unmet[0].String(), conflict) {
		t.Fatalf("want only the ippools CRD unmet, with its ListKindConflict, got %v", unmet.Unmet)
	}
	// Tigera's isCalicoResourceReady reads discovery: ippools is simply absent.
	if err := inDiscovery(ctx, cs, "ippools"); err == nil {
		t.Fatal("ippools is in discovery although its CRD is not accepted")
	} else {
		t.Logf("what Tigera's discovery poll sees, every 30 s: %v", err)
	}

	var out testenv.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--kubeconfig", kubeconfig, "--timeout", "2m"}, &out) }()
	testenv.Eventually(t, time.Minute, 20*time.Millisecond, func() error {
		if !strings.Contains(out.String(), "waiting: "+conflict) {
			return errors.New("the recipe has not reported the conflict yet")
		}
		return nil
	})
	if err := dyn.Resource(crdGVR).Delete(ctx, "oldippools."+group, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("run after the stale CRD was deleted: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "ippools."+group+" served: 0 objects") {
		t.Fatalf("output:\n%s", out.String())
	}
	t.Logf("program output:\n%s", out.String())
}

// inDiscovery returns nil when plural is listed for group/v1 in discovery.
func inDiscovery(ctx context.Context, cs kubernetes.Interface, plural string) error {
	list, err := cs.Discovery().ServerResourcesForGroupVersion(group + "/v1")
	if err != nil {
		return err
	}
	for _, r := range list.APIResources {
		if r.Name == plural {
			return nil
		}
	}
	return errors.New(plural + " not in discovery for " + group + "/v1")
}
