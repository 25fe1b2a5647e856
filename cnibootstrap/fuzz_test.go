package cnibootstrap_test

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/validation/path"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"

	"github.com/kubeboot/kubeboot/cnibootstrap"
)

// offlineConfig points at an address nothing listens on: New makes no
// request.
var offlineConfig = &rest.Config{Host: "https://127.0.0.1:1"}

// Defined types over kinds FieldEquals accepts: they compare as their
// underlying value.
type (
	fuzzString string
	fuzzBool   bool
)

// fuzzWant picks FieldEquals's wanted value from the fuzzer's inputs.
func fuzzWant(kind uint8, s string, i int64, f float64, b bool) any {
	switch kind % 7 {
	case 0:
		return s
	case 1:
		return i
	case 2:
		return f
	case 3:
		return b
	case 5:
		return fuzzString(s)
	case 6:
		return fuzzBool(b)
	}
	return []string{s} // a type FieldEquals refuses
}

// FuzzFieldPath fuzzes the field-path parser and evaluator of FieldEquals
// (the Condition ObjectExists uses) with any path, wanted value and
// decoded JSON object. It must never panic; New must refuse exactly the
// malformed paths (empty, or with an empty segment), the unsupported
// wanted types and the wanted values no JSON holds (NaN, infinities); and
// for a well-formed path, an object holding the wanted value at that path
// (as decoded JSON holds it) must meet the Condition. The seeds run under
// go test.
func FuzzFieldPath(f *testing.F) {
	f.Add("spec.datastoreReady", []byte(`{"spec":{"datastoreReady":true}}`), uint8(3), "", int64(0), 0.0, true)
	f.Add("spec.replicas", []byte(`{"spec":{"replicas":3}}`), uint8(1), "", int64(3), 0.0, false)
	f.Add("spec.ratio", []byte(`{"spec":{"ratio":0.5}}`), uint8(2), "", int64(0), 0.5, false)
	f.Add("spec.version", []byte(`{"spec":{"version":"v3.29.2"}}`), uint8(0), "v3.29.2", int64(0), 0.0, false)
	f.Add("spec.version.major", []byte(`{"spec":{"version":"v3"}}`), uint8(1), "", int64(3), 0.0, false)
	f.Add("spec..x", []byte(`{}`), uint8(0), "x", int64(0), 0.0, false)
	f.Add(".spec", []byte(`{"spec":1}`), uint8(1), "", int64(1), 0.0, false)
	f.Add("spec.", []byte(`{"spec":1}`), uint8(1), "", int64(1), 0.0, false)
	f.Add("", []byte(`{}`), uint8(3), "", int64(0), 0.0, true)
	f.Add("status.conditions", []byte(`{"status":{"conditions":[{"type":"Ready"}]}}`), uint8(0), "Ready", int64(0), 0.0, false)
	f.Add("a.b.c", []byte(`{"a":{"b":null}}`), uint8(4), "x", int64(0), 0.0, false)
	f.Add("spec.big", []byte(`{"spec":{"big":1e300}}`), uint8(2), "", int64(0), 1e300, false)
	f.Add("spec.nan", []byte(`{}`), uint8(2), "", int64(0), math.NaN(), false)
	f.Add("spec.min", []byte(`{"spec":{"min":-9223372036854775808}}`), uint8(1), "", int64(math.MinInt64), 0.0, false)
	f.Add("métadata.ñame", []byte(`{"métadata":{"ñame":"x"}}`), uint8(0), "x", int64(0), 0.0, false)
	f.Add("data.kubernetes\\.io/x", []byte(`not json`), uint8(0), "x", int64(0), 0.0, false)
	f.Add("spec.inf", []byte(`{}`), uint8(2), "", int64(0), math.Inf(-1), false)
	f.Add("spec.mode", []byte(`{"spec":{"mode":"a"}}`), uint8(5), "a", int64(0), 0.0, false)
	f.Add("spec.on", []byte(`{"spec":{"on":true}}`), uint8(6), "", int64(0), 0.0, true)

	clients, err := cnibootstrap.NewClients(offlineConfig)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, path string, raw []byte, kind uint8, s string, i int64, fl float64, b bool) {
		want := fuzzWant(kind, s, i, fl, b)
		cond := cnibootstrap.FieldEquals(path, want)

		// Any object: no panic.
		var obj map[string]any
		if json.Unmarshal(raw, &obj) == nil && obj != nil {
			_ = cond(&unstructured.Unstructured{Object: obj})
		}
		_ = cond(nil)

		// New refuses exactly the malformed paths and wanted types.
		malformed := path == "" || strings.Contains(path, "..") || strings.HasPrefix(path, ".") || strings.HasSuffix(path, ".")
		refused := malformed || kind%7 == 4
		if f, ok := want.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
			refused = true
		}
		err := cond(&unstructured.Unstructured{Object: map[string]any{}})
		if got := errors.Is(err, cnibootstrap.ErrInvalidInput); got != refused {
			t.Fatalf("FieldEquals(%q, %#v) on an empty object: %v; want invalid input: %v", path, want, err, refused)
		}
		_, err = cnibootstrap.New(clients, []cnibootstrap.Requirement{cnibootstrap.ObjectExists{
			GVR: configMapGVR, Namespace: "ns", Object: "x", Condition: cond}})
		if got := errors.Is(err, cnibootstrap.ErrInvalidInput); got != refused {
			t.Fatalf("New with FieldEquals(%q, %#v): %v; want invalid input: %v", path, want, err, refused)
		}
		if refused {
			return
		}

		// Round trip: the wanted value at the path meets the Condition.
		holder := map[string]any{}
		if err := unstructured.SetNestedField(holder, jsonValue(want), strings.Split(path, ".")...); err != nil {
			t.Fatalf("SetNestedField(%q): %v", path, err)
		}
		if err := cond(&unstructured.Unstructured{Object: holder}); err != nil {
			t.Fatalf("FieldEquals(%q, %#v) on %v: %v", path, want, holder, err)
		}
	})
}

