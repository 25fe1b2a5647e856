package readiness_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"

	"github.com/kubeboot/kubeboot/readiness"
)

// Types whose nil pointers satisfy the interfaces the package takes, as a
// user's own implementations would.
type (
	myCheck     struct{}
	myCtx       struct{ context.Context }
	myClientset struct{ kubernetes.Interface }
	myREST      struct{ rest.Interface }
	myClock     struct{ readiness.Clock }
	mySink      struct{ logr.LogSink }
)

func (*myCheck) Check(context.Context) error { return nil }

// Every exported function that takes an interface, a func or a pointer
// gives the package's invalid-input error, naming the argument, for a nil
// and for a typed nil of any concrete type: at the call when it returns
// an error (Wait), at the first Check (and Watch) of what it returns
// otherwise. Never a panic, never a retry.
func TestTypedNilInputs(t *testing.T) {
	ctx := testCtx(t)
	ok := readiness.CheckFunc(func(context.Context) error { return nil })
	var (
		nilCheck *myCheck
		nilCtx   *myCtx
	)
	checks := []struct {
		name  string
		check readiness.Check
		want  string // in the error
	}{
		{"StaticPodReady nil", readiness.StaticPodReady(nil, "ns", "pod"), "StaticPodReady: nil kubernetes.Interface"},
		{"StaticPodReady *kubernetes.Clientset", readiness.StaticPodReady((*kubernetes.Clientset)(nil), "ns", "pod"), "StaticPodReady: nil kubernetes.Interface (a nil *kubernetes.Clientset)"},
		{"StaticPodReady *fake.Clientset", readiness.StaticPodReady((*fake.Clientset)(nil), "ns", "pod"), "StaticPodReady: nil kubernetes.Interface (a nil *fake.Clientset)"},
		{"StaticPodReady user type", readiness.StaticPodReady((*myClientset)(nil), "ns", "pod"), "StaticPodReady: nil kubernetes.Interface (a nil *readiness_test.myClientset)"},
		{"APIServerReady nil", readiness.APIServerReady(nil), "APIServerReady: nil rest.Interface"},
		{"APIServerReady *rest.RESTClient", readiness.APIServerReady((*rest.RESTClient)(nil)), "APIServerReady: nil rest.Interface (a nil *rest.RESTClient)"},
		{"APIServerReady user type", readiness.APIServerReady((*myREST)(nil)), "APIServerReady: nil rest.Interface (a nil *readiness_test.myREST)"},
		{"HTTPGet", readiness.HTTPGet(nil, "http://127.0.0.1:1/", nil), "HTTPGet: nil *http.Client"},
		{"KubeletStaticPodReady", readiness.KubeletStaticPodReady(nil, "https://127.0.0.1:10250", "ns", "pod"), "KubeletStaticPodReady: nil *http.Client"},
		{"EtcdHealthy nil", readiness.EtcdHealthy(nil), "EtcdHealthy: nil *clientv3.Client"},
		{"EtcdHealthy zero client", readiness.EtcdHealthy(&clientv3.Client{}), "EtcdHealthy: the *clientv3.Client was not made by clientv3.New"},
		{"Named nil", readiness.Named("x", nil), `Named("x"): nil check`},
		{"Named typed nil", readiness.Named("x", nilCheck), `Named("x"): nil check (a nil *readiness_test.myCheck)`},
		{"Named nil CheckFunc", readiness.Named("x", readiness.CheckFunc(nil)), `Named("x"): nil check (a nil readiness.CheckFunc)`},
		{"All typed nil", readiness.All(ok, nilCheck), "All: nil check 2 of 2 (a nil *readiness_test.myCheck)"},
		{"Any typed nil", readiness.Any(nilCheck, ok), "Any: nil check 1 of 2 (a nil *readiness_test.myCheck)"},
		{"All nil CheckFunc", readiness.All(readiness.CheckFunc(nil)), "All: nil check 1 of 1 (a nil readiness.CheckFunc)"},
	}
	for _, tt := range checks {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.check.Check(ctx)
			require.ErrorIs(t, err, readiness.ErrInvalid)
			assert.Contains(t, err.Error(), tt.want)
			if w, isWatcher := tt.check.(readiness.Watcher); isWatcher {
				assert.ErrorIs(t, w.Watch(ctx, func() {}), readiness.ErrInvalid, "Watch")
			}
			opt, attempts := observer()
			err = readiness.Wait(ctx, tt.check, opt)
			require.ErrorIs(t, err, readiness.ErrInvalid)
			assert.Contains(t, err.Error(), tt.want)
			assert.Len(t, attempts, 1, "a permanent error: one attempt, no retry")
		})
	}

	waits := []struct {
		name string
		err  func() error
		want string
	}{
		{"Wait typed-nil context", func() error { return readiness.Wait(nilCtx, ok) }, "Wait: nil context (a nil *readiness_test.myCtx)"},
		{"Wait typed-nil check", func() error { return readiness.Wait(ctx, nilCheck) }, "Wait: nil check (a nil *readiness_test.myCheck)"},
		{"Wait nil CheckFunc", func() error { return readiness.Wait(ctx, readiness.CheckFunc(nil)) }, "Wait: nil check (a nil readiness.CheckFunc)"},
		{"Gate typed-nil check", func() error { return readiness.Gate(nilCheck)(ctx) }, "Wait: nil check (a nil *readiness_test.myCheck)"},
		{"WithClock typed nil", func() error { return readiness.Wait(ctx, ok, readiness.WithClock((*myClock)(nil))) }, "WithClock: a nil *readiness_test.myClock"},
		{"WithLogger typed-nil sink", func() error {
			return readiness.Wait(ctx, ok, readiness.WithLogger(logr.Discard().WithSink((*mySink)(nil))))
		}, "WithLogger: the logger's sink is a nil *readiness_test.mySink"},
		{"WithBackoff typed-nil policy", func() error {
			return readiness.Wait(ctx, ok, readiness.WithBackoff(func() backoff.BackOff { return (*backoff.ExponentialBackOff)(nil) }))
		}, "WithBackoff: the policy function returned nil (a nil *backoff.ExponentialBackOff)"},
		{"WithBackoff nil", func() error { return readiness.Wait(ctx, ok, readiness.WithBackoff(nil)) }, "WithBackoff(nil)"},
		{"WithObserver nil", func() error { return readiness.Wait(ctx, ok, readiness.WithObserver(nil)) }, "WithObserver(nil)"},
		{"nil Option", func() error { return readiness.Wait(ctx, ok, nil) }, "Wait: option 1 is nil"},
		{"nil PodOption", func() error {
			return readiness.Wait(ctx, readiness.StaticPodReady(fake.NewClientset(), "ns", "pod", nil))
		}, "StaticPodReady: option 1 is nil"},
		{"nil PodOption of KubeletStaticPodReady", func() error {
			return readiness.Wait(ctx, readiness.KubeletStaticPodReady(&http.Client{}, "https://127.0.0.1:10250", "ns", "pod", readiness.WithExpectedHash("h"), nil))
		}, "KubeletStaticPodReady: option 2 is nil"},
		{"nil EtcdOption", func() error {
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}})
			require.NoError(t, err)
			defer func() { _ = cli.Close() }()
			return readiness.Wait(ctx, readiness.EtcdHealthy(cli, nil))
		}, "EtcdHealthy: option 1 is nil"},
	}
	for _, tt := range waits {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.err()
			require.ErrorIs(t, err, readiness.ErrInvalid)
			assert.Contains(t, err.Error(), tt.want)
		})
	}

	// A nil CheckFunc called directly.
	err := readiness.CheckFunc(nil).Check(ctx)
	require.ErrorIs(t, err, readiness.ErrInvalid)
	assert.Contains(t, err.Error(), "nil CheckFunc")

	// A typed-nil StaticPodReady under Wait with a watch running, the
	// way the issue found it: no panic in the watch goroutine.
	err = readiness.Wait(ctx, readiness.All(readiness.StaticPodReady((*fake.Clientset)(nil), "ns", "pod"), newPokeCheck()))
	require.ErrorIs(t, err, readiness.ErrInvalid)
}

