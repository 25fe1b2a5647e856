package apiserverdisco_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	discoveryv1client "k8s.io/client-go/kubernetes/typed/discovery/v1"

	"github.com/kubeboot/kubeboot/apiserverdisco"
	"github.com/kubeboot/kubeboot/internal/testenv"
)

// nilInitSink is a LogSink type whose Init does not dereference its
// receiver, so logr.New accepts a nil one: a Logger holding a typed nil.
type nilInitSink struct{ logr.LogSink }

func (*nilInitSink) Init(logr.RuntimeInfo) {}

// ptrCtx is a context.Context implemented by a pointer type, for a typed
// nil context.
type ptrCtx struct{ context.Context }

func TestTypedNilInputs(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	// A client made by NewCtxClient has a context but no KV, Lease or
	// Watcher until the caller sets them (the namespace pattern).
	bare := clientv3.NewCtxClient(ctx)
	t.Cleanup(func() { _ = bare.Close() })
	var nilCtx context.Context
	typedNilCtx := context.Context((*ptrCtx)(nil))
	nilLogger := logr.New((*nilInitSink)(nil))

	type call struct {
		name string
		run  func() error
		// names is what the error must say to name the argument.
		names string
	}
	src := func(s apiserverdisco.Source) func() error {
		return func() error {
			w, err := apiserverdisco.NewWatcher(ctx, s)
			if w != nil {
				_ = w.Close()
				return errors.New("NewWatcher returned a Watcher")
			}
			return err
		}
	}
	pub := func(ctx context.Context, cli *clientv3.Client, opts ...apiserverdisco.Option) func() error {
		return func() error {
			r, err := apiserverdisco.Publish(ctx, cli, "a", "10.0.0.1:6443", append(opts, apiserverdisco.WithPrefix("/test/typednil/"))...)
			if r != nil {
				_ = r.Close()
				return errors.New("Publish returned a Registration")
			}
			return err
		}
	}
	watchWith := func(ctx context.Context, opts ...apiserverdisco.Option) func() error {
		return func() error {
			w, err := apiserverdisco.NewWatcher(ctx, apiserverdisco.EtcdPrefix(cli, "/test/typednil/"), opts...)
			if w != nil {
				_ = w.Close()
				return errors.New("NewWatcher returned a Watcher")
			}
			return err
		}
	}
	var nilWatcher *apiserverdisco.Watcher
	var nilReg *apiserverdisco.Registration
	live := newWatcher(t, ctx, apiserverdisco.EtcdPrefix(cli, "/test/typednil/"))

	calls := []call{
		{"EndpointSlices(nil)", src(apiserverdisco.EndpointSlices(nil)), "nil Kubernetes client"},
		{"EndpointSlices((*kubernetes.Clientset)(nil))", src(apiserverdisco.EndpointSlices((*kubernetes.Clientset)(nil))), "*kubernetes.Clientset"},
		{"EndpointSlices((*fake.Clientset)(nil))", src(apiserverdisco.EndpointSlices((*fake.Clientset)(nil))), "*fake.Clientset"},
		{"EtcdPrefix((*clientv3.Client)(nil))", src(apiserverdisco.EtcdPrefix((*clientv3.Client)(nil), "")), "nil etcd client"},
		{"EtcdPrefix(&clientv3.Client{})", src(apiserverdisco.EtcdPrefix(&clientv3.Client{}, "")), "clientv3.New"},
		{"EtcdPrefix(client without KV)", src(apiserverdisco.EtcdPrefix(bare, "")), "client.KV"},
		{"LegacyKey((*clientv3.Client)(nil))", src(apiserverdisco.LegacyKey((*clientv3.Client)(nil), "k3s")), "nil etcd client"},
		{"LegacyKey(&clientv3.Client{})", src(apiserverdisco.LegacyKey(&clientv3.Client{}, "k3s")), "clientv3.New"},
		{"NewWatcher(zero Source)", src(apiserverdisco.Source{}), "zero Source"},
		{"NewWatcher(nil ctx)", watchWith(nilCtx), "ctx"},
		{"NewWatcher(typed-nil ctx)", watchWith(typedNilCtx), "ctx"},
		{"NewWatcher(nil Option)", watchWith(ctx, nil), "nil Option"},
		{"NewWatcher(WithErrorHandler(nil))", watchWith(ctx, apiserverdisco.WithErrorHandler((func(error))(nil))), "WithErrorHandler"},
		{"NewWatcher(WithBackoff(nil))", watchWith(ctx, apiserverdisco.WithBackoff((func() backoff.BackOff)(nil))), "WithBackoff"},
		{"NewWatcher(WithLogger(typed-nil sink))", watchWith(ctx, apiserverdisco.WithLogger(nilLogger)), "WithLogger"},
		{"Publish(nil ctx)", pub(nilCtx, cli), "ctx"},
		{"Publish(typed-nil ctx)", pub(typedNilCtx, cli), "ctx"},
		{"Publish((*clientv3.Client)(nil))", pub(ctx, nil), "nil etcd client"},
		{"Publish(&clientv3.Client{})", pub(ctx, &clientv3.Client{}), "clientv3.New"},
		{"Publish(client without KV)", pub(ctx, bare), "client.KV"},
		{"Publish(WithLogger(typed-nil sink))", pub(ctx, cli, apiserverdisco.WithLogger(nilLogger)), "WithLogger"},
		{"Publish(WithBackoff(nil))", pub(ctx, cli, apiserverdisco.WithBackoff(nil)), "WithBackoff"},
		{"Watcher.Next(nil ctx)", func() error { _, err := live.Next(nilCtx); return err }, "ctx"},
		{"Watcher.WaitForAddresses(typed-nil ctx)", func() error { _, err := live.WaitForAddresses(typedNilCtx, 1); return err }, "ctx"},
		{"(*Watcher)(nil).Next", func() error { _, err := nilWatcher.Next(ctx); return err }, "Watcher"},
		{"(*Watcher)(nil).WaitForAddresses", func() error { _, err := nilWatcher.WaitForAddresses(ctx, 1); return err }, "Watcher"},
		{"(*Watcher)(nil).Close", nilWatcher.Close, "Watcher"},
		{"(*Watcher)(nil).Err", nilWatcher.Err, "Watcher"},
		{"(&Watcher{}).Next", func() error { _, err := (&apiserverdisco.Watcher{}).Next(ctx); return err }, "Watcher"},
		{"(*Registration)(nil).Close", nilReg.Close, "Registration"},
		{"(*Registration)(nil).Err", nilReg.Err, "Registration"},
		{"(&Registration{}).Close", (&apiserverdisco.Registration{}).Close, "Registration"},
	}
	writer := func(ctx context.Context, cli *clientv3.Client, program, id string, src apiserverdisco.Source, opts ...apiserverdisco.Option) func() error {
		return func() error {
			w, err := apiserverdisco.StartLegacyKeyWriter(ctx, cli, program, id, src, opts...)
			if w != nil {
				_ = w.Close()
				return errors.New("StartLegacyKeyWriter returned a writer")
			}
			return err
		}
	}
	good := apiserverdisco.EtcdPrefix(cli, "/test/typednil/")
	var nilWriter *apiserverdisco.LegacyKeyWriter
	calls = append(calls,
		call{"StartLegacyKeyWriter(nil ctx)", writer(nilCtx, cli, "k3s", "a", good), "ctx"},
		call{"StartLegacyKeyWriter(typed-nil ctx)", writer(typedNilCtx, cli, "k3s", "a", good), "ctx"},
		call{"StartLegacyKeyWriter((*clientv3.Client)(nil))", writer(ctx, nil, "k3s", "a", good), "nil etcd client"},
		call{"StartLegacyKeyWriter(&clientv3.Client{})", writer(ctx, &clientv3.Client{}, "k3s", "a", good), "clientv3.New"},
		call{"StartLegacyKeyWriter(client without KV)", writer(ctx, bare, "k3s", "a", good), "client.KV"},
		call{"StartLegacyKeyWriter(empty program)", writer(ctx, cli, "", "a", good), "program"},
		call{"StartLegacyKeyWriter(bad id)", writer(ctx, cli, "k3s", "a/b", good), "id"},
		call{"StartLegacyKeyWriter(zero Source)", writer(ctx, cli, "k3s", "a", apiserverdisco.Source{}), "zero Source"},
		call{"StartLegacyKeyWriter(typed-nil Kubernetes client)", writer(ctx, cli, "k3s", "a", apiserverdisco.EndpointSlices((*fake.Clientset)(nil))), "*fake.Clientset"},
		call{"StartLegacyKeyWriter(its own key as the source)", writer(ctx, cli, "k3s", "a", apiserverdisco.LegacyKey(cli, "k3s")), "k3s/apiaddresses"},
		call{"StartLegacyKeyWriter(WithErrorHandler(nil))", writer(ctx, cli, "k3s", "a", good, apiserverdisco.WithErrorHandler(nil)), "WithErrorHandler"},
		call{"StartLegacyKeyWriter(WithEmptyHoldDown)", writer(ctx, cli, "k3s", "a", good, apiserverdisco.WithEmptyHoldDown(time.Second)), "WithEmptyHoldDown"},
		call{"(*LegacyKeyWriter)(nil).Close", nilWriter.Close, "LegacyKeyWriter"},
		call{"(*LegacyKeyWriter)(nil).Err", nilWriter.Err, "LegacyKeyWriter"},
	)
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			require.NotPanics(t, func() { err = tc.run() })
			require.ErrorIs(t, err, apiserverdisco.ErrInvalidInput)
			require.ErrorContains(t, err, tc.names, "the error must name the argument")
		})
	}

	// Accessors that return no error do not panic either.
	require.Zero(t, nilWatcher.Current())
	require.True(t, nilWatcher.State().NotYetSet)
	<-nilWatcher.Done()
	require.Empty(t, nilReg.Key())
	require.Zero(t, nilReg.Lease())
	<-nilReg.Done()
	require.False(t, nilWriter.Leader())
	require.Nil(t, nilWriter.Written())
	<-nilWriter.Done()

	// Nothing was written.
	resp, err := cli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly())
	require.NoError(t, err)
	require.Zero(t, resp.Count, "bad input must write nothing")
}

