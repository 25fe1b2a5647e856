package cnibootstrap_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeboot/kubeboot/cnibootstrap"
)

// TestRevokedCredential: the waiter runs as a real ServiceAccount token
// and waits for a ClusterRole that never comes, so its only requests are
// one list and one open watch. Deleting the ServiceAccount revokes the
// token, which the open watch does not report; the waiter's credential
// check must see the 401 and end Wait with ErrUnauthorized (here within a
// floor of at most a second, long before the guard).
func TestRevokedCredential(t *testing.T) {
	a, _ := server(t)
	ctx := context.Background()
	require.NoError(t, a.BindClusterRules(ctx, "kubeboot-system", "revoked-waiter", "revoked-waiter", []rbacv1.PolicyRule{
		{APIGroups: []string{"rbac.authorization.k8s.io"}, Resources: []string{"clusterroles"}, ResourceNames: []string{"never"}, Verbs: []string{"list", "watch"}},
	}))
	cfg, err := a.ServiceAccountConfig(ctx, "kubeboot-system", "revoked-waiter")
	require.NoError(t, err)
	c, err := cnibootstrap.NewClients(cfg)
	require.NoError(t, err)

	rec := newRecorder()
	w, err := cnibootstrap.New(c, []cnibootstrap.Requirement{cnibootstrap.ClusterRoleExists{Role: "never"}},
		cnibootstrap.WithProgress(rec.progress), testBackoff())
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(ctx, guard)
	defer cancel()
	errc := waitAsync(wctx, w)
	// The binding reaches the authorizer asynchronously: a 403 first is
	// retried until the list works and the watch is open.
	require.NoError(t, rec.await("watching the role", func(u []cnibootstrap.Unmet) bool {
		return reason(u, "clusterrole never") == "not found"
	}))

	cs, err := a.Clientset()
	require.NoError(t, err)
	require.NoError(t, cs.CoreV1().ServiceAccounts("kubeboot-system").Delete(ctx, "revoked-waiter", metav1.DeleteOptions{}))

	err = result(t, errc)
	require.ErrorIs(t, err, cnibootstrap.ErrUnauthorized, "Wait after the ServiceAccount was deleted")
	assert.NotErrorIs(t, err, context.DeadlineExceeded)
	assert.True(t, apierrors.IsUnauthorized(err), "the apiserver's 401 is wrapped: %v", err)
	t.Log(err)
	require.ErrorIs(t, w.Check(ctx), cnibootstrap.ErrUnauthorized)
}