// panicky is a kubernetes.Interface whose CoreV1 panics, as a broken
// client implementation would.
type panicky struct{ kubernetes.Interface }

func (panicky) CoreV1() corev1client.CoreV1Interface { panic("broken client") }

// panickyREST is a rest.Interface whose Get panics.
type panickyREST struct{ rest.Interface }

func (panickyREST) Get() *rest.Request { panic("broken rest client") }

// panickyPolicy is a backoff policy whose methods panic on demand.
type panickyPolicy struct{ reset, next bool }

func (p *panickyPolicy) Reset() {
	if p.reset {
		panic("reset exploded")
	}
}

func (p *panickyPolicy) NextBackOff() time.Duration {
	if p.next {
		panic("next exploded")
	}
	return time.Millisecond
}

// panicClock is a Clock that panics.
type panicClock struct{ now, after bool }

func (c panicClock) Now() time.Time {
	if c.now {
		panic("clock exploded")
	}
	return time.Now()
}

func (c panicClock) After(d time.Duration) <-chan time.Time {
	if c.after {
		panic("timer exploded")
	}
	return time.After(d)
}

// panicWatcher is a check whose Watch panics in Wait's watch goroutine.
type panicWatcher struct{ started chan struct{} }

func (panicWatcher) Check(context.Context) error { return errors.New("not yet") }

