package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

func TestAddressWatchExample(t *testing.T) {
	c := testenv.NewCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for id, addr := range map[string]string{"node1": "192.0.2.10:6443", "node2": "192.0.2.11:6443"} {
		reg, err := apiserverdisco.Publish(ctx, c.Client(), id, addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = reg.Close() })
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"--endpoints", strings.Join(c.Endpoints(), ","), "--count", "1"}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "apiservers (v1): 192.0.2.10:6443 192.0.2.11:6443") {
		t.Fatalf("output does not list both addresses:\n%s", out.String())
	}
}

func TestAddressWatchExampleLegacyKey(t *testing.T) {
	c := testenv.NewCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Client().Put(ctx, "rke2/apiaddresses", `["192.0.2.20:6443","192.0.2.21:6443"]`); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"--endpoints", c.Endpoints()[0], "--legacy", "rke2", "--count", "1"}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "192.0.2.20:6443 192.0.2.21:6443") {
		t.Fatalf("output does not list the legacy addresses:\n%s", out.String())
	}
}