// panicSink is a LogSink that panics on every line.
type panicSink struct{}

func (panicSink) Init(logr.RuntimeInfo)            {}
func (panicSink) Enabled(int) bool                 { return true }
func (panicSink) Info(int, string, ...any)         { panic("logger sink: Info") }
func (panicSink) Error(error, string, ...any)      { panic("logger sink: Error") }
func (s panicSink) WithValues(...any) logr.LogSink { return s }
func (s panicSink) WithName(string) logr.LogSink   { return s }

// panicPolicy is a backoff policy whose NextBackOff panics.
type panicPolicy struct{ calls *atomic.Int64 }

func (p panicPolicy) NextBackOff() time.Duration { p.calls.Add(1); panic("NextBackOff") }
func (panicPolicy) Reset()                       {}

// panicErrors returns the *PanicErrors among errs whose Callback contains
// callback.
func panicErrors(errs []error, callback string) []*apiserverdisco.PanicError {
	var out []*apiserverdisco.PanicError
	for _, err := range errs {
		var pe *apiserverdisco.PanicError
		if errors.As(err, &pe) && strings.Contains(pe.Callback, callback) {
			out = append(out, pe)
		}
	}
	return out
}

func (l *errorLog) waitPanic(t testing.TB, callback string) *apiserverdisco.PanicError {
	t.Helper()
	awaitCond(t, &l.b, "a recovered panic in "+callback, func() bool { return len(panicErrors(l.all(), callback)) > 0 },
		func() string { return "(reported: " + errorsText(l.all()) + ")" })
	pe := panicErrors(l.all(), callback)[0]
	require.ErrorIs(t, pe, apiserverdisco.ErrCallbackPanicked)
	require.NotEmpty(t, pe.Stack)
	return pe
}

