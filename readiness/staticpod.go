package readiness

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// The annotations the kubelet puts on a mirror pod.
const (
	configHashAnnotation   = "kubernetes.io/config.hash"
	configMirrorAnnotation = "kubernetes.io/config.mirror"
)

// PodOption configures StaticPodReady.
type PodOption func(*podCheck) error

// WithExpectedHash requires the mirror pod's kubernetes.io/config.hash
// annotation to equal hash: the pod that is up runs the manifest the
// caller wrote. hash must not be empty.
func WithExpectedHash(hash string) PodOption {
	return func(p *podCheck) error {
		if hash == "" {
			return errors.New("WithExpectedHash: empty hash")
		}
		p.wantHash = hash
		return nil
	}
}

// WithHashChangedFrom requires the mirror pod's kubernetes.io/config.hash
// annotation to differ from old: the pod that is up is the new one, not
// the one that was running before the manifest changed. old must not be
// empty.
func WithHashChangedFrom(old string) PodOption {
	return func(p *podCheck) error {
		if old == "" {
			return errors.New("WithHashChangedFrom: empty hash")
		}
		p.oldHash = old
		return nil
	}
}

// StaticPodReady returns a check that the mirror pod namespace/name of a
// static pod (the kubelet names it "<pod>-<node>", e.g.
// "kube-apiserver-node1" in "kube-system") is up: it exists, is a mirror
// pod (kubernetes.io/config.mirror), is not terminating, is Running with
// its Ready condition True and every container ready, and, with
// WithExpectedHash or WithHashChangedFrom, carries the right
// kubernetes.io/config.hash. The failure names the pod and every
// condition that fails ("mirror pod kube-system/kube-apiserver-node1:
// config hash abc, want def; condition Ready is False").
//
// The check is a Watcher: under Wait it watches that one pod (list and
// watch with the field selector metadata.name=<name>, re-established when
// the server closes it) and judges the pod each watch event carries, so
// Wait reacts in milliseconds, and a short NotReady between two events
// is seen (it fails one attempt and restarts WithStability's count)
// rather than skipped by a later read. While that watch is established,
// an attempt judges the pod as the watch last saw it and makes no
// request, so the requests of a wait do not grow with its length: one
// list and one watch, and one more of each whenever the server ends the
// watch (kube-apiserver does every 30 to 60 minutes by default). Before
// the watch is up, while it is re-established, and outside Wait, each
// check is one GET. A broken watch is retried with a backoff capped
// at 2 s (3 s with jitter), because the pod watched is often the
// apiserver's own: after that apiserver restarts, the watch is back
// within seconds, however long Wait's backoff floor (by default
// DefaultWatchMaxDelay for this check).
//
// RBAC: get, list and watch on pods in namespace (a Role is enough).
// 401/403 failures wrap ErrAccessDenied; no HTTP answer wraps
// ErrUnreachable; an error the client raises from its own configuration
// before sending anything, which no retry can fix (a host whose port is
// out of range, "dial tcp: address 99999: invalid port"), is a permanent
// ErrInvalid error. Watch events for other pods (a server or a fake
// client that does not apply the field selector sends them) are ignored.
//
// A nil client (a typed nil too: a nil *kubernetes.Clientset, a nil
// *fake.Clientset, any nil pointer), an empty namespace or name, or a
// bad option makes every call fail with a permanent ErrInvalid error
// naming the argument. A panic in the client is recovered and fails the
// check with a permanent error wrapping ErrPanic. StaticPodReady does not
// block; the check is safe for concurrent use.
func StaticPodReady(c kubernetes.Interface, namespace, name string, opts ...PodOption) Check {
	p := &podCheck{c: c, ns: namespace, name: name}
	switch {
	case isNil(c):
		p.bad = nilArg("StaticPodReady", "kubernetes.Interface", c)
	case namespace == "":
		p.bad = invalid("StaticPodReady: empty namespace")
	case name == "":
		p.bad = invalid("StaticPodReady: empty pod name")
	default:
		p.bad = applyOptions("StaticPodReady", p, opts)
	}
	return p
}

type podCheck struct {
	c        kubernetes.Interface
	ns, name string
	wantHash string
	oldHash  string
	bad      error
}

func (p *podCheck) Name() string { return "mirror pod " + p.ns + "/" + p.name }

func (p *podCheck) Check(ctx context.Context) error {
	if p.bad != nil {
		return p.bad
	}
	if st := p.state(ctx); st != nil {
		if err, ok := st.take(p); ok {
			return err
		}
	}
	return settle(p.guard(func() error {
		pod, err := p.c.CoreV1().Pods(p.ns).Get(ctx, p.name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) {
				return p.verdict(nil)
			}
			return fmt.Errorf("%s: %w", p.Name(), classifyHTTP(err))
		}
		return p.verdict(pod)
	}))
}

// guard runs f, which calls into the client, turning a panic into the
// check's permanent failure.
func (p *podCheck) guard(f func() error) error {
	return protect(p.Name()+": the kubernetes.Interface", f)
}

