package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

// checkObjects asserts that the hooks' objects are in the cluster.
func checkObjects(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	for _, ns := range namespaces {
		if _, err := cs.NetworkingV1().NetworkPolicies(ns).Get(ctx, "default-network-policy", metav1.GetOptions{}); err != nil {
			t.Errorf("network-policies hook: %v", err)
		}
	}
	if _, err := cs.RbacV1().ClusterRoles().Get(ctx, "kubeboot-recipe-node-reader", metav1.GetOptions{}); err != nil {
		t.Errorf("cluster-roles hook: %v", err)
	}
}

func TestK3sStartupHooksRecipe(t *testing.T) {
	a := testenv.NewAPIServer(t)
	kubeconfig := testenv.KubeconfigFile(t, a)
	cs, err := a.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out testenv.SyncBuffer
	if err := run(ctx, []string{"--kubeconfig", kubeconfig}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"startup hooks done: deploying manifests", "deploy-manifests  succeeded"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	checkObjects(ctx, t, cs)
}

// TestK3sStartupHooksRecipeAPIServerDown injects rke2 #8269's fault: the
// kube-apiserver, up before, is down when the hooks start. A k3s hook, past
// its already-closed APIServerReady channel, sends its request and gets the
// error RKE2 Fatalf's on; the recipe's hooks wait at their gates, naming why,
// and run once the apiserver is back, each on its first attempt.
func TestK3sStartupHooksRecipeAPIServerDown(t *testing.T) {
	a := testenv.NewAPIServer(t)
	kubeconfig := testenv.KubeconfigFile(t, a)
	cs, err := a.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	// What k3s's hook does now.
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "k3s-style"}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err == nil {
		t.Fatal("a request to the stopped apiserver succeeded; the fault was not injected")
	} else {
		t.Logf("a k3s hook past APIServerReady gets: %v", err)
	}

	var out testenv.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--kubeconfig", kubeconfig}, &out) }()
	testenv.Eventually(t, time.Minute, 20*time.Millisecond, func() error {
		select {
		case err := <-done:
			t.Fatalf("run returned while the apiserver was down: %v\n%s", err, out.String())
		default:
		}
		if !strings.Contains(out.String(), "gate: apiserver not ready:") {
			return errors.New("the gate has not reported the apiserver down yet")
		}
		return nil
	})
	if strings.Contains(out.String(), "started") {
		t.Fatalf("a hook started while the apiserver was down:\n%s", out.String())
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Logf("program output:\n%s", out.String())
	if strings.Contains(out.String(), "attempt-failed") {
		t.Errorf("a hook attempt failed; the gates should have held every hook until the apiserver was back:\n%s", out.String())
	}
	for _, name := range []string{"network-policies", "cluster-roles", "deploy-manifests"} {
		if !strings.Contains(out.String(), "hook "+name+" succeeded attempt=1") {
			t.Errorf("hook %s did not succeed on its first attempt:\n%s", name, out.String())
		}
	}
	checkObjects(ctx, t, cs)
}