func errorsText(errs []error) string {
	var s []string
	for _, err := range errs {
		s = append(s, err.Error())
	}
	return strings.Join(s, "; ")
}

// panickyKV panics in the first `left` Gets, then passes them on.
type panickyKV struct {
	clientv3.KV
	left atomic.Int64
}

func (k *panickyKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if k.left.Add(-1) >= 0 {
		panic("KV.Get")
	}
	return k.KV.Get(ctx, key, opts...)
}

// panickyLease panics in KeepAlive.
type panickyLease struct{ clientv3.Lease }

func (panickyLease) KeepAlive(context.Context, clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	panic("Lease.KeepAlive")
}

// wrapClient is the namespace pattern: a client with the caller's own KV,
// Lease and Watcher implementations.
func wrapClient(t testing.TB, ctx context.Context, cli *clientv3.Client, kv clientv3.KV, lease clientv3.Lease) *clientv3.Client {
	w := clientv3.NewCtxClient(ctx)
	t.Cleanup(func() { _ = w.Close() })
	w.KV, w.Lease, w.Watcher = kv, lease, cli.Watcher
	return w
}

// panickyKube is a kubernetes.Interface whose DiscoveryV1 panics in its
// first `left` calls, and whose watches' ResultChan panics once.
type panickyKube struct {
	kubernetes.Interface
	left      atomic.Int64
	watchLeft atomic.Int64
}

