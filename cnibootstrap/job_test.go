package cnibootstrap_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeboot/kubeboot/cnibootstrap"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// installJob is a Job whose fake container exits with code after a moment,
// shaped like helm-controller's helm-install Jobs.
func installJob(ns, name string, code int32, backoffLimit int32) *batchv1.Job {
	spec := podSpec(imageV1, testenv.FakeExit(code, 200*time.Millisecond)...)
	spec.Containers[0].Name = "helm"
	spec.RestartPolicy = corev1.RestartPolicyNever
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       batchv1.JobSpec{BackoffLimit: &backoffLimit, Template: corev1.PodTemplateSpec{Spec: spec}},
	}
}

// TestJobCompleteAndFailedFast runs an install Job that succeeds and one
// that fails (backoffLimit 0) on the real Job controller and kubelets.
// Waiting for the good one returns nil once it is Complete. Waiting for
// both ends as soon as the bad one is Failed — with a *FailedError naming
// it and its reason — not at the deadline,
// whatever the good one does. Check agrees.
func TestJobCompleteAndFailedFast(t *testing.T) {
	env := nodeCluster(t)
	ns := namespace(t, env.cs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*guard)
	defer cancel()
	for name, code := range map[string]int32{"install-ok": 0, "install-bad": 3} {
		_, err := env.cs.BatchV1().Jobs(ns).Create(ctx, installJob(ns, name, code, 0), metav1.CreateOptions{})
		require.NoError(t, err)
	}
	good := cnibootstrap.JobComplete{Namespace: ns, Job: "install-ok"}
	bad := cnibootstrap.JobComplete{Namespace: ns, Job: "install-bad"}
	require.Equal(t, "job "+ns+"/install-ok complete", good.Name())
	require.NoError(t, cnibootstrap.Wait(ctx, env.clients, []cnibootstrap.Requirement{good}, testBackoff()))
	job, err := env.cs.BatchV1().Jobs(ns).Get(ctx, "install-ok", metav1.GetOptions{})
	require.NoError(t, err)
	assert.True(t, jobCondition(job, batchv1.JobComplete), "Complete at Wait's return: %+v", job.Status)

	w, err := cnibootstrap.New(env.clients, []cnibootstrap.Requirement{good, bad}, testBackoff())
	require.NoError(t, err)
	err = result(t, waitAsync(ctx, w))
	require.NoError(t, ctx.Err(), "Wait must end on the failure, not on its context")
	require.ErrorIs(t, err, cnibootstrap.ErrFailed)
	var fe *cnibootstrap.FailedError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "Job", fe.Kind)
	assert.Equal(t, ns, fe.Namespace)
	assert.Equal(t, "install-bad", fe.Name)
	assert.Equal(t, bad.Name(), fe.Requirement)
	assert.Equal(t, "BackoffLimitExceeded", fe.Reason)
	// The Job's own message; the pod's exit code follows when the pod's
	// event came before the Job's (they are separate watches).
	assert.Contains(t, fe.Message, "Job has reached the specified backoff limit")
	assert.Contains(t, err.Error(), "Job "+ns+"/install-bad failed: BackoffLimitExceeded")
	t.Logf("Wait: %v", err)
	job, err = env.cs.BatchV1().Jobs(ns).Get(ctx, "install-bad", metav1.GetOptions{})
	require.NoError(t, err)
	assert.True(t, jobCondition(job, batchv1.JobFailed) || jobCondition(job, batchv1.JobFailureTarget), "status: %+v", job.Status)

	checkErr := w.Check(ctx)
	require.ErrorIs(t, checkErr, cnibootstrap.ErrFailed)
	require.ErrorAs(t, checkErr, &fe)
	assert.Equal(t, "install-bad", fe.Name)
}

