package cnibootstrap_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeboot/kubeboot/cnibootstrap"
)

var configMapGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

// configMap creates namespace ns if needed and the ConfigMap ns/name with
// data.ready = ready.
func configMap(t *testing.T, cs kubernetes.Interface, ns, name, ready string) {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
		_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	_, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Data: map[string]string{"ready": ready}}, metav1.CreateOptions{})
	require.NoError(t, err)
}

// TestObjectAnyNamespace: ObjectExists with an empty Namespace on a
// namespaced resource follows the object of that name in every namespace.
// With ns-a/shared ready and ns-b/shared not, the requirement holds; when
// ns-b/shared is deleted it must go on holding (ns-a/shared still exists,
// as Check says), so Wait returns as soon as the last other requirement
// holds. The waiter once kept one state per name, so the deletion of
// ns-b/shared read as "not found" and Wait stayed blocked.
func TestObjectAnyNamespace(t *testing.T) {
	a, c := server(t)
	cs, err := a.Clientset()
	require.NoError(t, err)
	ctx := context.Background()
	configMap(t, cs, "ns-a", "shared", "true")
	configMap(t, cs, "ns-b", "shared", "false")

	const nameShared, nameGate = "configmaps/v1 shared", "clusterrole gate"
	reqs := []cnibootstrap.Requirement{
		cnibootstrap.ObjectExists{GVR: configMapGVR, Object: "shared", Condition: cnibootstrap.FieldEquals("data.ready", "true")},
		cnibootstrap.ClusterRoleExists{Role: "gate"},
	}
	// After the deletion, any report that shows the object unmet is a
	// failure: sharedUnmet is closed at the first one.
	var afterDelete atomic.Bool
	sharedUnmet := make(chan []cnibootstrap.Unmet, 1)
	var once sync.Once
	rec := newRecorder()
	w, err := cnibootstrap.New(c, reqs, testBackoff(), cnibootstrap.WithProgress(func(u []cnibootstrap.Unmet) {
		rec.progress(u)
		if afterDelete.Load() && slices.Contains(names(u), nameShared) {
			once.Do(func() { sharedUnmet <- u })
		}
	}))
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(ctx, 2*guard)
	defer cancel()
	errc := waitAsync(wctx, w)
	require.NoError(t, rec.await("with only the gate unmet", only(nameGate)))

	afterDelete.Store(true)
	require.NoError(t, cs.CoreV1().ConfigMaps("ns-b").Delete(ctx, "shared", metav1.DeleteOptions{}))
	// A fresh Check sees ns-a/shared: only the gate is missing.
	var ue *cnibootstrap.UnmetError
	require.ErrorAs(t, w.Check(ctx), &ue)
	assert.Equal(t, []string{nameGate}, names(ue.Unmet))

	_, err = cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "gate"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	select {
	case err := <-errc:
		require.NoError(t, err, "Wait once ns-a/shared holds and the gate exists")
	case u := <-sharedUnmet:
		t.Fatalf("after ns-b/shared was deleted, Wait reported %v although ns-a/shared holds", u)
	}
	require.NoError(t, w.Check(ctx))

	// Reasons name each namespace's object when none holds; Check and
	// Wait agree.
	require.NoError(t, cs.CoreV1().ConfigMaps("ns-a").Delete(ctx, "shared", metav1.DeleteOptions{}))
	configMap(t, cs, "ns-b", "shared", "false")
	configMap(t, cs, "ns-c", "shared", "no")
	want := `ns-b/shared: data.ready is "false", want "true"; ns-c/shared: data.ready is "no", want "true"`
	require.ErrorAs(t, w.Check(ctx), &ue)
	require.Len(t, ue.Unmet, 1)
	assert.Equal(t, nameShared+": "+want, ue.Unmet[0].String())

	rec2 := newRecorder()
	w2, err := cnibootstrap.New(c, reqs[:1], testBackoff(), cnibootstrap.WithProgress(rec2.progress))
	require.NoError(t, err)
	errc2 := waitAsync(wctx, w2)
	require.NoError(t, rec2.await("naming both objects", func(u []cnibootstrap.Unmet) bool { return reason(u, nameShared) == want }))
	// One of them becoming ready is enough.
	cm, err := cs.CoreV1().ConfigMaps("ns-c").Get(ctx, "shared", metav1.GetOptions{})
	require.NoError(t, err)
	cm.Data["ready"] = "true"
	_, err = cs.CoreV1().ConfigMaps("ns-c").Update(ctx, cm, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, result(t, errc2))

	// Every object being deleted or gone: not met.
	require.NoError(t, cs.CoreV1().ConfigMaps("ns-b").Delete(ctx, "shared", metav1.DeleteOptions{}))
	require.NoError(t, cs.CoreV1().ConfigMaps("ns-c").Delete(ctx, "shared", metav1.DeleteOptions{}))
	err = w2.Check(ctx)
	require.True(t, errors.As(err, &ue), "Check: %v", err)
	assert.Equal(t, nameShared+": not found", ue.Unmet[0].String())
}