func (k *panickyKube) DiscoveryV1() discoveryv1client.DiscoveryV1Interface {
	if k.left.Add(-1) >= 0 {
		panic("DiscoveryV1")
	}
	return &panickyDiscovery{DiscoveryV1Interface: k.Interface.DiscoveryV1(), k: k}
}

type panickyDiscovery struct {
	discoveryv1client.DiscoveryV1Interface
	k *panickyKube
}

func (d *panickyDiscovery) EndpointSlices(ns string) discoveryv1client.EndpointSliceInterface {
	return &panickySlices{EndpointSliceInterface: d.DiscoveryV1Interface.EndpointSlices(ns), k: d.k}
}

type panickySlices struct {
	discoveryv1client.EndpointSliceInterface
	k *panickyKube
}

func (s *panickySlices) Watch(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	w, err := s.EndpointSliceInterface.Watch(ctx, o)
	if err != nil || s.k.watchLeft.Add(-1) < 0 {
		return w, err
	}
	return panickyWatch{w}, nil
}

type panickyWatch struct{ watch.Interface }

func (panickyWatch) ResultChan() <-chan watch.Event { panic("ResultChan") }

func TestCallbackPanicsContained(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	put := func(key, value string) {
		t.Helper()
		_, err := cli.Put(ctx, key, value)
		require.NoError(t, err)
	}

	t.Run("error handler", func(t *testing.T) {
		const prefix = "/test/panic/handler/"
		put(prefix+"bad", "garbage")
		logs, log := newLogRecorder()
		var calls atomic.Int64
		w := newWatcher(t, ctx, apiserverdisco.EtcdPrefix(cli, prefix), apiserverdisco.WithDebounce(0), apiserverdisco.WithLogger(log),
			apiserverdisco.WithErrorHandler(func(error) { calls.Add(1); panic("error handler") }))
		logs.waitFor(t, "WithErrorHandler function panicked")
		// The Watcher is alive and delivers.
		publish(t, ctx, cli, "good", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix))
		_, err := w.WaitForAddresses(ctx, 1)
		require.NoError(t, err)
		require.Nil(t, w.Err())
		require.EqualValues(t, 1, calls.Load())
	})

	t.Run("logger sink", func(t *testing.T) {
		const prefix = "/test/panic/logger/"
		var errs errorLog
		w := newWatcher(t, ctx, apiserverdisco.EtcdPrefix(cli, prefix), apiserverdisco.WithDebounce(0),
			apiserverdisco.WithLogger(logr.New(panicSink{})), apiserverdisco.WithErrorHandler(errs.handle))
		publish(t, ctx, cli, "good", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix), apiserverdisco.WithLogger(logr.New(panicSink{})))
		_, err := w.WaitForAddresses(ctx, 1) // delivering logs a line
		require.NoError(t, err)
		errs.waitPanic(t, "the logger's sink")
		require.Nil(t, w.Err())
	})

	t.Run("backoff factory", func(t *testing.T) {
		const prefix = "/test/panic/factory/"
		for name, factory := range map[string]func() backoff.BackOff{
			"panics":      func() backoff.BackOff { panic("factory") },
			"returns nil": func() backoff.BackOff { return nil },
		} {
			t.Run(name, func(t *testing.T) {
				var errs errorLog
				w := newWatcher(t, ctx, apiserverdisco.EtcdPrefix(cli, prefix), apiserverdisco.WithBackoff(factory), apiserverdisco.WithErrorHandler(errs.handle))
				errs.waitPanic(t, "WithBackoff factory")
				publish(t, ctx, cli, "good-"+strings.ReplaceAll(name, " ", "-"), "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix))
				_, err := w.WaitForAddresses(ctx, 1)
				require.NoError(t, err)
			})
		}
	})

	t.Run("NextBackOff", func(t *testing.T) {
		const prefix = "/test/panic/next/"
		publish(t, ctx, cli, "good", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix))
		// The watcher's list fails while its proxy drops everything, so it
		// asks its policy for a delay.
		p := testenv.NewProxyFor(t, c.Member(0).Endpoint())
		partition(p)
		pcli, err := c.NewClientConfig(clientv3.Config{Endpoints: []string{"http://" + p.Addr()}})
		require.NoError(t, err)
		var calls atomic.Int64
		var errs errorLog
		w := newWatcher(t, ctx, apiserverdisco.EtcdPrefix(pcli, prefix), apiserverdisco.WithRequestTimeout(100*time.Millisecond),
			apiserverdisco.WithBackoff(func() backoff.BackOff { return panicPolicy{&calls} }), apiserverdisco.WithErrorHandler(errs.handle))
		errs.waitPanic(t, "NextBackOff")
		heal(p)
		_, err = w.WaitForAddresses(ctx, 1)
		require.NoError(t, err)
		require.EqualValues(t, 1, calls.Load(), "after a panic the sequence goes on with the default policy")
	})

	t.Run("etcd client KV", func(t *testing.T) {
		const prefix = "/test/panic/kv/"
		publish(t, ctx, cli, "good", "10.0.0.1:6443", apiserverdisco.WithPrefix(prefix))
		kv := &panickyKV{KV: cli.KV}
		kv.left.Store(2)
		var errs errorLog
		w := newWatcher(t, ctx, apiserverdisco.EtcdPrefix(wrapClient(t, ctx, cli, kv, cli.Lease), prefix),
			apiserverdisco.WithBackoff(testenv.FastBackoff), apiserverdisco.WithErrorHandler(errs.handle))
		pe := errs.waitPanic(t, "etcd client (list)")
		require.Equal(t, "KV.Get", pe.Value)
		_, err := w.WaitForAddresses(ctx, 1)
		require.NoError(t, err, "the list is retried after the panic")
		require.Len(t, panicErrors(errs.all(), "etcd client"), 2)
	})

	t.Run("etcd client Lease", func(t *testing.T) {
		var errs errorLog
		r, err := apiserverdisco.Publish(ctx, wrapClient(t, ctx, cli, cli.KV, panickyLease{cli.Lease}), "a", "10.0.0.1:6443",
			apiserverdisco.WithPrefix("/test/panic/lease/"), apiserverdisco.WithErrorHandler(errs.handle))
		require.NoError(t, err)
		<-r.Done()
		var pe *apiserverdisco.PanicError
		require.ErrorAs(t, r.Err(), &pe)
		require.Equal(t, "Lease.KeepAlive", pe.Value)
		require.Len(t, panicErrors(errs.all(), "etcd client"), 1)
		require.NoError(t, r.Close())
	})

	t.Run("Kubernetes client", func(t *testing.T) {
		a := testenv.NewAPIServer(t)
		cs, err := a.Clientset()
		require.NoError(t, err)
		k := &panickyKube{Interface: cs}
		k.left.Store(1)
		k.watchLeft.Store(1)
		var errs errorLog
		w := newWatcher(t, ctx, apiserverdisco.EndpointSlices(k), apiserverdisco.WithErrorHandler(errs.handle))
		// The first list (or, with client-go's watch-list, the first watch)
		// panics in DiscoveryV1.
		pe := errs.waitPanic(t, "Kubernetes client (")
		require.Equal(t, "DiscoveryV1", pe.Value)
		errs.waitPanic(t, "ResultChan")
		// The informer got past both panics: it follows the slices.
		_, err = cs.DiscoveryV1().EndpointSlices("default").Create(ctx, slice("kubernetes-panic", "kubernetes", discoveryv1.AddressTypeIPv4,
			[]discoveryv1.EndpointPort{port("https", 6443)}, endpoint("192.0.2.10", nil)), metav1.CreateOptions{})
		require.NoError(t, err)
		addrs, err := w.WaitForAddresses(ctx, 1)
		require.NoError(t, err)
		require.Equal(t, []string{"192.0.2.10:6443"}, addrs)
		require.Nil(t, w.Err())
	})
}