func jobCondition(j *batchv1.Job, typ batchv1.JobConditionType) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == typ && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// TestJobRepeatedFailuresReported replays rke2 #7652: an install Job whose
// chart fails to render fails every attempt, under helm-controller's huge
// backoffLimit, so the Job never says Failed. The first failure shows in
// the progress report at once — failing, with the count and the last
// container's exit code and reason — while Wait goes on; with FailAfter 2
// the second failure ends Wait with a *FailedError (Reason "FailAfter").
// Without FailAfter, Check reports the failures but not as final.
func TestJobRepeatedFailuresReported(t *testing.T) {
	env := nodeCluster(t)
	ns := namespace(t, env.cs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*guard)
	defer cancel()
	const name = "helm-install-rke2-ingress-nginx"
	_, err := env.cs.BatchV1().Jobs(ns).Create(ctx, installJob(ns, name, 1, 1000), metav1.CreateOptions{})
	require.NoError(t, err)

	req := cnibootstrap.JobComplete{Namespace: ns, Job: name, FailAfter: 2}
	rec := newRecorder()
	w, err := cnibootstrap.New(env.clients, []cnibootstrap.Requirement{req}, cnibootstrap.WithProgress(rec.progress), testBackoff())
	require.NoError(t, err)
	errc := waitAsync(ctx, w)
	require.NoError(t, rec.await("reporting the first failure", func(u []cnibootstrap.Unmet) bool {
		r := reason(u, req.Name())
		return strings.Contains(r, "failing: 1 failure (1 failed pod); last: container helm of pod "+name+"-") &&
			strings.Contains(r, "exited with code 1")
	}))
	notReturned(t, errc, "after one failure with FailAfter 2")
	reports := rec.all()
	t.Logf("report after the first failure: %v", reports[len(reports)-1])

	// Without FailAfter the same state is unmet, not failed.
	plain, err := cnibootstrap.New(env.clients, []cnibootstrap.Requirement{cnibootstrap.JobComplete{Namespace: ns, Job: name}})
	require.NoError(t, err)
	checkErr := plain.Check(ctx)
	var ue *cnibootstrap.UnmetError
	require.ErrorAs(t, checkErr, &ue)
	assert.False(t, errors.Is(checkErr, cnibootstrap.ErrFailed), "Check without FailAfter: %v", checkErr)
	assert.Contains(t, ue.Unmet[0].Reason, "failing: ")

	err = result(t, errc)
	require.NoError(t, ctx.Err())
	var fe *cnibootstrap.FailedError
	require.ErrorAs(t, err, &fe, "Wait: %v", err)
	assert.Equal(t, "FailAfter", fe.Reason)
	assert.Equal(t, name, fe.Name)
	assert.Contains(t, fe.Message, "2 failures (2 failed pods)")
	assert.Contains(t, fe.Message, "(FailAfter 2)")
	t.Logf("Wait: %v", err)
	job, err := env.cs.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.False(t, jobCondition(job, batchv1.JobFailed), "the Job itself has not failed: %+v", job.Status)
}

// TestJobFailuresCountedAtExit runs an install Job as helm-controller does
// — restartPolicy OnFailure, so the kubelet restarts the failing container
// in place, after a back-off from the second exit on — on the real Job
// controller and kubelets. With FailAfter 2, Wait ends on the second exit
// as soon as the pod's status shows it, while the container waits out its
// back-off: the pod's RestartCount is still 1 when Wait has returned (it
// counts the first exit only), and the message counts the exit awaiting
// its restart. Counting restarts alone would end the wait one back-off
// later, with RestartCount 2.
func TestJobFailuresCountedAtExit(t *testing.T) {
	env := nodeCluster(t)
	ns := namespace(t, env.cs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*guard)
	defer cancel()
	const name = "helm-install-rke2-canal"
	job := installJob(ns, name, 1, 1000)
	job.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	job, err := env.cs.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{})
	require.NoError(t, err)

	const failAfter = 2
	req := cnibootstrap.JobComplete{Namespace: ns, Job: name, FailAfter: failAfter}
	err = result(t, waitAsync(ctx, mustNew(t, env.clients, req)))
	require.NoError(t, ctx.Err())
	var fe *cnibootstrap.FailedError
	require.ErrorAs(t, err, &fe, "Wait: %v", err)
	t.Logf("Wait: %v", err)

	pods, err := env.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: batchv1.ControllerUidLabel + "=" + string(job.UID)})
	require.NoError(t, err)
	require.Len(t, pods.Items, 1, "restartPolicy OnFailure restarts in place")
	pod := pods.Items[0]
	require.Len(t, pod.Status.ContainerStatuses, 1)
	cs := pod.Status.ContainerStatuses[0]
	t.Logf("pod %s at Wait's return: restarts %d, state %+v, last %+v", pod.Name, cs.RestartCount, cs.State, cs.LastTerminationState)
	assert.Less(t, cs.RestartCount, int32(failAfter), "the kubelet had already restarted the container %d times: the exit was counted late", cs.RestartCount)
	assert.EqualValues(t, failAfter-1, cs.RestartCount, "restarts at Wait's return")
	// The second exit, not yet restarted: terminated, or waiting out the
	// back-off with it as its last termination.
	exited := cs.State.Terminated
	if cs.State.Waiting != nil {
		exited = cs.LastTerminationState.Terminated
	}
	require.NotNil(t, exited, "the container's second run has ended: %+v", cs.State)
	assert.EqualValues(t, 1, exited.ExitCode)

	assert.Equal(t, "FailAfter", fe.Reason)
	assert.Equal(t, name, fe.Name)
	assert.Contains(t, fe.Message, "2 failures (1 container restart, 1 container exit awaiting restart)")
	assert.Contains(t, fe.Message, "; last: container helm of pod "+pod.Name+" exited with code 1 (Error)")
	assert.Contains(t, fe.Message, "(FailAfter 2)")
}

func mustNew(t testing.TB, c cnibootstrap.Clients, reqs ...cnibootstrap.Requirement) *cnibootstrap.Waiter {
	t.Helper()
	w, err := cnibootstrap.New(c, reqs, testBackoff())
	require.NoError(t, err)
	return w
}
