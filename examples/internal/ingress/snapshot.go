package ingress

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Pods counts the pods of one version of a component.
type Pods struct {
	// Live counts pods that have not Succeeded or Failed, terminating
	// ones included: they still run.
	Live int
	// Terminating counts the live pods being deleted.
	Terminating int
	// Ready counts live pods, not terminating, whose Ready condition is
	// True.
	Ready int
	// Nodes counts the distinct nodes of the live pods.
	Nodes int
}

// Snapshot is the add-on's state as the cluster (and the webhook servers'
// own log) shows it at one moment, read directly — not through the waits
// that gate the hooks.
type Snapshot struct {
	// Hook is the hook at whose start it was read, or "after".
	Hook string
	At   time.Time
	// JobVersion is the release of the install Job ("" if there is none);
	// JobComplete says it has the Complete condition.
	JobVersion  string
	JobComplete bool
	// JobFailures counts its failed pods, container restarts and a latest
	// exit not yet restarted (as cnibootstrap.JobComplete counts), and
	// JobLastExit is the last non-zero exit code of its containers.
	JobFailures int
	JobLastExit int32
	// Backend and Controller count the pods by release.
	Backend, Controller map[string]Pods
	// BackendGeneration and ControllerGeneration are the workloads'
	// metadata.generation (0 if absent).
	BackendGeneration, ControllerGeneration int64
	// WebhookVersion is the release the webhook configuration points at.
	WebhookVersion string
	// Ingresses maps each Ingress of the add-on to its release.
	Ingresses map[string]string
	// Calls counts the requests the webhook servers answered so far.
	Calls int
}

// String is the snapshot on one line, for the timeline.
func (s Snapshot) String() string {
	job := "none"
	if s.JobVersion != "" {
		job = s.JobVersion
		if s.JobComplete {
			job += " complete"
		}
		if s.JobFailures > 0 {
			job += fmt.Sprintf(" %d failures (last exit %d)", s.JobFailures, s.JobLastExit)
		}
	}
	ing := make([]string, 0, len(s.Ingresses))
	for name, v := range s.Ingresses {
		ing = append(ing, name+"="+v)
	}
	slices.Sort(ing)
	webhook := s.WebhookVersion
	if webhook == "" {
		webhook = "none"
	}
	return fmt.Sprintf("job %s; backend %s; controller %s; webhook %s (%d calls); ingresses [%s]",
		job, podsString(s.Backend), podsString(s.Controller), webhook, s.Calls, strings.Join(ing, " "))
}

func podsString(m map[string]Pods) string {
	if len(m) == 0 {
		return "no pods"
	}
	vs := make([]string, 0, len(m))
	for v := range m {
		vs = append(vs, v)
	}
	slices.Sort(vs)
	parts := make([]string, len(vs))
	for i, v := range vs {
		p := m[v]
		parts[i] = fmt.Sprintf("%s %d/%d ready", v, p.Ready, p.Live)
		if p.Terminating > 0 {
			parts[i] += fmt.Sprintf(" (%d terminating)", p.Terminating)
		}
	}
	return strings.Join(parts, ", ")
}

// Snapshot reads the add-on's state from the cluster now.
func (a *Addon) Snapshot(ctx context.Context, hook string) (Snapshot, error) {
	ns, kube := a.opts.Namespace, a.opts.Kube
	s := Snapshot{Hook: hook, At: time.Now(), Ingresses: map[string]string{}}
	var err error
	if s.Backend, err = a.pods(ctx, "default-backend"); err != nil {
		return s, err
	}
	if s.Controller, err = a.pods(ctx, "controller"); err != nil {
		return s, err
	}
	if d, err := kube.AppsV1().Deployments(ns).Get(ctx, Backend, metav1.GetOptions{}); err == nil {
		s.BackendGeneration = d.Generation
	} else if !apierrors.IsNotFound(err) {
		return s, err
	}
	if d, err := kube.AppsV1().DaemonSets(ns).Get(ctx, Controller, metav1.GetOptions{}); err == nil {
		s.ControllerGeneration = d.Generation
	} else if !apierrors.IsNotFound(err) {
		return s, err
	}
	if err := a.job(ctx, &s); err != nil {
		return s, err
	}
	cfg, err := kube.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, a.WebhookConfiguration(), metav1.GetOptions{})
	if err == nil {
		s.WebhookVersion = cfg.Labels[LabelVersion]
	} else if !apierrors.IsNotFound(err) {
		return s, err
	}
	list, err := kube.NetworkingV1().Ingresses(ns).List(ctx, metav1.ListOptions{LabelSelector: LabelName + "=" + Chart})
	if err != nil {
		return s, err
	}
	for _, ing := range list.Items {
		s.Ingresses[ing.Name] = ing.Labels[LabelVersion]
	}
	s.Calls = len(a.Calls())
	return s, nil
}

// pods counts the component's pods by release.
func (a *Addon) pods(ctx context.Context, component string) (map[string]Pods, error) {
	list, err := a.opts.Kube.CoreV1().Pods(a.opts.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(selector(component)).String()})
	if err != nil {
		return nil, err
	}
	out := map[string]Pods{}
	nodes := map[string]map[string]bool{}
	for _, p := range list.Items {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		v := p.Labels[LabelVersion]
		c := out[v]
		c.Live++
		if p.DeletionTimestamp != nil {
			c.Terminating++
		} else if podReady(&p) {
			c.Ready++
		}
		if nodes[v] == nil {
			nodes[v] = map[string]bool{}
		}
		if p.Spec.NodeName != "" && !nodes[v][p.Spec.NodeName] {
			nodes[v][p.Spec.NodeName] = true
			c.Nodes++
		}
		out[v] = c
	}
	return out, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// job reads the install Job and counts its pods' failures.
func (a *Addon) job(ctx context.Context, s *Snapshot) error {
	job, err := a.opts.Kube.BatchV1().Jobs(a.opts.Namespace).Get(ctx, ChartJob, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	s.JobVersion = job.Labels[LabelVersion]
	for _, c := range job.Status.Conditions {
		if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
			s.JobComplete = true
		}
	}
	pods, err := a.opts.Kube.CoreV1().Pods(a.opts.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: batchv1.ControllerUidLabel + "=" + string(job.UID)})
	if err != nil {
		return err
	}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodFailed {
			s.JobFailures++
		}
		for _, cs := range p.Status.ContainerStatuses {
			s.JobFailures += int(cs.RestartCount)
			// The latest run's exit is not in RestartCount until the
			// kubelet starts the next run, after its back-off: count it
			// from the status that shows it (the run's own ContainerID).
			t := cs.State.Terminated
			if cs.State.Waiting != nil {
				t = cs.LastTerminationState.Terminated
			}
			if p.Status.Phase != corev1.PodFailed && p.DeletionTimestamp == nil && t != nil && t.ExitCode != 0 &&
				cs.ContainerID != "" && t.ContainerID == cs.ContainerID {
				s.JobFailures++
			}
			for _, t := range []*corev1.ContainerStateTerminated{cs.LastTerminationState.Terminated, cs.State.Terminated} {
				if t != nil && t.ExitCode != 0 {
					s.JobLastExit = t.ExitCode
				}
			}
		}
	}
	return nil
}