// verdict is the check's result for pod as seen (nil: not found).
func (p *podCheck) verdict(pod *corev1.Pod) error {
	if pod == nil {
		return fmt.Errorf("%s: not found", p.Name())
	}
	if problems := p.evaluate(pod); len(problems) > 0 {
		return fmt.Errorf("%s: %s", p.Name(), strings.Join(problems, "; "))
	}
	return nil
}

// podState is what the pod watch of one Wait has seen (see session).
type podState struct {
	mu      sync.Mutex
	synced  bool        // pod is what the server has: listed, and the watch open since
	pod     *corev1.Pod // nil: not found
	failed  error       // the last failing verdict of an event since the last attempt
	changed func()      // the change signal of the Watch feeding this state
}

func (p *podCheck) state(ctx context.Context) *podState {
	return sessionState(ctx, p, func() *podState { return &podState{} })
}

// take judges the pod as last seen, if it is known. A failing verdict of
// an event since the last attempt wins over a passing current one, so a
// short NotReady between two attempts is seen; the change signal then
// makes Wait look again at once.
func (st *podState) take(p *podCheck) (error, bool) {
	st.mu.Lock()
	if !st.synced {
		st.mu.Unlock()
		return nil, false
	}
	err, failed, changed := p.verdict(st.pod), st.failed, st.changed
	st.failed = nil
	st.mu.Unlock()
	if err == nil && failed != nil {
		if changed != nil {
			changed()
		}
		return failed, true
	}
	return err, true
}

// see records the pod carried by a list or a watch event (nil: gone).
func (st *podState) see(p *podCheck, pod *corev1.Pod, fresh bool) {
	v := p.verdict(pod)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.synced, st.pod = true, pod
	if fresh {
		st.failed = nil
	}
	if v != nil {
		st.failed = v
	}
}

// unsync marks the state as no longer followed by a watch: attempts read
// the server until the next list.
func (st *podState) unsync() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.synced = false
}

// isMine reports whether pod is the one the check watches: its name, and
// its namespace when it has one.
func (p *podCheck) isMine(pod *corev1.Pod) bool {
	return pod != nil && pod.Name == p.name && (pod.Namespace == "" || pod.Namespace == p.ns)
}

// evaluate lists what keeps pod from being the ready mirror pod wanted.
func (p *podCheck) evaluate(pod *corev1.Pod) []string {
	var problems []string
	if _, ok := pod.Annotations[configMirrorAnnotation]; !ok {
		problems = append(problems, "not a mirror pod (no "+configMirrorAnnotation+" annotation)")
	}
	return append(problems, p.judge(pod)...)
}

// judge lists what keeps pod, a mirror pod from the apiserver or a static
// pod from its kubelet, from being up: terminating, the wrong config hash,
// not Running, not Ready, a container not ready. Both sources share it.
func (p *podCheck) judge(pod *corev1.Pod) []string {
	var problems []string
	if ts := pod.DeletionTimestamp; ts != nil {
		problems = append(problems, "terminating (deletion requested at "+ts.UTC().Format(time.RFC3339)+")")
	}
	hash, hasHash := pod.Annotations[configHashAnnotation]
	switch {
	case (p.wantHash != "" || p.oldHash != "") && !hasHash:
		problems = append(problems, "no "+configHashAnnotation+" annotation")
	case p.wantHash != "" && hash != p.wantHash:
		problems = append(problems, fmt.Sprintf("config hash %s, want %s", hash, p.wantHash))
	case p.oldHash != "" && hash == p.oldHash:
		problems = append(problems, fmt.Sprintf("config hash %s is still the old one", hash))
	}
	if pod.Status.Phase != corev1.PodRunning {
		phase := string(pod.Status.Phase)
		if phase == "" {
			phase = "unknown (no status yet)"
		}
		problems = append(problems, "phase "+phase)
	}
	problems = append(problems, readyCondition(pod)...)
	problems = append(problems, containersReady(pod)...)
	return problems
}

func readyCondition(pod *corev1.Pod) []string {
	for _, c := range pod.Status.Conditions {
		if c.Type != corev1.PodReady {
			continue
		}
		if c.Status == corev1.ConditionTrue {
			return nil
		}
		s := "condition Ready is " + string(c.Status)
		if c.Reason != "" || c.Message != "" {
			s += " (" + strings.TrimSpace(c.Reason+" "+c.Message) + ")"
		}
		return []string{s}
	}
	return []string{"no Ready condition"}
}

func containersReady(pod *corev1.Pod) []string {
	statuses := make(map[string]corev1.ContainerStatus, len(pod.Status.ContainerStatuses))
	for _, s := range pod.Status.ContainerStatuses {
		statuses[s.Name] = s
	}
	var problems []string
	for _, c := range pod.Spec.Containers {
		s, ok := statuses[c.Name]
		switch {
		case !ok:
			problems = append(problems, "container "+c.Name+" has no status")
		case !s.Ready:
			problems = append(problems, "container "+c.Name+" not ready"+containerState(s.State))
		}
	}
	return problems
}