func (w panicWatcher) Watch(context.Context, func()) error {
	close(w.started)
	panic("watch exploded")
}

// Every user callback the package runs — a check, a Watcher's Watch (in
// Wait's goroutine for it), a sub-check of All or Any (in goroutines of
// their own), the backoff policy and its factory, the observer, the
// clock, the logger, a client implementation, HTTPGet's accept function
// and the http.Client's transport — that panics is recovered and
// reported as the check's failure: Wait returns a *NotReadyError whose
// Err wraps ErrPanic and names what panicked. The process lives on (a
// panic that escaped would end this test binary).
func TestCallbackPanicsContained(t *testing.T) {
	ctx := testCtx(t)
	notYet := readiness.CheckFunc(func(context.Context) error { return errors.New("not yet") })
	ok := readiness.CheckFunc(func(context.Context) error { return nil })
	boom := readiness.CheckFunc(func(context.Context) error { panic("check exploded") })
	errBoom := errors.New("an error value")
	boomErr := readiness.CheckFunc(func(context.Context) error { panic(errBoom) })
	exit := readiness.CheckFunc(func(context.Context) error {
		// runtime.Goexit in a goroutine of All's.
		var tt testing.T
		defer func() { _ = recover() }()
		tt.FailNow()
		return nil
	})
	accept := func(int, []byte) error { panic("accept exploded") }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer srv.Close()
	badTransport := &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) { panic("transport exploded") })}
	var logged []string
	panickingLogger := funcr.New(func(prefix, args string) {
		logged = append(logged, args)
		panic("logger exploded")
	}, funcr.Options{Verbosity: 1})

	tests := []struct {
		name  string
		check readiness.Check
		opts  []readiness.Option
		want  string
	}{
		{"check", boom, nil, "the check panicked: check exploded"},
		{"Named check", readiness.Named("x", boom), nil, "the check panicked: check exploded"},
		{"All sub-check", readiness.All(ok, readiness.Named("boomer", boom)), nil, "All: check 2 of 2 (boomer) panicked: check exploded"},
		{"Any sub-check", readiness.Any(notYet, boom), nil, "Any: check 2 of 2 (check) panicked: check exploded"},
		{"All sub-check Goexit", readiness.All(ok, exit), nil, "All: check 2 of 2 (check) panicked: its goroutine exited without returning (runtime.Goexit)"},
		{"Watch", panicWatcher{started: make(chan struct{})}, []readiness.Option{constant(10 * time.Minute)}, "the check's Watch panicked: watch exploded"},
		{"Watch in All", readiness.All(ok, panicWatcher{started: make(chan struct{})}), []readiness.Option{constant(10 * time.Minute)}, "All: check 2 of 2 (check) Watch panicked: watch exploded"},
		{"StaticPodReady client", readiness.StaticPodReady(panicky{}, "ns", "pod"), []readiness.Option{constant(10 * time.Minute)}, "mirror pod ns/pod: the kubernetes.Interface panicked: broken client"},
		{"APIServerReady client", readiness.APIServerReady(panickyREST{}), nil, "kube-apiserver: the rest.Interface panicked: broken rest client"},
		{"HTTPGet accept", readiness.HTTPGet(srv.Client(), srv.URL, accept), nil, "the accept function panicked: accept exploded"},
		{"HTTPGet transport", readiness.HTTPGet(badTransport, srv.URL, nil), nil, "the *http.Client's transport panicked: transport exploded"},
		{"KubeletStaticPodReady transport", readiness.KubeletStaticPodReady(badTransport, srv.URL, "ns", "pod"), nil, "static pod ns/pod on the kubelet at " + srv.URL + ": the *http.Client's transport panicked: transport exploded"},
		{"backoff factory", notYet, []readiness.Option{readiness.WithBackoff(func() backoff.BackOff { panic("factory exploded") })}, "the backoff policy function panicked: factory exploded"},
		{"backoff Reset", notYet, []readiness.Option{readiness.WithBackoff(func() backoff.BackOff { return &panickyPolicy{reset: true} })}, "the backoff policy's Reset panicked: reset exploded"},
		{"backoff NextBackOff", notYet, []readiness.Option{readiness.WithBackoff(func() backoff.BackOff { return &panickyPolicy{next: true} })}, "the backoff policy's NextBackOff panicked: next exploded"},
		{"observer", ok, []readiness.Option{readiness.WithObserver(func(readiness.Attempt) { panic("observer exploded") })}, "the observer panicked: observer exploded"},
		{"clock Now", ok, []readiness.Option{readiness.WithClock(panicClock{now: true})}, "the clock's Now panicked: clock exploded"},
		{"clock After", notYet, []readiness.Option{readiness.WithClock(panicClock{after: true})}, "the clock's After panicked: timer exploded"},
		{"logger", ok, []readiness.Option{readiness.WithLogger(panickingLogger)}, "the logger panicked: logger exploded"},
		{"panic with an error", boomErr, nil, "the check panicked: an error value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := readiness.Wait(ctx, tt.check, tt.opts...)
			require.ErrorIs(t, err, readiness.ErrPanic)
			var nr *readiness.NotReadyError
			require.ErrorAs(t, err, &nr)
			assert.ErrorIs(t, nr.Err, readiness.ErrPanic)
			assert.Contains(t, err.Error(), tt.want)
			if strings.Contains(tt.name, "error") {
				assert.ErrorIs(t, err, errBoom)
			}
		})
	}
	assert.NotEmpty(t, logged, "the logger was called")

	// Called directly, outside Wait, the built-in checks and the
	// composites contain the panics of what they call too.
	for name, check := range map[string]readiness.Check{
		"All":                   readiness.All(boom),
		"Any":                   readiness.Any(boom),
		"StaticPodReady":        readiness.StaticPodReady(panicky{}, "ns", "pod"),
		"APIServerReady":        readiness.APIServerReady(panickyREST{}),
		"HTTPGet":               readiness.HTTPGet(srv.Client(), srv.URL, accept),
		"KubeletStaticPodReady": readiness.KubeletStaticPodReady(badTransport, srv.URL, "ns", "pod"),
	} {
		assert.ErrorIs(t, check.Check(ctx), readiness.ErrPanic, name)
	}
	assert.ErrorIs(t, readiness.StaticPodReady(panicky{}, "ns", "pod").(readiness.Watcher).Watch(ctx, func() {}), readiness.ErrPanic)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
