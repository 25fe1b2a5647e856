package apiserverdisco_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	discoveryv1client "k8s.io/client-go/kubernetes/typed/discovery/v1"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// These tests are about what the EndpointSlices source does with the
// caller's client when it misbehaves or cannot reach an apiserver: fakes
// and a stub HTTP server stand for what a real apiserver never does.

func kubernetesSlice(name, addr string) *discoveryv1.EndpointSlice {
	s := slice(name, "kubernetes", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port("https", 6443)}, endpoint(addr, nil))
	s.ResourceVersion = "1"
	return s
}

// TestSliceWatchUnusableEvents: events whose object the reflector cannot
// read (nil, typed nil, wrong type) used to reach client-go's reflector
// and panic in its goroutine, killing the process. They are dropped and
// reported; the good events after them are delivered.
func TestSliceWatchUnusableEvents(t *testing.T) {
	ctx := testCtx(t)
	cs := fake.NewClientset()
	watches := make(chan *watch.FakeWatcher, 10)
	cs.PrependWatchReactor("endpointslices", func(k8stesting.Action) (bool, watch.Interface, error) {
		fw := watch.NewFake()
		watches <- fw
		return true, fw, nil
	})
	var errs errorLog
	w := newWatcher(t, ctx, apiserverdisco.EndpointSlices(cs), apiserverdisco.WithErrorHandler(errs.handle))
	var fw *watch.FakeWatcher
	select {
	case fw = <-watches:
	case <-ctx.Done():
		t.Fatal("the informer never watched")
	}
	bad := []struct {
		ev   watch.Event
		says string
	}{
		{watch.Event{Type: watch.Added, Object: (*discoveryv1.EndpointSlice)(nil)}, "ADDED event with a nil *v1.EndpointSlice"},
		{watch.Event{Type: watch.Modified, Object: nil}, "MODIFIED event without an object"},
		{watch.Event{Type: watch.Added, Object: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"}}}, "ADDED event with a *v1.Pod"},
		{watch.Event{Type: watch.Bookmark, Object: (*discoveryv1.EndpointSlice)(nil)}, "BOOKMARK event with a nil *v1.EndpointSlice"},
		{watch.Event{Type: watch.Deleted, Object: (*corev1.Pod)(nil)}, "DELETED event with a nil *v1.Pod"},
		{watch.Event{Type: watch.Error, Object: (*metav1.Status)(nil)}, "ERROR event with a nil *v1.Status"},
	}
	for _, b := range bad {
		fw.Action(b.ev.Type, b.ev.Object) // blocks until the source took it
	}
	fw.Add(kubernetesSlice("kubernetes", "192.0.2.1"))
	addrs, err := w.WaitForAddresses(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, []string{"192.0.2.1:6443"}, addrs)
	reported := panicErrors(errs.all(), "the Kubernetes client's watch (ResultChan)")
	require.Len(t, reported, len(bad), "one report per dropped event: %s", errorsText(errs.all()))
	for i, b := range bad {
		require.ErrorContains(t, reported[i], b.says)
		require.ErrorContains(t, reported[i], "dropped")
	}
	require.NoError(t, w.Err())
}

// nilListKube is a kubernetes.Interface whose EndpointSlices List returns
// a nil list and no error in its first `left` calls.
type nilListKube struct {
	kubernetes.Interface
	left atomic.Int64
}

func (k *nilListKube) DiscoveryV1() discoveryv1client.DiscoveryV1Interface {
	return nilListDiscovery{k.Interface.DiscoveryV1(), k}
}

type nilListDiscovery struct {
	discoveryv1client.DiscoveryV1Interface
	k *nilListKube
}

func (d nilListDiscovery) EndpointSlices(ns string) discoveryv1client.EndpointSliceInterface {
	return nilListSlices{d.DiscoveryV1Interface.EndpointSlices(ns), d.k}
}

type nilListSlices struct {
	discoveryv1client.EndpointSliceInterface
	k *nilListKube
}

func (s nilListSlices) List(ctx context.Context, o metav1.ListOptions) (*discoveryv1.EndpointSliceList, error) {
	if s.k.left.Add(-1) >= 0 {
		return nil, nil
	}
	return s.EndpointSliceInterface.List(ctx, o)
}

// TestSliceListTypedNil: a client whose List returns a nil list and no
// error used to panic client-go's reflector (in its pager) and kill the
// process. It is a failed list: reported, retried.
func TestSliceListTypedNil(t *testing.T) {
	ctx := testCtx(t)
	k := &nilListKube{Interface: fake.NewClientset(kubernetesSlice("kubernetes", "192.0.2.2"))}
	k.left.Store(1)
	var errs errorLog
	w := newWatcher(t, ctx, apiserverdisco.EndpointSlices(k), apiserverdisco.WithErrorHandler(errs.handle))
	pe := errs.waitPanic(t, "the Kubernetes client (list EndpointSlices)")
	require.ErrorContains(t, pe, "returned a nil *v1.EndpointSliceList and no error")
	addrs, err := w.WaitForAddresses(ctx, 1)
	require.NoError(t, err, "the list is retried")
	require.Equal(t, []string{"192.0.2.2:6443"}, addrs)
	require.NoError(t, w.Err())
}

// countingTransport counts the requests a client sends.
type countingTransport struct {
	rt http.RoundTripper
	n  *atomic.Int64
	b  *broadcast
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	c.b.signal()
	return c.rt.RoundTrip(r)
}

// TestSliceSourceUnreachable: with nothing listening at the apiserver's
// address, every failed request is reported (the error handler,
// State.LastError) — client-go's watch-list mode only logged them at
// V(2) — and Close returns at once, where watch-list's retry loop held it
// up to 30s, waiting out its backoff without watching the context.
func TestSliceSourceUnreachable(t *testing.T) {
	testenv.AwaitNoLeaks(t)
	ctx := testCtx(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // connection refused from now on
	var requests atomic.Int64
	var sent broadcast
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "http://" + addr, WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
		return countingTransport{rt, &requests, &sent}
	}})
	require.NoError(t, err)
	var errs errorLog
	w, err := apiserverdisco.NewWatcher(ctx, apiserverdisco.EndpointSlices(cs), apiserverdisco.WithErrorHandler(errs.handle))
	require.NoError(t, err)
	closed := false
	t.Cleanup(func() {
		if !closed {
			go w.Close() // do not hang the test on the failure under test
		}
	})

	errs.waitCount(t, 1, "a failed request reported")
	require.ErrorContains(t, errs.all()[0], "EndpointSlices")
	require.ErrorContains(t, errs.all()[0], addr)
	st := w.State()
	require.True(t, st.NotYetSet)
	require.Error(t, st.LastError, "State.LastError while the apiserver is unreachable")
	require.ErrorContains(t, st.LastError, "EndpointSlices")

	// Three requests in, client-go's watch-list retry loop would wait
	// 3.2-6.4s before the next one, whatever the context says.
	awaitCond(t, &sent, "three requests", func() bool { return requests.Load() >= 3 })
	errs.waitCount(t, 3, "each failed request reported")
	done := make(chan error, 1)
	go func() { done <- w.Close() }()
	select {
	case err := <-done:
		closed = true
		require.NoError(t, err)
	case <-time.After(2 * time.Second): // a failure guard: Close waits for nothing
		t.Fatalf("Close did not return within 2s while the apiserver is unreachable (%d requests sent)", requests.Load())
	}
	require.ErrorIs(t, w.Err(), apiserverdisco.ErrClosed)
}

