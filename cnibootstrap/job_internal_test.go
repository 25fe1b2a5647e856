package cnibootstrap

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// TestJobFailuresCountEachExitOnce replays, status by status, the
// sequence a real kubelet (the hollow kubelet of internal/testenv) wrote
// for a restartPolicy OnFailure Job whose container exits 1 every run,
// and checks that each exit counts as soon as the status shows it — not
// one back-off later, when RestartCount catches up — and never twice.
// Then the kubelet's other forms: a run that fails to start, a container
// it lost, a pod that failed, restartPolicy Never.
func TestJobFailuresCountEachExitOnce(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 8, 18, 30, 0, time.UTC)
	id := func(run int) string { return "fake://dd7_0_helm_" + string(rune('0'+run)) }
	exit := func(run int, code int32) *corev1.ContainerStateTerminated {
		at := metav1.NewTime(t0.Add(time.Duration(run) * time.Second))
		return &corev1.ContainerStateTerminated{ExitCode: code, Reason: "Error", StartedAt: at, FinishedAt: at, ContainerID: id(run)}
	}
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	backOff := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
	terminated := func(run int) corev1.ContainerState { return corev1.ContainerState{Terminated: exit(run, 1)} }
	cs := func(cid string, restarts int32, state, last corev1.ContainerState) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: "helm", ContainerID: cid, RestartCount: restarts, State: state, LastTerminationState: last}
	}
	none := corev1.ContainerState{}

	steps := []struct {
		name   string
		status corev1.ContainerStatus
		count  int
		says   string
	}{
		{"creating", corev1.ContainerStatus{Name: "helm", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}, 0, ""},
		{"run 0 running", cs(id(0), 0, running, none), 0, ""},
		{"run 0 exited", cs(id(0), 0, terminated(0), none), 1, "1 failure (1 container exit awaiting restart)"},
		{"run 1 running", cs(id(1), 1, running, terminated(0)), 1, "1 failure (1 container restart)"},
		{"run 1 exited", cs(id(1), 1, terminated(1), terminated(0)), 2, "2 failures (1 container restart, 1 container exit awaiting restart)"},
		{"run 1 in back-off", cs(id(1), 1, backOff, terminated(1)), 2, "2 failures (1 container restart, 1 container exit awaiting restart)"},
		{"run 2 running", cs(id(2), 2, running, terminated(1)), 2, "2 failures (2 container restarts)"},
		{"run 2 exited", cs(id(2), 2, terminated(2), terminated(1)), 3, "3 failures (2 container restarts, 1 container exit awaiting restart)"},
		{"run 2 in back-off", cs(id(2), 2, backOff, terminated(2)), 3, "3 failures (2 container restarts, 1 container exit awaiting restart)"},
		{"run 3 running", cs(id(3), 3, running, terminated(2)), 3, "3 failures (3 container restarts)"},
		// Run 3 was created but could not start: RestartCount and
		// ContainerID are run 3's, the termination is run 2's, counted.
		{"run 3 failed to start", cs(id(3), 3, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "RunContainerError"}}, terminated(2)), 3, "3 failures (3 container restarts)"},
		// After run 2's back-off the image pull fails: no run 3 yet.
		{"run 2 image pull error", cs(id(2), 2, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull"}}, terminated(2)), 3, "3 failures (2 container restarts, 1 container exit awaiting restart)"},
		// The kubelet lost running run 3: it invents a termination with
		// no ContainerID and raises RestartCount itself.
		{"run 3 lost", cs(id(3), 4, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "ContainerStatusUnknown"}}, terminated(2)), 4, "4 failures (4 container restarts)"},
		{"run 3 lost, back-off", cs("", 4, backOff, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "ContainerStatusUnknown"}}), 4, "4 failures (4 container restarts)"},
		// A run that succeeded is no failure.
		{"run 3 succeeded", cs(id(3), 3, corev1.ContainerState{Terminated: exit(3, 0)}, terminated(2)), 3, "3 failures (3 container restarts)"},
	}
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j", Namespace: "ns", UID: "job-uid"}}
	for _, s := range steps {
		f := jobFailures(job, []*unstructured.Unstructured{jobPod(t, "p", corev1.RestartPolicyOnFailure, corev1.PodRunning, s.status)})
		assert.Equal(t, s.count, f.count, "%s: %s", s.name, f)
		if s.count > 0 {
			assert.Equal(t, s.says, counts(f), "%s: %s", s.name, f)
			if s.status.LastTerminationState.Terminated != nil || s.status.State.Terminated != nil {
				assert.Contains(t, f.String(), "; last: container helm of pod p exited with code", s.name)
			}
		}
	}

	// The latest exit is the one named, in back-off as at the exit.
	f := jobFailures(job, []*unstructured.Unstructured{jobPod(t, "p", corev1.RestartPolicyOnFailure, corev1.PodRunning, cs(id(1), 1, backOff, terminated(1)))})
	assert.Equal(t, exitString("helm", "p", exit(1, 1)), f.last)
	f = jobFailures(job, []*unstructured.Unstructured{jobPod(t, "p", corev1.RestartPolicyOnFailure, corev1.PodRunning, cs(id(1), 1, terminated(1), terminated(0)))})
	assert.Equal(t, exitString("helm", "p", exit(1, 1)), f.last)

	// A failed pod counts once, with the restarts before it; the exit that
	// ended it is the pod's failure, not another one.
	f = jobFailures(job, []*unstructured.Unstructured{jobPod(t, "p", corev1.RestartPolicyOnFailure, corev1.PodFailed, cs(id(2), 2, terminated(2), terminated(1)))})
	assert.Equal(t, 3, f.count, "%s", f)
	assert.Equal(t, "3 failures (1 failed pod, 2 container restarts)", counts(f))
	// status.failed already counting that pod does not count it again.
	failedJob := job.DeepCopy()
	failedJob.Status.Failed = 1
	f = jobFailures(failedJob, []*unstructured.Unstructured{jobPod(t, "p", corev1.RestartPolicyOnFailure, corev1.PodFailed, cs(id(2), 2, terminated(2), terminated(1)))})
	assert.Equal(t, 3, f.count, "%s", f)

	// restartPolicy Never: a pod whose container exited non-zero cannot
	// succeed; it counts as one failed pod while another container still
	// runs, and still one once its phase says Failed.
	other := corev1.ContainerStatus{Name: "side", ContainerID: "fake://side", State: running}
	never := cs(id(0), 0, terminated(0), none)
	f = jobFailures(job, []*unstructured.Unstructured{jobPod(t, "p", corev1.RestartPolicyNever, corev1.PodRunning, never, other)})
	assert.Equal(t, 1, f.count, "%s", f)
	assert.Equal(t, 1, f.failedPods, "%s", f)
	f = jobFailures(failedJob, []*unstructured.Unstructured{jobPod(t, "p", corev1.RestartPolicyNever, corev1.PodFailed, never, other)})
	assert.Equal(t, 1, f.count, "%s", f)
	// Two exits in one Never pod are one failed pod.
	never2 := never
	never2.Name = "side"
	f = jobFailures(job, []*unstructured.Unstructured{jobPod(t, "p", corev1.RestartPolicyNever, corev1.PodRunning, never, never2)})
	assert.Equal(t, 1, f.count, "%s", f)

	// A sidecar (init container with restartPolicy Always) is restarted
	// even in a Never pod: its exit awaits a restart, the pod goes on.
	sidecar := jobPod(t, "p", corev1.RestartPolicyNever, corev1.PodRunning, cs(id(0), 0, running, none))
	var pod corev1.Pod
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(sidecar.Object, &pod))
	always := corev1.ContainerRestartPolicyAlways
	pod.Spec.InitContainers = []corev1.Container{{Name: "proxy", RestartPolicy: &always}}
	side := cs("fake://proxy_0", 0, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2, ContainerID: "fake://proxy_0"}}, none)
	side.Name = "proxy"
	pod.Status.InitContainerStatuses = []corev1.ContainerStatus{side}
	f = jobFailures(job, []*unstructured.Unstructured{toUnstructured(t, &pod)})
	assert.Equal(t, 1, f.count, "%s", f)
	assert.Zero(t, f.failedPods, "%s", f)
	assert.Equal(t, 1, f.exited, "%s", f)

	// A pod being deleted has its containers killed: not a failure until
	// its phase says Failed.
	deleting := jobPod(t, "p", corev1.RestartPolicyOnFailure, corev1.PodRunning, cs(id(1), 1, corev1.ContainerState{Terminated: exit(1, 137)}, terminated(0)))
	deleting.SetDeletionTimestamp(&metav1.Time{Time: t0})
	f = jobFailures(job, []*unstructured.Unstructured{deleting})
	assert.Equal(t, 1, f.count, "%s", f)
	assert.Zero(t, f.exited, "%s", f)

	// Pods of another Job do not count.
	stranger := jobPod(t, "q", corev1.RestartPolicyOnFailure, corev1.PodRunning, cs(id(0), 0, terminated(0), none))
	stranger.SetOwnerReferences(nil)
	assert.Zero(t, jobFailures(job, []*unstructured.Unstructured{stranger}).count)
}

// jobPod is pod name of the Job with UID job-uid, in phase, with the
// container statuses and a container spec for each.
func jobPod(t *testing.T, name string, policy corev1.RestartPolicy, phase corev1.PodPhase, statuses ...corev1.ContainerStatus) *unstructured.Unstructured {
	t.Helper()
	controller := true
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "batch/v1", Kind: "Job", Name: "j", UID: types.UID("job-uid"), Controller: &controller}}},
		Spec:   corev1.PodSpec{RestartPolicy: policy},
		Status: corev1.PodStatus{Phase: phase, ContainerStatuses: statuses},
	}
	for _, s := range statuses {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: s.Name})
	}
	return toUnstructured(t, p)
}

// counts is a failures report without its "; last: ..." part.
func counts(f failures) string { return strings.SplitN(f.String(), "; last: ", 2)[0] }

func toUnstructured(t *testing.T, p *corev1.Pod) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	require.NoError(t, err)
	return &unstructured.Unstructured{Object: m}
}
