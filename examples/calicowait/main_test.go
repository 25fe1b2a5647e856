package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/client-go/dynamic"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/examples/internal/calico"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

func TestCalicoWaitExample(t *testing.T) {
	a := testenv.NewAPIServer(t)
	kubeconfig := testenv.KubeconfigFile(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Nothing exists yet: a short timeout lists all four requirements.
	var first testenv.SyncBuffer
	err := run(ctx, []string{"--kubeconfig", kubeconfig, "--timeout", "2s"}, &first)
	var unmet *cnibootstrap.UnmetError
	if !errors.As(err, &unmet) {
		t.Fatalf("want an *UnmetError at the deadline, got %v", err)
	}
	if len(unmet.Unmet) != 4 {
		t.Errorf("want 4 unmet requirements, got %v", unmet.Unmet)
	}

	// Now create everything, in the worst order, while the program waits;
	// ClusterInformation "default" is held at datastoreReady=false until
	// the program reports it as the only thing missing.
	cs, err := a.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(a.Config())
	if err != nil {
		t.Fatal(err)
	}
	o := calico.Objects{Kube: cs, Dynamic: dyn}
	var out testenv.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--kubeconfig", kubeconfig, "--timeout", "90s"}, &out) }()
	for _, step := range []func(context.Context) error{o.CreateServiceAccount, o.CreateBinding, o.CreateRole, o.CreateCRD} {
		if err := step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The resource is served a moment after its CRD is established.
	testenv.Eventually(t, time.Minute, 50*time.Millisecond, func() error { return o.SetClusterInformation(ctx, false) })
	objectReq := calico.Requirements(calico.Namespace)[1].Name()
	testenv.Eventually(t, time.Minute, 20*time.Millisecond, func() error {
		select {
		case err := <-done:
			t.Fatalf("returned while datastoreReady was false: %v\n%s", err, out.String())
		default:
		}
		if !strings.Contains(out.String(), fmt.Sprintf("1 unmet:\n  - %s", objectReq)) {
			return errors.New("the program has not reported the not-ready ClusterInformation as the last thing missing")
		}
		return nil
	})
	if err := o.SetClusterInformation(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "calico prerequisites ready") {
		t.Fatalf("output:\n%s", out.String())
	}
}
