package cnibootstrap_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// TestMain runs the tests, stops the node cluster the add-on tests share
// (nodeCluster), and only then looks for leaked goroutines, so a
// goroutine of the package or of a test that outlives its call is still
// found.
func TestMain(m *testing.M) {
	code := m.Run()
	closeNodeCluster()
	if code == 0 {
		if err := goleak.Find(testenv.LeakOptions()...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// guard bounds every wait in these tests. It is a failure guard, not a
// timing assertion: nothing should come close to it.
const guard = 60 * time.Second

var (
	crdGVR                = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	clusterInformationGVR = schema.GroupVersionResource{Group: "crd.projectcalico.org", Version: "v1", Resource: "clusterinformations"}
)

const clusterInformationCRD = "clusterinformations.crd.projectcalico.org"

// typhaSA is Calico typha's ServiceAccount.
var typhaSA = types.NamespacedName{Namespace: "kube-system", Name: "calico-typha"}

// calicoCRD is a CustomResourceDefinition shaped like Calico's own
// (crd.projectcalico.org, cluster-scoped, v1 served and stored, spec kept
// as it is), with the given plural and kind.
func calicoCRD(plural, kind string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": plural + ".crd.projectcalico.org"},
		"spec": map[string]any{
			"group": "crd.projectcalico.org",
			"scope": "Cluster",
			"names": map[string]any{
				"kind":     kind,
				"listKind": kind + "List",
				"plural":   plural,
				"singular": strings.ToLower(kind),
			},
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object",
					"properties": map[string]any{
						"apiVersion": map[string]any{"type": "string"},
						"kind":       map[string]any{"type": "string"},
						"metadata":   map[string]any{"type": "object"},
						"spec": map[string]any{
							"type":                                 "object",
							"x-kubernetes-preserve-unknown-fields": true,
						},
					},
				}},
			}},
		},
	}}
}

// clusterInformation is Calico's ClusterInformation object.
func clusterInformation(name string, datastoreReady bool) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "crd.projectcalico.org/v1",
		"kind":       "ClusterInformation",
		"metadata":   map[string]any{"name": name},
		"spec":       map[string]any{"datastoreReady": datastoreReady, "calicoVersion": "v3.29.2"},
	}}
}

// typhaRules are the rules of the calico-typha ClusterRole the tests wait
// for (the part of Calico's that matters here).
var typhaRules = []rbacv1.PolicyRule{{
	APIGroups: []string{"crd.projectcalico.org"},
	Resources: []string{"clusterinformations"},
	Verbs:     []string{"get", "list", "watch"},
}}

// calicoRequirements is the Calico case.
func calicoRequirements(objectName string) []cnibootstrap.Requirement {
	return []cnibootstrap.Requirement{
		cnibootstrap.CRDEstablished{CRD: clusterInformationCRD},
		cnibootstrap.ObjectExists{GVR: clusterInformationGVR, Object: objectName,
			Condition: cnibootstrap.FieldEquals("spec.datastoreReady", true)},
		cnibootstrap.ClusterRoleExists{Role: "calico-typha", Rules: typhaRules},
		cnibootstrap.Allowed{ServiceAccount: typhaSA, Verb: "list",
			Group: "crd.projectcalico.org", Resource: "clusterinformations"},
	}
}

// The requirement names the Calico case reports.
const (
	nameCRD    = "crd clusterinformations.crd.projectcalico.org"
	nameObject = "clusterinformations.crd.projectcalico.org/v1 default"
	nameRole   = "clusterrole calico-typha"
	nameTypha  = "system:serviceaccount:kube-system:calico-typha can list clusterinformations.crd.projectcalico.org"
)

// testBackoff is a quick floor for tests: correctness never depends on it
// (events drive the waits), it only bounds retries after errors.
func testBackoff() cnibootstrap.Option {
	return cnibootstrap.WithBackoff(func() backoff.BackOff {
		return backoff.NewExponentialBackOff(backoff.WithInitialInterval(50*time.Millisecond),
			backoff.WithMaxInterval(time.Second), backoff.WithMaxElapsedTime(0))
	})
}

// server starts a kube-apiserver and returns it with admin clients.
func server(t testing.TB) (*testenv.APIServer, cnibootstrap.Clients) {
	t.Helper()
	a := testenv.NewAPIServer(t)
	c, err := cnibootstrap.NewClients(a.Config())
	require.NoError(t, err)
	return a, c
}

func create(t testing.TB, dyn dynamic.Interface, gvr schema.GroupVersionResource, obj *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	out, err := dyn.Resource(gvr).Namespace(obj.GetNamespace()).Create(ctx, obj, metav1.CreateOptions{})
	require.NoError(t, err, "create %s %s", gvr.Resource, obj.GetName())
	return out
}

// recorder records progress reports and lets a test await one.
type recorder struct {
	mu      sync.Mutex
	reports [][]cnibootstrap.Unmet
	changed chan struct{} // closed and replaced at every report
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) progress(unmet []cnibootstrap.Unmet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, unmet)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) all() [][]cnibootstrap.Unmet {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reports)
}

// await blocks until the latest report satisfies ok, or the guard passes
// (an error that shows the latest report).
func (r *recorder) await(what string, ok func([]cnibootstrap.Unmet) bool) error {
	timeout := time.NewTimer(guard)
	defer timeout.Stop()
	for {
		r.mu.Lock()
		ch := r.changed
		var latest []cnibootstrap.Unmet
		n := len(r.reports)
		if n > 0 {
			latest = r.reports[n-1]
		}
		r.mu.Unlock()
		if n > 0 && ok(latest) {
			return nil
		}
		select {
		case <-ch:
		case <-timeout.C:
			return fmt.Errorf("waiting for progress %s: guard of %v passed; latest report: %v", what, guard, latest)
		}
	}
}

// names returns the requirement names of a report.
func names(unmet []cnibootstrap.Unmet) []string {
	s := make([]string, len(unmet))
	for i, u := range unmet {
		s[i] = u.Requirement
	}
	return s
}

// only returns a predicate true when exactly the named requirements are
// unmet.
func only(want ...string) func([]cnibootstrap.Unmet) bool {
	return func(unmet []cnibootstrap.Unmet) bool { return slices.Equal(names(unmet), want) }
}

// reason returns the reason of the named requirement in a report.
func reason(unmet []cnibootstrap.Unmet, name string) string {
	for _, u := range unmet {
		if u.Requirement == name {
			return u.Reason
		}
	}
	return ""
}

// waitAsync runs w.Wait on its own goroutine; the channel delivers its
// result.
func waitAsync(ctx context.Context, w *cnibootstrap.Waiter) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- w.Wait(ctx) }()
	return errc
}

// result waits for Wait's result within the guard.
func result(t testing.TB, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(guard):
		t.Fatalf("Wait did not return within the test guard of %v", guard)
		return nil
	}
}
