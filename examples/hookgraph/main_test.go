package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

func TestHookGraphExample(t *testing.T) {
	a := testenv.NewAPIServer(t)
	kubeconfig := testenv.KubeconfigFile(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, []string{"--kubeconfig", kubeconfig}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"bootstrap done: cni=calico", "critical path: namespace → ", "announce   succeeded"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	cs, err := a.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().Roles(Namespace).Get(ctx, "settings-reader", metav1.GetOptions{}); err != nil {
		t.Errorf("the rbac hook's Role is missing: %v", err)
	}
}