// methodPanicSink is a LogSink (with WithCallDepth) that panics in the
// method named where, once armed (logr.New calls Init).
type methodPanicSink struct {
	where string
	armed *atomic.Bool
}

func (s methodPanicSink) logger() logr.Logger {
	l := logr.New(s)
	s.armed.Store(true)
	return l
}

func (s methodPanicSink) p(method string) {
	if s.where == method && s.armed.Load() {
		panic("logger sink: " + method)
	}
}
func (s methodPanicSink) Init(logr.RuntimeInfo)          { s.p("Init") }
func (s methodPanicSink) Enabled(int) bool               { s.p("Enabled"); return true }
func (s methodPanicSink) Info(int, string, ...any)       { s.p("Info") }
func (s methodPanicSink) Error(error, string, ...any)    { s.p("Error") }
func (s methodPanicSink) WithValues(...any) logr.LogSink { s.p("WithValues"); return s }
func (s methodPanicSink) WithName(string) logr.LogSink   { s.p("WithName"); return s }
func (s methodPanicSink) WithCallDepth(int) logr.LogSink { s.p("WithCallDepth"); return s }
func (s methodPanicSink) GetCallStackHelper() func()     { s.p("GetCallStackHelper"); return func() {} }
func (s methodPanicSink) String() string                 { return "methodPanicSink(" + s.where + ")" }
func (s methodPanicSink) check(t *testing.T, v any, call string) {
	t.Helper()
	if v != nil {
		t.Fatalf("%s with a sink panicking in %s: the panic escaped: %v", call, s.where, v)
	}
}

