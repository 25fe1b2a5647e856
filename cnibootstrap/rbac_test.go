package cnibootstrap_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// waiterRules are the rules the package doc gives for the Calico case:
// list and watch, narrowed by resourceNames, on the CRD, the object and
// the role; list and watch on all ClusterRoles and ClusterRoleBindings
// (any of them may grant typha's permission); create on
// subjectaccessreviews.
var waiterRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"apiextensions.k8s.io"}, Resources: []string{"customresourcedefinitions"},
		ResourceNames: []string{"clusterinformations.crd.projectcalico.org"}, Verbs: []string{"list", "watch"}},
	{APIGroups: []string{"crd.projectcalico.org"}, Resources: []string{"clusterinformations"},
		ResourceNames: []string{"default"}, Verbs: []string{"list", "watch"}},
	{APIGroups: []string{"rbac.authorization.k8s.io"}, Resources: []string{"clusterroles", "clusterrolebindings"},
		Verbs: []string{"list", "watch"}},
	{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
}

// TestLeastPrivilege runs the Calico wait under a ServiceAccount bound to
// exactly the documented rules, with the prerequisites created after Wait
// starts (so every list, watch, the CRD follow-up and the reviews run
// under it). No report may show a permission error, and the rules really
// are narrow: the same ServiceAccount may not list CRDs or
// ClusterInformations without the name selector.
func TestLeastPrivilege(t *testing.T) {
	a, admin := server(t)
	ctx := context.Background()
	require.NoError(t, a.BindClusterRules(ctx, "kubeboot-system", "cni-waiter", "cni-waiter", waiterRules))
	cfg, err := a.ServiceAccountConfig(ctx, "kubeboot-system", "cni-waiter")
	require.NoError(t, err)
	c, err := cnibootstrap.NewClients(cfg)
	require.NoError(t, err)

	rec := newRecorder()
	w, err := cnibootstrap.New(c, calicoRequirements("default"), cnibootstrap.WithProgress(rec.progress), testBackoff())
	require.NoError(t, err)

	// RBAC reaches the authorizer asynchronously: await it through Check.
	testenv.Eventually(t, guard, 100*time.Millisecond, func() error {
		var fe *cnibootstrap.ForbiddenError
		if err := w.Check(ctx); errors.As(err, &fe) {
			return err
		}
		return nil
	})
	_, err = c.Dynamic.Resource(crdGVR).List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "an unnarrowed list of CRDs must be forbidden, got %v", err)
	_, err = c.Dynamic.Resource(clusterInformationGVR).List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "an unnarrowed list of ClusterInformations must be forbidden, got %v", err)

	wctx, cancel := context.WithTimeout(ctx, 2*guard)
	defer cancel()
	errc := waitAsync(wctx, w)
	require.NoError(t, rec.await("with every requirement unmet", only(nameCRD, nameObject, nameRole, nameTypha)))

	cs, err := a.Clientset()
	require.NoError(t, err)
	_, err = cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "calico-typha"}, Rules: typhaRules}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "calico-typha"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "calico-typha"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "kube-system", Name: "calico-typha"}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	create(t, admin.Dynamic, crdGVR, calicoCRD("clusterinformations", "ClusterInformation"))
	require.NoError(t, rec.await("with only the object missing", only(nameObject)))
	require.NoError(t, createEventually(wctx, admin, clusterInformation("default", true)))
	require.NoError(t, result(t, errc))

	for i, r := range rec.all() {
		for _, u := range r {
			var fe *cnibootstrap.ForbiddenError
			assert.False(t, errors.As(u.Err, &fe), "report %d: the documented rules fell short: %v", i, u)
		}
	}
}

// TestForbiddenVsUnauthorized: a bad token is a credential error returned
// at once (with a floor of an hour, any retry would hit the test guard);
// a valid ServiceAccount without rights makes Wait name each permission
// it lacks, and keep waiting.
func TestForbiddenVsUnauthorized(t *testing.T) {
	a, _ := server(t)
	ctx := context.Background()
	hour := cnibootstrap.WithBackoff(func() backoff.BackOff { return backoff.NewConstantBackOff(time.Hour) })

	t.Run("unauthorized", func(t *testing.T) {
		c, err := cnibootstrap.NewClients(a.ConfigWithToken("not-a-token"))
		require.NoError(t, err)
		w, err := cnibootstrap.New(c, calicoRequirements("default"), hour)
		require.NoError(t, err)

		gctx, cancel := context.WithTimeout(ctx, guard)
		defer cancel()
		err = w.Wait(gctx)
		require.ErrorIs(t, err, cnibootstrap.ErrUnauthorized)
		assert.NotErrorIs(t, err, context.DeadlineExceeded, "Wait waited on a bad credential")
		assert.True(t, apierrors.IsUnauthorized(err), "the apiserver's error is wrapped too: %v", err)
		assert.Regexp(t, `^cnibootstrap: (list|create) [a-z.]+.* unauthorized: the apiserver rejected the waiter's credentials`, err.Error())

		require.ErrorIs(t, w.Check(gctx), cnibootstrap.ErrUnauthorized)
	})

	t.Run("forbidden", func(t *testing.T) {
		cfg, err := a.ServiceAccountConfig(ctx, "kubeboot-system", "no-rights")
		require.NoError(t, err)
		c, err := cnibootstrap.NewClients(cfg)
		require.NoError(t, err)
		rec := newRecorder()
		w, err := cnibootstrap.New(c, calicoRequirements("default"), cnibootstrap.WithProgress(rec.progress), testBackoff())
		require.NoError(t, err)

		wants := map[string]string{
			nameCRD:   "the waiter may not list customresourcedefinitions.apiextensions.k8s.io named clusterinformations.crd.projectcalico.org",
			nameRole:  "the waiter may not list clusterroles.rbac.authorization.k8s.io named calico-typha",
			nameTypha: "the waiter may not create subjectaccessreviews.authorization.k8s.io (RBAC changes not watched: the waiter may not list clusterroles.rbac.authorization.k8s.io)",
		}
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errc := waitAsync(wctx, w)
		require.NoError(t, rec.await("naming the missing permissions", func(u []cnibootstrap.Unmet) bool {
			for name, want := range wants {
				if reason(u, name) != want {
					return false
				}
			}
			return strings.HasPrefix(reason(u, nameObject), "the waiter may not list clusterinformations.crd.projectcalico.org named default")
		}))
		cancel()
		err = result(t, errc)
		require.ErrorIs(t, err, context.Canceled)
		assert.NotErrorIs(t, err, cnibootstrap.ErrUnauthorized)

		var fe *cnibootstrap.ForbiddenError
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, cnibootstrap.ForbiddenError{Verb: "list", Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions",
			Name: "clusterinformations.crd.projectcalico.org", Err: fe.Err}, *fe)
		assert.True(t, apierrors.IsForbidden(fe), "it wraps the apiserver's 403")
		for _, line := range []string{nameCRD + ": " + wants[nameCRD], nameRole + ": " + wants[nameRole], nameTypha + ": " + wants[nameTypha]} {
			assert.Contains(t, err.Error(), line)
		}
		t.Log(err)
	})
}
