package cnibootstrap

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestUncovered(t *testing.T) {
	pr := func(groups, resources, verbs []string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: groups, Resources: resources, Verbs: verbs}
	}
	s := func(v ...string) []string { return v }
	calico := pr(s("crd.projectcalico.org"), s("clusterinformations"), s("get", "list", "watch"))
	for _, tc := range []struct {
		name string
		have []rbacv1.PolicyRule
		want rbacv1.PolicyRule
		miss []string
	}{
		{"exact", []rbacv1.PolicyRule{calico}, calico, nil},
		{"missing verb", []rbacv1.PolicyRule{pr(s("crd.projectcalico.org"), s("clusterinformations"), s("get", "list"))}, calico,
			s("watch clusterinformations.crd.projectcalico.org")},
		{"verbs spread over rules", []rbacv1.PolicyRule{
			pr(s("crd.projectcalico.org"), s("clusterinformations"), s("get")),
			pr(s("crd.projectcalico.org"), s("clusterinformations", "felixconfigurations"), s("list", "watch"))}, calico, nil},
		{"wildcards", []rbacv1.PolicyRule{pr(s("*"), s("*"), s("*"))}, calico, nil},
		{"wrong group", []rbacv1.PolicyRule{pr(s("projectcalico.org"), s("clusterinformations"), s("*"))}, calico,
			s("get clusterinformations.crd.projectcalico.org", "list clusterinformations.crd.projectcalico.org", "watch clusterinformations.crd.projectcalico.org")},
		{"want wildcard verb needs wildcard", []rbacv1.PolicyRule{calico}, pr(s("crd.projectcalico.org"), s("clusterinformations"), s("*")),
			s("* clusterinformations.crd.projectcalico.org")},
		{"subresource wildcard", []rbacv1.PolicyRule{pr(s(""), s("*/status"), s("get"))}, pr(s(""), s("pods/status"), s("get")), nil},
		{"subresource not covered by resource", []rbacv1.PolicyRule{pr(s(""), s("pods"), s("get"))}, pr(s(""), s("pods/status"), s("get")),
			s("get pods/status")},
		{"names narrow the role", []rbacv1.PolicyRule{{APIGroups: s(""), Resources: s("configmaps"), Verbs: s("get"), ResourceNames: s("a")}},
			pr(s(""), s("configmaps"), s("get")), s("get configmaps")},
		{"names wanted", []rbacv1.PolicyRule{{APIGroups: s(""), Resources: s("configmaps"), Verbs: s("get"), ResourceNames: s("a")}},
			rbacv1.PolicyRule{APIGroups: s(""), Resources: s("configmaps"), Verbs: s("get"), ResourceNames: s("a", "b")}, s("get configmaps named b")},
		{"non-resource prefix", []rbacv1.PolicyRule{{NonResourceURLs: s("/apis/*"), Verbs: s("get")}},
			rbacv1.PolicyRule{NonResourceURLs: s("/apis/crd.projectcalico.org/v1", "/healthz"), Verbs: s("get")}, s("get /healthz")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.miss, uncovered(tc.have, []rbacv1.PolicyRule{tc.want}))
		})
	}
}

// Defined types over the kinds FieldEquals accepts.
type (
	version string
	flag    bool
	count   uint16
)