// TestLoggerSinkPanicsContained: a caller's logger whose sink panics in
// any method — given with WithLogger or in the context — never panics the
// call that takes it (Publish, NewWatcher, StartLegacyKeyWriter), nor the
// goroutines they start: the call succeeds and the panic is reported.
func TestLoggerSinkPanicsContained(t *testing.T) {
	ctx := testCtx(t)
	c := testenv.NewCluster(t)
	cli := c.Client()
	catch := func(f func()) (v any) {
		defer func() { v = recover() }()
		f()
		return nil
	}
	for _, where := range []string{"Init", "Enabled", "Info", "Error", "WithValues", "WithName", "WithCallDepth"} {
		for _, viaCtx := range []bool{false, true} {
			name := where + "/WithLogger"
			if viaCtx {
				name = where + "/context"
			}
			t.Run(name, func(t *testing.T) {
				sink := methodPanicSink{where: where, armed: new(atomic.Bool)}
				prefix := "/test/sinkpanic/" + strings.ToLower(name) + "/"
				// A malformed value: reported, so logged as an error.
				_, err := cli.Put(ctx, prefix+"bad", "garbage")
				require.NoError(t, err)
				var errs errorLog
				opts := []apiserverdisco.Option{apiserverdisco.WithErrorHandler(errs.handle)}
				callCtx := ctx
				if viaCtx {
					callCtx = logr.NewContext(ctx, sink.logger())
				} else {
					opts = append(opts, apiserverdisco.WithLogger(sink.logger()))
				}
				var r *apiserverdisco.Registration
				sink.check(t, catch(func() {
					r, err = apiserverdisco.Publish(callCtx, cli, "a", "10.0.0.1:6443", append(opts, apiserverdisco.WithPrefix(prefix))...)
				}), "Publish")
				require.NoError(t, err)
				var w *apiserverdisco.Watcher
				sink.check(t, catch(func() {
					w, err = apiserverdisco.NewWatcher(callCtx, apiserverdisco.EtcdPrefix(cli, prefix), opts...)
				}), "NewWatcher")
				require.NoError(t, err)
				var lw *apiserverdisco.LegacyKeyWriter
				sink.check(t, catch(func() {
					lw, err = apiserverdisco.StartLegacyKeyWriter(callCtx, cli, "sinkpanic", "n1", apiserverdisco.EtcdPrefix(cli, prefix), opts...)
				}), "StartLegacyKeyWriter")
				require.NoError(t, err)
				// They work: the watcher delivers (and logs that it did).
				addrs, err := w.WaitForAddresses(ctx, 1)
				require.NoError(t, err)
				require.Equal(t, []string{"10.0.0.1:6443"}, addrs)
				errs.waitMalformed(t, prefix+"bad")
				if where != "WithCallDepth" { // only Logger.WithCallDepth calls it
					errs.waitPanic(t, "the logger's sink")
				}
				require.NoError(t, lw.Close())
				require.NoError(t, w.Close())
				require.NoError(t, r.Close())
			})
		}
	}
}