// jsonValue is want as a decoded JSON object holds it.
func jsonValue(want any) any {
	switch w := want.(type) {
	case fuzzString:
		return string(w)
	case fuzzBool:
		return bool(w)
	}
	if f, ok := want.(float64); ok && f == math.Trunc(f) && f >= math.MinInt64 && f < math.MaxInt64 {
		return int64(f)
	}
	return want
}

// FuzzRequirementStrings fuzzes the other strings the package parses from
// its caller — CRD names, GroupVersionResources, object names, namespaces
// and RBAC rules of Allowed — through New. It must never panic, and a
// requirement New accepts has a stable, non-empty Name.
func FuzzRequirementStrings(f *testing.F) {
	f.Add("clusterinformations.crd.projectcalico.org", "crd.projectcalico.org", "v1", "clusterinformations", "default", "", "list", "/metrics")
	f.Add("", "", "", "", "", "", "", "")
	f.Add("Cluster_Informations.x", "apps", "v1", "pods/status", "x", "ns", "*", "*")
	f.Add("a.b", "", "v1", "pods/log/x", "p", "ns", "", "metrics")
	f.Add("x..y", "g", "v", "r", "n", "n:s", "get", "/healthz/*")
	f.Add("a.b", "Bad Group", "v 1", "UPPER", "a/b", "kube system", "list", "/")
	f.Add("a.b", "g.io", "v1", "things", "..", "..", "list", "/")
	clients, err := cnibootstrap.NewClients(offlineConfig)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, crd, group, version, resource, name, namespace, verb, url string) {
		reqs := []cnibootstrap.Requirement{
			cnibootstrap.CRDEstablished{CRD: crd, InDiscovery: true},
			cnibootstrap.ObjectExists{GVR: schema.GroupVersionResource{Group: group, Version: version, Resource: resource}, Namespace: namespace, Object: name},
			cnibootstrap.ClusterRoleExists{Role: name, Rules: []rbacv1.PolicyRule{{APIGroups: []string{group}, Resources: []string{resource}, Verbs: []string{verb}}}},
			cnibootstrap.ClusterRoleBindingExists{Binding: name, Role: crd, Subject: rbacv1.Subject{Kind: "ServiceAccount", Namespace: namespace, Name: name}},
			cnibootstrap.Allowed{User: name, Verb: verb, Group: group, Resource: resource, Namespace: namespace},
			cnibootstrap.Allowed{ServiceAccount: types.NamespacedName{Namespace: namespace, Name: name}, Namespace: namespace, Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{group}, Resources: []string{resource}, ResourceNames: []string{name}, Verbs: []string{verb}},
				{NonResourceURLs: []string{url}, Verbs: []string{verb}},
			}},
		}
		for _, r := range reqs {
			w, err := cnibootstrap.New(clients, []cnibootstrap.Requirement{r})
			if err != nil {
				if !errors.Is(err, cnibootstrap.ErrInvalidInput) {
					t.Fatalf("New(%#v): %v, not invalid input", r, err)
				}
				continue
			}
			if n1, n2 := r.Name(), r.Name(); w == nil || n1 == "" || n1 != n2 {
				t.Fatalf("New(%#v) accepted a requirement without a stable name", r)
			}
			// An accepted object names what the apiserver can hold.
			if o, ok := r.(cnibootstrap.ObjectExists); ok {
				bad := len(path.IsValidPathSegmentName(o.Object)) > 0 ||
					(o.Namespace != "" && len(validation.IsDNS1123Label(o.Namespace)) > 0) ||
					(o.GVR.Group != "" && len(validation.IsDNS1123Subdomain(o.GVR.Group)) > 0) ||
					len(validation.IsDNS1123Label(o.GVR.Version)) > 0 || len(validation.IsDNS1123Label(o.GVR.Resource)) > 0
				if bad {
					t.Fatalf("New accepted the malformed %#v", o)
				}
			}
		}
	})
}