func TestFieldEquals(t *testing.T) {
	obj := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{
		"datastoreReady": false, "replicas": int64(3), "ratio": 0.5, "version": "v3.29.2",
	}}}
	for _, tc := range []struct {
		path string
		want any
		err  string
	}{
		{"spec.datastoreReady", false, ""},
		{"spec.datastoreReady", true, "spec.datastoreReady is false, want true"},
		{"spec.replicas", 3, ""},
		{"spec.replicas", uint8(3), ""},
		{"spec.replicas", 3.0, ""},
		{"spec.replicas", 4, "spec.replicas is 3, want 4"},
		{"spec.ratio", 0.5, ""},
		{"spec.version", "v3.29.2", ""},
		{"spec.version", "v3.30.0", `spec.version is "v3.29.2", want "v3.30.0"`},
		{"spec.missing", true, "spec.missing is not set, want true"},
		{"spec.version.major", 3, "spec.version.major: "},
		{"spec.datastoreReady", "false", `spec.datastoreReady is false, want "false"`},
		// Defined types compare as their underlying value.
		{"spec.version", version("v3.29.2"), ""},
		{"spec.version", version("v3.30.0"), `spec.version is "v3.29.2", want "v3.30.0"`},
		{"spec.datastoreReady", flag(false), ""},
		{"spec.datastoreReady", flag(true), "spec.datastoreReady is false, want true"},
		{"spec.replicas", count(3), ""},
		// No decoded JSON holds NaN or infinities: never equal, refused.
		{"spec.ratio", math.NaN(), "invalid input: FieldEquals(\"spec.ratio\"): want NaN can never be equal"},
		{"spec.ratio", math.Inf(1), "want +Inf can never be equal"},
		{"spec.ratio", float32(math.Inf(-1)), "want -Inf can never be equal"},
	} {
		err := FieldEquals(tc.path, tc.want)(obj)
		if tc.err == "" {
			assert.NoError(t, err, "%s == %v", tc.path, tc.want)
		} else if assert.Error(t, err, "%s == %v", tc.path, tc.want) {
			assert.Contains(t, err.Error(), tc.err)
		}
	}
	assert.EqualError(t, FieldEquals("spec.x", true)(nil), "no object")
}

func TestCRDNotReady(t *testing.T) {
	crd := func(conds ...map[string]any) *unstructured.Unstructured {
		c := make([]any, len(conds))
		for i := range conds {
			c[i] = conds[i]
		}
		return &unstructured.Unstructured{Object: map[string]any{"status": map[string]any{"conditions": c}}}
	}
	cond := func(typ, status, reason, msg string) map[string]any {
		return map[string]any{"type": typ, "status": status, "reason": reason, "message": msg}
	}
	assert.Equal(t, "Established condition not reported yet", crdNotReady(crd()))
	assert.Equal(t, "", crdNotReady(crd(cond("NamesAccepted", "True", "NoConflicts", ""), cond("Established", "True", "InitialNamesAccepted", ""))))
	assert.Equal(t, "Established=False (Installing)", crdNotReady(crd(cond("NamesAccepted", "True", "NoConflicts", ""), cond("Established", "False", "Installing", "the initial names have been accepted"))))
	assert.Equal(t, `Established=False (NotAccepted), NamesAccepted=False (KindConflict: "X" is already in use)`,
		crdNotReady(crd(cond("NamesAccepted", "False", "KindConflict", `"X" is already in use`), cond("Established", "False", "NotAccepted", "not all names are accepted"))))
}

// bigRules is a large Rules cross-product: 8 verbs × 16 groups × 32
// resources = 4096 permissions, every rule listed twice.
func bigRules() []rbacv1.PolicyRule {
	var groups, resources []string
	for i := range 16 {
		groups = append(groups, fmt.Sprintf("g%d.example.com", i))
	}
	for i := range 32 {
		resources = append(resources, fmt.Sprintf("things%d", i))
	}
	rule := rbacv1.PolicyRule{Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
		APIGroups: groups, Resources: resources}
	return []rbacv1.PolicyRule{rule, rule}
}

// permissionsLinear is the former de-duplication (slices.Contains per
// permission, O(n²)), the anchor of BenchmarkAllowedPermissions.
func permissionsLinear(r Allowed) []permission {
	var ps []permission
	for _, rule := range r.Rules {
		for _, verb := range rule.Verbs {
			for _, group := range rule.APIGroups {
				for _, res := range rule.Resources {
					p := permission{verb: verb, group: group, resource: res}
					if !slices.Contains(ps, p) {
						ps = append(ps, p)
					}
				}
			}
		}
	}
	return ps
}

func TestAllowedPermissionsDeduplicated(t *testing.T) {
	r := Allowed{User: "u", Rules: bigRules()}
	got := r.permissions()
	assert.Len(t, got, 8*16*32)
	assert.Equal(t, permissionsLinear(r), got, "same permissions, same order")
}

// BenchmarkAllowedPermissions: permissions() (map de-duplication) beside
// the former linear one, on 8192 listed, 4096 distinct permissions.
func BenchmarkAllowedPermissions(b *testing.B) {
	r := Allowed{User: "u", Rules: bigRules()}
	b.Run("map", func(b *testing.B) {
		for b.Loop() {
			_ = r.permissions()
		}
	})
	b.Run("anchor=slices.Contains", func(b *testing.B) {
		for b.Loop() {
			_ = permissionsLinear(r)
		}
	})
}