func containerState(st corev1.ContainerState) string {
	switch {
	case st.Waiting != nil && st.Waiting.Reason != "":
		return " (waiting: " + st.Waiting.Reason + ")"
	case st.Terminated != nil:
		return fmt.Sprintf(" (terminated: %s, exit code %d)", st.Terminated.Reason, st.Terminated.ExitCode)
	}
	return ""
}

// podWatchRetryMax caps the delay before re-establishing a broken pod
// watch. It is short because the watch is what makes Wait react when its
// backoff floor is long, and the pod watched is often the apiserver's
// own: the watch breaks exactly when that apiserver restarts, and must be
// back soon after it is. One list and one watch of a single pod every
// couple of seconds is cheap.
const podWatchRetryMax = 2 * time.Second

// newPodWatchRetry returns the backoff between attempts to re-establish
// the pod watch: from 100 ms, doubling, capped at podWatchRetryMax (plus
// up to half of it in jitter), never giving up.
func newPodWatchRetry() backoff.BackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMaxInterval(podWatchRetryMax),
		backoff.WithMaxElapsedTime(0),
	)
}

// Watch lists and watches the one pod until ctx ends, calling changed
// after every (re-)list and on every event for that pod; events for other
// pods (a server or fake client that does not apply the field selector
// sends them) are ignored. Under Wait, it records what each list and
// event carries for Wait's attempts to judge. Failures are retried with
// an exponential backoff capped at podWatchRetryMax, except those no
// retry can fix: an error wrapping ErrInvalid (raised by the client
// before anything was sent, see StaticPodReady) is returned, permanent.
// A nil changed is a permanent ErrInvalid error; a panic in the client is
// recovered and returned as a permanent error wrapping ErrPanic.
func (p *podCheck) Watch(ctx context.Context, changed func()) error {
	if p.bad != nil {
		return p.bad
	}
	if changed == nil {
		return invalid("%s: Watch: nil changed func", p.Name())
	}
	st := p.state(ctx)
	if st != nil {
		st.mu.Lock()
		st.changed = changed
		st.mu.Unlock()
	}
	log := logr.FromContextOrDiscard(ctx).WithValues("pod", p.ns+"/"+p.name)
	selector := fields.OneTermEqualSelector("metadata.name", p.name).String()
	retry := newPodWatchRetry()
	for {
		err := p.guard(func() error {
			return p.watchOnce(ctx, p.c.CoreV1().Pods(p.ns), selector, changed, retry, st)
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrPanic) {
			return err
		}
		if errors.Is(err, ErrInvalid) {
			return settle(err)
		}
		delay := retry.NextBackOff()
		if err != nil {
			log.V(1).Info("pod watch failed; retrying", "err", errString(err), "in", delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

type podLister interface {
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// watchOnce lists, signals, and follows the watch until it ends, feeding
// st (if not nil) with what they carry. It returns nil when the server
// closed the watch, an error otherwise.
func (p *podCheck) watchOnce(ctx context.Context, pods podLister, selector string, changed func(), retry backoff.BackOff, st *podState) error {
	if st != nil {
		defer st.unsync()
	}
	list, err := pods.List(ctx, metav1.ListOptions{FieldSelector: selector})
	if err != nil {
		return fmt.Errorf("list %s: %w", p.Name(), classifyHTTP(err))
	}
	if list == nil {
		return fmt.Errorf("list %s: the client returned no list and no error", p.Name())
	}
	if st != nil {
		var pod *corev1.Pod
		for i := range list.Items {
			if p.isMine(&list.Items[i]) {
				pod = &list.Items[i]
			}
		}
		st.see(p, pod, true)
	}
	changed() // changes before the list were not seen as events
	w, err := pods.Watch(ctx, metav1.ListOptions{
		FieldSelector:       selector,
		ResourceVersion:     list.ResourceVersion,
		AllowWatchBookmarks: true,
	})
	if err != nil {
		return fmt.Errorf("watch %s: %w", p.Name(), classifyHTTP(err))
	}
	if isNil(w) {
		return fmt.Errorf("watch %s: the client returned no watch and no error", p.Name())
	}
	defer w.Stop()
	retry.Reset()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-w.ResultChan():
			switch {
			case !ok:
				return nil
			case ev.Type == watch.Error:
				return fmt.Errorf("watch %s: %w", p.Name(), apierrors.FromObject(ev.Object))
			case ev.Type == watch.Bookmark:
			default:
				pod, isPod := ev.Object.(*corev1.Pod)
				switch {
				case !isPod:
					// Not a pod: attempts read the server until the
					// next list.
					return fmt.Errorf("watch %s: unexpected %T in a %s event", p.Name(), ev.Object, ev.Type)
				case !p.isMine(pod):
					// Another pod, from a server (or a fake client)
					// that did not apply the field selector: nothing
					// this check looks at changed.
					continue
				case st == nil:
				case ev.Type == watch.Deleted:
					st.see(p, nil, false)
				default:
					st.see(p, pod, false)
				}
				changed()
			}
		}
	}
}
