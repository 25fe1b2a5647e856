package cnibootstrap_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// reviewCounter counts the SubjectAccessReviews sent through a transport,
// by the permission they ask about ("<verb> <resource>" as the apiserver
// sees it).
type reviewCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *reviewCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		if strings.HasSuffix(req.URL.Path, "/subjectaccessreviews") && req.Body != nil {
			body, err := io.ReadAll(req.Body)
			if err != nil {
				return nil, err
			}
			req.Body = io.NopCloser(bytes.NewReader(body))
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
			if sar, ok := obj.(*authorizationv1.SubjectAccessReview); err == nil && ok {
				c.mu.Lock()
				if c.n == nil {
					c.n = map[string]int{}
				}
				c.n[sarKey(sar.Spec)]++
				c.mu.Unlock()
			}
		}
		return rt.RoundTrip(req)
	})
}

func sarKey(s authorizationv1.SubjectAccessReviewSpec) string {
	if s.NonResourceAttributes != nil {
		return s.NonResourceAttributes.Verb + " " + s.NonResourceAttributes.Path
	}
	r := s.ResourceAttributes
	res := r.Resource
	if r.Subresource != "" {
		res += "/" + r.Subresource
	}
	if r.Group != "" {
		res += "." + r.Group
	}
	return r.Verb + " " + res
}

func (c *reviewCounter) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

// TestAllowedRules: one Allowed names a role's worth of permissions (the
// way calico-typha's ClusterRole does) for a ServiceAccount that has some
// of them. Real SubjectAccessReviews say which are missing, and the
// report names each one; while nothing changes, the floor re-asks only
// about those denied. Granting the rest lets Wait return.
func TestAllowedRules(t *testing.T) {
	a, admin := server(t)
	ctx := context.Background()
	sa := types.NamespacedName{Namespace: "kube-system", Name: "typha-like"}
	_, err := a.ServiceAccountConfig(ctx, sa.Namespace, sa.Name)
	require.NoError(t, err)
	require.NoError(t, a.BindClusterRules(ctx, sa.Namespace, sa.Name, "typha-like-part", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "configmaps"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"list"}},
	}))

	req := cnibootstrap.Allowed{ServiceAccount: sa, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "configmaps", "nodes"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments", "deployments/status"}, Verbs: []string{"get", "list"}},
		{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}},
	}}
	const user = "system:serviceaccount:kube-system:typha-like"
	name := user + " can get,list,watch pods,configmaps,nodes; get,list deployments.apps,deployments/status.apps; get /metrics"
	require.Equal(t, name, req.Name())
	denied := []string{"get nodes", "list nodes", "watch nodes", "get deployments.apps", "get deployments/status.apps", "list deployments/status.apps", "get /metrics"}
	granted := []string{"get pods", "list pods", "watch pods", "get configmaps", "list configmaps", "watch configmaps", "list deployments.apps"}
	wantLine := user + " cannot " + strings.Join(denied, ", ")

	var reviews reviewCounter
	cfg := a.Config()
	cfg.WrapTransport = reviews.wrap
	c, err := cnibootstrap.NewClients(cfg)
	require.NoError(t, err)
	rec := newRecorder()
	w, err := cnibootstrap.New(c, []cnibootstrap.Requirement{req}, cnibootstrap.WithProgress(rec.progress), testBackoff())
	require.NoError(t, err)

	// The binding reaches the authorizer asynchronously: await it through
	// Check (with admin clients, so that Wait's count starts at zero).
	checker, err := cnibootstrap.New(admin, []cnibootstrap.Requirement{req})
	require.NoError(t, err)
	testenv.Eventually(t, guard, 100*time.Millisecond, func() error {
		var ue *cnibootstrap.UnmetError
		if err := checker.Check(ctx); !errors.As(err, &ue) || ue.Unmet[0].String() != wantLine {
			return fmt.Errorf("Check: %v", err)
		}
		return nil
	})

	wctx, cancel := context.WithTimeout(ctx, 2*guard)
	defer cancel()
	errc := waitAsync(wctx, w)
	require.NoError(t, rec.await("naming each denied permission", func(u []cnibootstrap.Unmet) bool {
		return len(u) == 1 && u[0].String() == wantLine
	}))
	// The floor re-asks about the denied permissions (twice at least) and
	// not about the granted ones (asked once, by the first round: nothing
	// in RBAC changed since).
	testenv.Eventually(t, guard, 50*time.Millisecond, func() error {
		for _, d := range denied {
			if n := reviews.get(d); n < 3 {
				return fmt.Errorf("%s reviewed %d times", d, n)
			}
		}
		return nil
	})
	for _, g := range granted {
		assert.Equal(t, 1, reviews.get(g), "reviews of %s, granted in the first round", g)
	}

	// Granting the rest: Wait returns.
	require.NoError(t, a.BindClusterRules(ctx, sa.Namespace, sa.Name, "typha-like-rest", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments", "deployments/status"}, Verbs: []string{"get", "list"}},
		{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}},
	}))
	require.NoError(t, result(t, errc))
	require.NoError(t, w.Check(ctx))
}

// TestAllowedRulesInNamespace: the permissions of Rules are reviewed in
// Namespace, and a Role there grants them.
func TestAllowedRulesInNamespace(t *testing.T) {
	a, c := server(t)
	ctx := context.Background()
	sa := types.NamespacedName{Namespace: "calico-system", Name: "calico-node"}
	_, err := a.ServiceAccountConfig(ctx, sa.Namespace, sa.Name)
	require.NoError(t, err)
	req := cnibootstrap.Allowed{ServiceAccount: sa, Namespace: "calico-system", Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"calico-config"}, Verbs: []string{"get", "update"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
	}}
	rec := newRecorder()
	w, err := cnibootstrap.New(c, []cnibootstrap.Requirement{req}, cnibootstrap.WithProgress(rec.progress), testBackoff())
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(ctx, 2*guard)
	defer cancel()
	errc := waitAsync(wctx, w)
	want := "system:serviceaccount:calico-system:calico-node cannot get configmaps named calico-config, update configmaps named calico-config, create leases.coordination.k8s.io in namespace calico-system"
	require.NoError(t, rec.await("naming each permission in the namespace", func(u []cnibootstrap.Unmet) bool {
		return len(u) == 1 && u[0].String() == want
	}))
	require.NoError(t, a.BindNamespaceRules(ctx, "calico-system", sa.Namespace, sa.Name, "calico-node", req.Rules))
	require.NoError(t, result(t, errc))
}
