package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeboot/kubeboot/readiness"
)

// hashAnnotation is where the kubelet puts a static pod's config hash on
// its mirror pod.
const hashAnnotation = "kubernetes.io/config.hash"

// StaticPodUpgrade is the static-pod-upgrade fault's evidence, read from
// outside the gates: the kube-apiserver process and mirror pod before and
// after, and what every hook attempt saw as it started.
type StaticPodUpgrade struct {
	Node string
	// OldPID and NewPID are the kube-apiserver processes before and after.
	OldPID, NewPID int
	// OldHash and NewHash are the mirror pod's config hashes; OldUID and
	// NewUID its UIDs.
	OldHash, NewHash string
	OldUID, NewUID   string
	// MirrorReplaced is how long after the manifest was rewritten the
	// new mirror pod was created, and MirrorReady when it turned Ready.
	MirrorReplaced, MirrorReady time.Duration
	// HeldOnOldPod counts gate attempts that failed because the mirror
	// pod was still the old one: where a gate that does not compare
	// hashes would have let the hooks run.
	HeldOnOldPod int
	// Attempts is what every hook attempt saw as it started.
	Attempts []UpgradeSeen
}

// UpgradeSeen is what one hook attempt saw as it started.
type UpgradeSeen struct {
	Hook  string
	At    time.Time
	PID   int    // the node's kube-apiserver process (0: none running)
	Hash  string // the mirror pod's config hash ("" if unreadable)
	Ready bool   // the mirror pod's Ready condition
	Err   error  // reading the mirror pod
}

// podUpgrade replays rke2 #8269: as the bootstrap hooks are about to run,
// node 1's kube-apiserver is upgraded in place — its process stopped, its
// static-pod manifest rewritten (a new generation, so a new config hash),
// its process started again — while the kubelet replaces the mirror pod.
// The fake runtime of the hollow kubelet runs nothing, so the demo stops
// and starts the process itself, in the order a kubelet would (the old
// container is killed before the new one starts).
type podUpgrade struct {
	d    *demo
	n    *cpNode
	kube kubernetes.Interface
	at   time.Time // the manifest was rewritten

	mu      sync.Mutex
	ev      StaticPodUpgrade
	restart chan error    // the process's restart, once
	done    chan struct{} // closed when the restart goroutine has ended
}

