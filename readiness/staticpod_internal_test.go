package readiness

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// The pod watch must come back within seconds of a restarted apiserver,
// however many reconnects failed while it was down.
func TestPodWatchRetryIsCapped(t *testing.T) {
	const limit = 3 * time.Second // podWatchRetryMax plus half of it in jitter, as documented
	retry := newPodWatchRetry()
	retry.Reset()
	for i := range 100 { // far past the point where doubling from 100 ms would exceed it
		if d := retry.NextBackOff(); d <= 0 || d > limit {
			t.Fatalf("reconnect delay %d is %s, want in (0, %s]", i+1, d, limit)
		}
	}
}

// fakeLister is a podLister listing nothing, whose watch is fw.
type fakeLister struct{ fw *watch.FakeWatcher }

func (l fakeLister) List(context.Context, metav1.ListOptions) (*corev1.PodList, error) {
	return &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}}, nil
}

func (l fakeLister) Watch(context.Context, metav1.ListOptions) (watch.Interface, error) {
	return l.fw, nil
}

// A watch event for another pod (a server, or fake.Clientset, that does
// not apply the field selector) is not this check's business: the watch
// goes on, without a change signal, and the pod's own events still count.
// Before, it ended the watch as a protocol error and cost a list and a
// watch per event.
func TestPodWatchIgnoresOtherPods(t *testing.T) {
	p := &podCheck{ns: "kube-system", name: "kube-apiserver-n1"}
	fw := watch.NewFakeWithChanSize(16, false)
	changed := make(chan struct{}, 16)
	st := &podState{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	returned := make(chan error, 1)
	go func() {
		returned <- p.watchOnce(ctx, fakeLister{fw}, "metadata.name=kube-apiserver-n1", func() { changed <- struct{}{} }, newPodWatchRetry(), st)
	}()
	<-changed // after the list

	pod := func(ns, name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Annotations: map[string]string{configMirrorAnnotation: "h"}}}
	}
	for range 5 {
		fw.Modify(pod("kube-system", "etcd-n1"))
		fw.Add(pod("other", "kube-apiserver-n1")) // same name, another namespace
	}
	fw.Modify(pod("kube-system", "kube-apiserver-n1"))
	select {
	case <-changed:
	case err := <-returned:
		t.Fatalf("the watch ended on another pod's event: %v", err)
	}
	select {
	case <-changed:
		t.Fatal("a change signal for another pod's event")
	default:
	}
	st.mu.Lock()
	seen := st.pod
	st.mu.Unlock()
	if seen == nil || seen.Namespace != "kube-system" || seen.Name != "kube-apiserver-n1" {
		t.Fatalf("the state holds %v, want the watched pod", seen)
	}
	// Something that is not a pod at all is still a protocol error.
	fw.Modify(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-apiserver-n1"}})
	if err := <-returned; err == nil || !strings.Contains(err.Error(), "unexpected *v1.ConfigMap") {
		t.Fatalf("watchOnce on a ConfigMap event = %v, want an unexpected-object error", err)
	}
}
