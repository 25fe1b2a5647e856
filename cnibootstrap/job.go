package cnibootstrap

import (
	"fmt"
	"slices"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

var jobGVR = batchv1.SchemeGroupVersion.WithResource("jobs")

// JobComplete requires a Job to have the Complete condition — an install
// Job such as RKE2's helm-install-<chart>, which helm-controller runs with
// a very large backoffLimit, so that a chart that fails to render (rke2
// #7652) makes its pods fail again and again while the Job itself may
// never say Failed. Its Name is "job <namespace>/<job> complete".
//
// While the Job is not complete the reason says how it is doing, and as
// soon as an attempt fails it says so: "failing: 2 failures (2 failed
// pods); last: container helm of pod helm-install-x-abcde exited with code
// 1 (Error)". Failures are the Job's status.failed (or its failed pods, if
// more are seen), plus the container restarts of its pods (restartPolicy
// OnFailure restarts in place, as helm-controller's Jobs do), plus, in its
// pods not failed, each container whose latest run ended with a non-zero
// code and awaits its restart. So each exit counts once, as soon as the
// pod's status shows it — while the container waits out the kubelet's
// back-off (CrashLoopBackOff), not only once the kubelet restarts it. A
// pod that cannot succeed any more (restartPolicy Never and a container
// that exited non-zero) counts as failed before its phase says Failed. A
// pod being deleted has its containers killed: its exits not yet restarted
// count only once its phase says Failed.
//
// Final failures, which end Wait at once with a *FailedError naming the
// Job: the Failed condition (or FailureTarget, which the Job controller
// sets first and never takes back), with its reason such as
// BackoffLimitExceeded or DeadlineExceeded; and, when FailAfter is set,
// FailAfter failures (Reason "FailAfter"). A suspended Job is not a
// failure: the reason says "suspended".
//
// Prefer it to ObjectReady for Jobs: kstatus counts a Job that has started
// (or is suspended) as Current.
//
// The Job is followed with a list and a watch narrowed by name, its pods
// with a list and a watch narrowed by the Job's spec.selector (its
// controller-uid label, so the pods of an earlier Job of the same name do
// not count).
type JobComplete struct {
	// Namespace is the Job's namespace; it must be set.
	Namespace string
	// Job is the Job's name.
	Job string
	// FailAfter, when positive, fails the wait once the Job has failed
	// that many times; 0 waits for the Job's own Failed condition.
	FailAfter int
}

// Name returns "job <namespace>/<job> complete".
func (r JobComplete) Name() string { return "job " + r.Namespace + "/" + r.Job + " complete" }

func (r JobComplete) validate() error {
	switch {
	case r.Job == "":
		return invalid("JobComplete in %q: empty Job name", r.Namespace)
	case r.Namespace == "":
		return invalid("JobComplete %q: empty Namespace", r.Job)
	case r.FailAfter < 0:
		return invalid("JobComplete %s/%s: negative FailAfter %d", r.Namespace, r.Job, r.FailAfter)
	}
	return validNames("JobComplete", r.Namespace, r.Job)
}

func (r JobComplete) key() objKey { return objKey{gvr: jobGVR, namespace: r.Namespace, name: r.Job} }

func (r JobComplete) pods() setKey { return setKey{gvr: podGVR, namespace: r.Namespace, from: r.key()} }

func (r JobComplete) needs() needs {
	return needs{objects: []objKey{r.key()}, sets: []setKey{r.pods()}}
}

func (r JobComplete) eval(v *view, _ int) *Unmet {
	obj, u := v.object(r.Name(), r.key())
	if u != nil {
		return u
	}
	var job batchv1.Job
	if err := decode(obj, &job); err != nil {
		return &Unmet{Requirement: r.Name(), Reason: err.Error(), Err: err}
	}
	failed := func(reason, msg string) *Unmet {
		fe := &FailedError{Requirement: r.Name(), Kind: "Job", Namespace: job.Namespace, Name: job.Name, Reason: reason, Message: msg}
		return &Unmet{Requirement: r.Name(), Reason: "failed: " + reason + ": " + msg, Err: fe}
	}
	// Pods may not be known yet: the conditions alone decide Complete and
	// Failed.
	var pods []*unstructured.Unstructured
	podsUnmet := (*Unmet)(nil)
	if specSelector(obj) != "" {
		pods, podsUnmet = v.members(r.Name(), r.pods(), "pods")
	}
	f := jobFailures(&job, pods)
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return nil
		case batchv1.JobFailed, batchv1.JobFailureTarget:
			msg := c.Message
			if f.count > 0 {
				msg += "; " + f.String()
			}
			return failed(c.Reason, strings.TrimPrefix(msg, "; "))
		}
	}
	if r.FailAfter > 0 && f.count >= r.FailAfter {
		return failed("FailAfter", fmt.Sprintf("%s (FailAfter %d)", f.String(), r.FailAfter))
	}
	s := job.Status
	why := fmt.Sprintf("not complete: %d active, %d succeeded", s.Active, s.Succeeded)
	if job.Spec.Completions != nil {
		why += fmt.Sprintf(" of %d", *job.Spec.Completions)
	}
	if job.Spec.Suspend != nil && *job.Spec.Suspend {
		why = "suspended; " + why
	}
	if f.count > 0 {
		why += "; failing: " + f.String()
	}
	var err error
	if podsUnmet != nil {
		why += "; " + podsUnmet.Reason
		err = podsUnmet.Err
	}
	return &Unmet{Requirement: r.Name(), Reason: why, Err: err}
}