// stubAPIServer serves the "kubernetes" Service's EndpointSlices: lists
// succeed; watches fail with 429 Too Many Requests (no Retry-After, so
// client-go's reflector backs off and retries by itself, without telling
// its error handler) until allowWatch is set, then stay open with no
// event.
type stubAPIServer struct {
	*httptest.Server
	allowWatch atomic.Bool
	watches    atomic.Int64
}

func newStubAPIServer(t *testing.T, items ...*discoveryv1.EndpointSlice) *stubAPIServer {
	s := &stubAPIServer{}
	list := discoveryv1.EndpointSliceList{TypeMeta: metav1.TypeMeta{Kind: "EndpointSliceList", APIVersion: "discovery.k8s.io/v1"}, ListMeta: metav1.ListMeta{ResourceVersion: "1"}}
	for _, it := range items {
		list.Items = append(list.Items, *it)
	}
	body, err := json.Marshal(list)
	require.NoError(t, err)
	s.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices" {
			http.NotFound(rw, r)
			return
		}
		rw.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("watch") != "true" {
			_, _ = rw.Write(body)
			return
		}
		s.watches.Add(1)
		if !s.allowWatch.Load() {
			rw.WriteHeader(http.StatusTooManyRequests)
			st := apierrors.NewTooManyRequests("stub: too many watches", 0).Status()
			st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
			_ = json.NewEncoder(rw).Encode(st)
			return
		}
		rw.WriteHeader(http.StatusOK)
		rw.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(s.Close)
	return s
}

// TestSliceWatchFailuresReported: a watch request the reflector retries by
// itself (429) is reported like a failed list, and State.LastError shows
// it until a request succeeds again.
func TestSliceWatchFailuresReported(t *testing.T) {
	ctx := testCtx(t)
	api := newStubAPIServer(t, kubernetesSlice("kubernetes", "192.0.2.3"))
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: api.URL, ContentConfig: rest.ContentConfig{ContentType: runtime.ContentTypeJSON}})
	require.NoError(t, err)
	var errs errorLog
	w := newWatcher(t, ctx, apiserverdisco.EndpointSlices(cs), apiserverdisco.WithErrorHandler(errs.handle))
	addrs, err := w.WaitForAddresses(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, []string{"192.0.2.3:6443"}, addrs)

	watchErrors := func() []error {
		var out []error
		for _, err := range errs.all() {
			if strings.Contains(err.Error(), "watch EndpointSlices") {
				out = append(out, err)
			}
		}
		return out
	}
	awaitCond(t, &errs.b, "two failed watches reported", func() bool { return len(watchErrors()) >= 2 },
		func() string {
			return fmt.Sprintf("(reported: %s; watches served: %d)", errorsText(errs.all()), api.watches.Load())
		})
	for _, err := range watchErrors() {
		require.True(t, apierrors.IsTooManyRequests(err), "the reported error keeps its cause: %v", err)
	}
	require.True(t, apierrors.IsTooManyRequests(w.State().LastError), "State.LastError: %v", w.State().LastError)

	// The next watch succeeds: LastError is cleared, though no event came.
	api.allowWatch.Store(true)
	testenv.Eventually(t, guard, 20*time.Millisecond, func() error {
		if err := w.State().LastError; err != nil {
			return fmt.Errorf("State.LastError still %w", err)
		}
		return nil
	})
	require.NoError(t, w.Err())
}