// beginStaticPodUpgrade waits until node 1's apiserver mirror pod is the
// Ready pod of generation 1, then stops the process, rewrites the manifest
// and starts the process again in the background, bounded by ctx. It
// returns once the manifest is rewritten. A restart that fails is passed
// to onFail (when not nil); wait waits for the restart to end.
func (d *demo) beginStaticPodUpgrade(ctx context.Context, kube kubernetes.Interface, onFail func(error)) (*podUpgrade, error) {
	n := d.nodes[0]
	name := mirrorPod(apiServerPodName, n.name)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	err := readiness.Wait(wctx, readiness.StaticPodReady(kube, staticPodNamespace, name))
	cancel()
	if err != nil {
		return nil, fmt.Errorf("before the upgrade: %w", err)
	}
	old, err := kube.CoreV1().Pods(staticPodNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	u := &podUpgrade{d: d, n: n, kube: kube, restart: make(chan error, 1), done: make(chan struct{})}
	u.ev = StaticPodUpgrade{Node: n.name, OldPID: n.api.PID(), OldHash: old.Annotations[hashAnnotation], OldUID: string(old.UID)}
	if u.ev.OldHash == "" {
		return nil, fmt.Errorf("mirror pod %s has no %s annotation", name, hashAnnotation)
	}
	d.tl.Record(n.name, "fault", "injected", fmt.Sprintf("kube-apiserver upgrade: process %d stopped, manifest rewritten (generation %d → %d), process restarting; mirror pod %s has hash %s",
		u.ev.OldPID, n.generation, n.generation+1, name, u.ev.OldHash))
	if err := n.api.Stop(); err != nil {
		return nil, err
	}
	n.generation++
	if err := n.kubelet.WriteStaticPod(apiServerManifest(n.api, n.generation)); err != nil {
		return nil, err
	}
	u.at = time.Now()
	go func() {
		defer close(u.done)
		d.tl.Record(n.name, "kube-apiserver restart", "begin", "")
		err := n.api.Start(ctx)
		if err != nil {
			d.tl.Record(n.name, "kube-apiserver restart", "failed", err.Error())
			if onFail != nil {
				onFail(fmt.Errorf("static-pod-upgrade: the kube-apiserver did not come back: %w", err))
			}
		} else {
			d.tl.Record(n.name, "kube-apiserver restart", "ok", fmt.Sprintf("process %d", n.api.PID()))
		}
		u.restart <- err
	}()
	return u, nil
}

// wait waits until the restart goroutine has ended (it ends with the
// context beginStaticPodUpgrade was given).
func (u *podUpgrade) wait() { <-u.done }

// gateOptions are the options of the gate's mirror-pod check: only a
// mirror pod whose hash changed from the old one can pass.
func (u *podUpgrade) gateOptions() []readiness.PodOption {
	return []readiness.PodOption{readiness.WithHashChangedFrom(u.ev.OldHash)}
}

// gateAttempt counts the gate attempts held on the old mirror pod.
func (u *podUpgrade) gateAttempt(a readiness.Attempt) {
	if a.Err != nil && strings.Contains(a.Err.Error(), "is still the old one") {
		u.mu.Lock()
		u.ev.HeldOnOldPod++
		u.mu.Unlock()
	}
}

// seen records what a hook attempt sees as it starts: the process that
// serves, and the mirror pod, read with the hook's own context.
func (u *podUpgrade) seen(ctx context.Context, hook string) {
	s := UpgradeSeen{Hook: hook, At: time.Now(), PID: u.n.api.PID()}
	pod, err := u.kube.CoreV1().Pods(staticPodNamespace).Get(ctx, mirrorPod(apiServerPodName, u.n.name), metav1.GetOptions{})
	if err != nil {
		s.Err = err
	} else {
		s.Hash, s.Ready = pod.Annotations[hashAnnotation], podReady(pod)
	}
	u.mu.Lock()
	u.ev.Attempts = append(u.ev.Attempts, s)
	u.mu.Unlock()
}

// observe waits for the restart, reads the mirror pod as it is now, and
// checks the evidence: a new process and a new mirror pod, Ready; every
// hook attempt started on the new process, with the new mirror pod Ready.
func (u *podUpgrade) observe(ctx context.Context) (*StaticPodUpgrade, error) {
	select {
	case err := <-u.restart:
		if err != nil {
			return nil, fmt.Errorf("the kube-apiserver did not come back: %w", err)
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	name := mirrorPod(apiServerPodName, u.n.name)
	pod, err := u.kube.CoreV1().Pods(staticPodNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	ev := u.ev
	ev.Attempts = append([]UpgradeSeen(nil), u.ev.Attempts...)
	u.mu.Unlock()
	ev.NewPID, ev.NewHash, ev.NewUID = u.n.api.PID(), pod.Annotations[hashAnnotation], string(pod.UID)
	ev.MirrorReplaced = pod.CreationTimestamp.Sub(u.at)
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			ev.MirrorReady = c.LastTransitionTime.Sub(u.at)
		}
	}
	var errs []error
	if ev.NewPID == 0 || ev.NewPID == ev.OldPID {
		errs = append(errs, fmt.Errorf("kube-apiserver process %d after the upgrade, %d before", ev.NewPID, ev.OldPID))
	}
	if ev.NewHash == ev.OldHash || ev.NewUID == ev.OldUID || !podReady(pod) {
		errs = append(errs, fmt.Errorf("mirror pod %s after the upgrade: hash %s (was %s), uid %s (was %s), Ready %v", name, ev.NewHash, ev.OldHash, ev.NewUID, ev.OldUID, podReady(pod)))
	}
	if len(ev.Attempts) == 0 {
		errs = append(errs, errors.New("no hook attempt was recorded"))
	}
	for _, s := range ev.Attempts {
		if s.Err != nil || s.PID != ev.NewPID || s.Hash != ev.NewHash || !s.Ready {
			errs = append(errs, fmt.Errorf("hook %s started %s after the manifest was rewritten against process %d (new: %d), mirror pod hash %q Ready %v (%v)",
				s.Hook, s.At.Sub(u.at).Round(time.Millisecond), s.PID, ev.NewPID, s.Hash, s.Ready, s.Err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return &ev, err
	}
	u.d.tl.Record(u.n.name, "fault", "observed", fmt.Sprintf("the kubelet replaced mirror pod %s in %s (Ready after %s); the gate held %d attempt(s) on the old pod; all %d hook attempts started on process %d with the new pod Ready",
		name, ev.MirrorReplaced.Round(time.Millisecond), ev.MirrorReady.Round(time.Millisecond), ev.HeldOnOldPod, len(ev.Attempts), ev.NewPID))
	return &ev, nil
}

// podReady reports the pod's Ready condition.
func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
