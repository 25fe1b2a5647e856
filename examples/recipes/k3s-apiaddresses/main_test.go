package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
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

// awaitOutput waits until out contains want, failing if run returned first.
func awaitOutput(t *testing.T, out *testenv.SyncBuffer, done <-chan error, want string) {
	t.Helper()
	testenv.Eventually(t, time.Minute, 20*time.Millisecond, func() error {
		select {
		case err := <-done:
			t.Fatalf("run returned before printing %q: %v\n%s", want, err, out.String())
		default:
		}
		if !strings.Contains(out.String(), want) {
			return errors.New("output lacks " + want)
		}
		return nil
	})
}

// TestK3sAPIAddressesRecipeServerDies: node1 runs the program (publish and
// watch), node2 publishes too and then dies without cleaning up (its
// context ends: no more keepalives, no delete). The program is pushed the
// set without node2 once node2's lease expires.
func TestK3sAPIAddressesRecipeServerDies(t *testing.T) {
	c := testenv.NewCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node2Ctx, node2Dies := context.WithCancel(ctx)
	defer node2Dies()
	reg, err := apiserverdisco.Publish(node2Ctx, c.Client(), "node2", "192.0.2.11:6443", apiserverdisco.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()

	var out testenv.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--endpoints", strings.Join(c.Endpoints(), ","), "--id", "node1",
			"--advertise-address", "192.0.2.10:6443", "--ttl", "2s", "--count", "2"}, &out)
	}()
	awaitOutput(t, &out, done, "apiservers (v1): 192.0.2.10:6443 192.0.2.11:6443")
	node2Dies()
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "apiservers (v2): 192.0.2.10:6443\n") {
		t.Fatalf("the program was not pushed the set without the dead server:\n%s", out.String())
	}
	resp, err := c.Client().Get(ctx, reg.Key())
	if err != nil || resp.Count != 0 {
		t.Fatalf("the dead server's key %s is still there (err %v)", reg.Key(), err)
	}
	t.Logf("program output:\n%s", out.String())
}

// TestK3sAPIAddressesRecipeNotYetSet: an agent (watch only) started before
// any server has published waits quietly — no error, no empty set — and
// prints the first address as soon as it is published.
func TestK3sAPIAddressesRecipeNotYetSet(t *testing.T) {
	c := testenv.NewCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out testenv.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--endpoints", c.Endpoints()[0], "--count", "1"}, &out) }()
	// The watcher has listed the empty prefix once it watches: a key put
	// now is seen as a change. Wait for its watch to be registered.
	testenv.Eventually(t, time.Minute, 20*time.Millisecond, func() error {
		select {
		case err := <-done:
			t.Fatalf("run returned before anything was published: %v\n%s", err, out.String())
		default:
		}
		if n := watchers(t, c); n == 0 {
			return errors.New("the program does not watch yet")
		}
		return nil
	})
	if out.String() != "" {
		t.Fatalf("the program printed something while the addresses were not yet set:\n%s", out.String())
	}
	reg, err := apiserverdisco.Publish(ctx, c.Client(), "node1", "192.0.2.10:6443")
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if out.String() != "apiservers (v1): 192.0.2.10:6443\n" {
		t.Fatalf("output:\n%s", out.String())
	}
}

// watchers reads how many watches the cluster's first member serves, from
// etcd's own metrics.
func watchers(t *testing.T, c *testenv.Cluster) int {
	t.Helper()
	resp, err := http.Get(c.Endpoints()[0] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "etcd_debugging_mvcc_watcher_total "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return int(n)
		}
	}
	t.Fatalf("no etcd_debugging_mvcc_watcher_total in %s/metrics", c.Endpoints()[0])
	return 0
}
