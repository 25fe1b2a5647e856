package cnibootstrap_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// addonCRD is a namespaced CRD in its own group, for an add-on's custom
// resource with a status subresource (conditions kept as written).
func addonCRD(group string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "addons." + group},
		"spec": map[string]any{
			"group": group, "scope": "Namespaced",
			"names": map[string]any{"plural": "addons", "singular": "addon", "kind": "AddOn", "listKind": "AddOnList"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"subresources": map[string]any{"status": map[string]any{}},
				"schema":       map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
		},
	}}
}

// TestObjectReadyKstatus waits, by kstatus, for a custom resource whose
// controller reports with conditions: Wait holds while the object's
// status lags its generation and says Ready=False, and returns once the
// status observes the generation with Ready=True. A Stalled=True
// condition (kstatus Failed) ends Wait at once with a *FailedError naming
// the object. And the trap the doc warns about: a running Job is Current
// for kstatus, while JobComplete still waits.
func TestObjectReadyKstatus(t *testing.T) {
	env := nodeCluster(t)
	ns := namespace(t, env.cs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*guard)
	defer cancel()
	group := ns + ".kubeboot.test"
	gvr := schema.GroupVersionResource{Group: group, Version: "v1", Resource: "addons"}
	create(t, env.clients.Dynamic, crdGVR, addonCRD(group))
	t.Cleanup(func() {
		_ = env.clients.Dynamic.Resource(crdGVR).Delete(context.Background(), "addons."+group, metav1.DeleteOptions{})
	})
	require.NoError(t, cnibootstrap.Wait(ctx, env.clients, []cnibootstrap.Requirement{cnibootstrap.CRDEstablished{CRD: "addons." + group}}))

	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": group + "/v1", "kind": "AddOn",
		"metadata": map[string]any{"name": "multus", "namespace": ns},
		"spec":     map[string]any{"version": "v4"},
		"status": map[string]any{"observedGeneration": int64(0), "conditions": []any{
			map[string]any{"type": "Ready", "status": "False", "reason": "Installing", "message": "installing the chart"}}},
	}}
	var created *unstructured.Unstructured
	testenv.Eventually(t, guard, 50*time.Millisecond, func() error { // the CRD's handler may lag Established
		var err error
		created, err = env.clients.Dynamic.Resource(gvr).Namespace(ns).Create(ctx, obj, metav1.CreateOptions{})
		return err
	})
	created.Object["status"] = obj.Object["status"] // create drops the status
	created, err := env.clients.Dynamic.Resource(gvr).Namespace(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	require.NoError(t, err)

	req := cnibootstrap.ObjectReady{GVR: gvr, Namespace: ns, Object: "multus"}
	require.Equal(t, "addons."+group+"/v1 "+ns+"/multus ready", req.Name())
	rec := newRecorder()
	w, err := cnibootstrap.New(env.clients, []cnibootstrap.Requirement{req}, cnibootstrap.WithProgress(rec.progress), testBackoff())
	require.NoError(t, err)
	errc := waitAsync(ctx, w)
	require.NoError(t, rec.await("in progress", func(u []cnibootstrap.Unmet) bool {
		return strings.HasPrefix(reason(u, req.Name()), "InProgress")
	}))
	t.Logf("report: %v", rec.all()[len(rec.all())-1])
	notReturned(t, errc, "while the object is in progress")

	// Observed, but still not Ready: kstatus still says InProgress.
	created.Object["status"] = map[string]any{"observedGeneration": created.GetGeneration(), "conditions": []any{
		map[string]any{"type": "Ready", "status": "False", "reason": "Installing", "message": "installing the chart"}}}
	created, err = env.clients.Dynamic.Resource(gvr).Namespace(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, rec.await("observed but not ready", func(u []cnibootstrap.Unmet) bool {
		r := reason(u, req.Name())
		return strings.HasPrefix(r, "InProgress") && strings.Contains(r, "installing the chart")
	}))
	notReturned(t, errc, "while Ready is False")

	created.Object["status"] = map[string]any{"observedGeneration": created.GetGeneration(), "conditions": []any{
		map[string]any{"type": "Ready", "status": "True", "reason": "Installed"}}}
	_, err = env.clients.Dynamic.Resource(gvr).Namespace(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, result(t, errc))

	// Stalled: kstatus Failed, final.
	stalled := obj.DeepCopy()
	stalled.SetName("sriov")
	stalled.Object["status"] = map[string]any{"observedGeneration": int64(1), "conditions": []any{
		map[string]any{"type": "Stalled", "status": "True", "reason": "DependencyNotReady", "message": "multus is missing"}}}
	st := stalled.Object["status"]
	stalled, err = env.clients.Dynamic.Resource(gvr).Namespace(ns).Create(ctx, stalled, metav1.CreateOptions{})
	require.NoError(t, err)
	stalled.Object["status"] = st
	_, err = env.clients.Dynamic.Resource(gvr).Namespace(ns).UpdateStatus(ctx, stalled, metav1.UpdateOptions{})
	require.NoError(t, err)
	sriov := cnibootstrap.ObjectReady{GVR: gvr, Namespace: ns, Object: "sriov"}
	err = cnibootstrap.Wait(ctx, env.clients, []cnibootstrap.Requirement{req, sriov}, testBackoff())
	require.NoError(t, ctx.Err())
	require.ErrorIs(t, err, cnibootstrap.ErrFailed)
	var fe *cnibootstrap.FailedError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, cnibootstrap.FailedError{Requirement: sriov.Name(), Kind: "AddOn", Namespace: ns, Name: "sriov",
		Reason: "Failed", Message: fe.Message}, *fe)
	assert.Contains(t, fe.Message, "multus is missing")

	// The trap: a Job that is still running is Current for kstatus.
	spec := podSpec(imageV1) // runs until stopped
	spec.RestartPolicy = corev1.RestartPolicyNever
	_, err = env.cs.BatchV1().Jobs(ns).Create(ctx, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "install", Namespace: ns},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: spec}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	jobGVR := schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}
	require.NoError(t, cnibootstrap.Wait(ctx, env.clients, []cnibootstrap.Requirement{cnibootstrap.ObjectReady{GVR: jobGVR, Namespace: ns, Object: "install"}}, testBackoff()))
	jw, err := cnibootstrap.New(env.clients, []cnibootstrap.Requirement{cnibootstrap.JobComplete{Namespace: ns, Job: "install"}})
	require.NoError(t, err)
	checkErr := jw.Check(ctx)
	var ue *cnibootstrap.UnmetError
	require.ErrorAs(t, checkErr, &ue, "JobComplete must not hold for a running Job")
	t.Logf("kstatus Current, JobComplete: %v", checkErr)
}