// failures counts a Job's failed attempts and describes the last one.
type failures struct {
	count      int
	failedPods int
	restarts   int
	// exited counts the containers whose latest run ended non-zero and
	// is not yet in their RestartCount (the kubelet restarts them, after
	// its back-off).
	exited int
	last   string
}

func (f failures) String() string {
	var parts []string
	if f.failedPods > 0 {
		parts = append(parts, plural(f.failedPods, "failed pod", "failed pods"))
	}
	if f.restarts > 0 {
		parts = append(parts, plural(f.restarts, "container restart", "container restarts"))
	}
	if f.exited > 0 {
		parts = append(parts, plural(f.exited, "container exit", "container exits")+" awaiting restart")
	}
	s := plural(f.count, "failure", "failures") + " (" + strings.Join(parts, ", ") + ")"
	if f.last != "" {
		s += "; last: " + f.last
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// jobFailures counts the Job's failures: status.failed or the pods seen
// failed, whichever is more, plus every container restart of its pods and,
// in the pods not failed, every exit not yet restarted; and finds the most
// recent failed container (or failed pod).
func jobFailures(job *batchv1.Job, objs []*unstructured.Unstructured) failures {
	var f failures
	podsFailed := 0
	var lastAt time.Time
	note := func(at time.Time, what string) {
		if f.last == "" || at.After(lastAt) {
			f.last, lastAt = what, at
		}
	}
	for _, o := range objs {
		var p corev1.Pod
		if decode(o, &p) != nil || !controlledBy(o, job.UID) {
			continue
		}
		found := false
		exited, doomed := 0, false
		statuses := slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses)
		for _, cs := range statuses {
			f.restarts += int(cs.RestartCount)
			// A pod being deleted has its containers killed: those exits
			// are not the Job's failures.
			if p.DeletionTimestamp == nil && pendingExit(cs) != nil {
				if restartsOnFailure(&p, cs.Name) {
					exited++
				} else {
					doomed = true
				}
			}
			for _, t := range []*corev1.ContainerStateTerminated{cs.State.Terminated, cs.LastTerminationState.Terminated} {
				if t != nil && t.ExitCode != 0 {
					found = true
					note(t.FinishedAt.Time, exitString(cs.Name, p.Name, t))
				}
			}
		}
		// A failed pod counts once, whatever exit ended it.
		switch {
		case p.Status.Phase == corev1.PodFailed || doomed:
			podsFailed++
		default:
			f.exited += exited
		}
		if !found && p.Status.Phase == corev1.PodFailed {
			what := "pod " + p.Name + " failed"
			if p.Status.Reason != "" {
				what += ": " + p.Status.Reason
			}
			if p.Status.Message != "" {
				what += ": " + p.Status.Message
			}
			at := p.CreationTimestamp.Time
			if p.DeletionTimestamp != nil {
				at = p.DeletionTimestamp.Time
			}
			note(at, what)
		}
	}
	f.failedPods = max(int(job.Status.Failed), podsFailed)
	f.count = f.failedPods + f.restarts + f.exited
	return f
}

// pendingExit returns the termination of a container's latest run when it
// ended with a non-zero code that its RestartCount does not count yet, or
// nil.
//
// The kubelet's status for a container describes its latest run: its
// ContainerID, and RestartCount (the number of runs before it). When that
// run has ended, State is Terminated with the same ContainerID; during
// the back-off before the restart, State is Waiting (CrashLoopBackOff, or
// the error that keeps the next run from being created) and
// LastTerminationState holds the run's termination, still with the same
// ContainerID. Once the kubelet has created the next run (even one that
// then fails to start), ContainerID and RestartCount move on and
// LastTerminationState is a counted run. A termination the kubelet
// invents for a container it lost (ContainerStatusUnknown, no
// ContainerID) comes with RestartCount raised, or with the pod being
// deleted. So an exit is pending exactly when its ContainerID is the
// status's own.
func pendingExit(cs corev1.ContainerStatus) *corev1.ContainerStateTerminated {
	var t *corev1.ContainerStateTerminated
	switch {
	case cs.State.Terminated != nil:
		t = cs.State.Terminated
	case cs.State.Waiting != nil:
		t = cs.LastTerminationState.Terminated
	}
	if t == nil || t.ExitCode == 0 || cs.ContainerID == "" || t.ContainerID != cs.ContainerID {
		return nil
	}
	return t
}

// restartsOnFailure reports whether the kubelet restarts the named
// container of p after a non-zero exit: the container's own restartPolicy
// (a sidecar's Always) if it has one, else the pod's (OnFailure and Always
// restart, Never does not).
func restartsOnFailure(p *corev1.Pod, name string) bool {
	for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
		if c.Name == name && c.RestartPolicy != nil {
			return *c.RestartPolicy != corev1.ContainerRestartPolicyNever
		}
	}
	return p.Spec.RestartPolicy != corev1.RestartPolicyNever
}

// exitString is "container <c> of pod <p> exited with code <n> (<reason>)".
func exitString(container, pod string, t *corev1.ContainerStateTerminated) string {
	s := fmt.Sprintf("container %s of pod %s exited with code %d", container, pod, t.ExitCode)
	switch {
	case t.Reason != "" && t.Message != "":
		s += " (" + t.Reason + ": " + t.Message + ")"
	case t.Reason != "":
		s += " (" + t.Reason + ")"
	case t.Message != "":
		s += " (" + t.Message + ")"
	}
	return s
}
