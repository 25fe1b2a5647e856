package cnibootstrap_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubeboot/kubeboot/cnibootstrap"
)

// nilSink is a LogSink whose methods use their receiver: a nil *nilSink
// panics on first use.
type nilSink struct{ level int }

func (*nilSink) Init(logr.RuntimeInfo)            {}
func (s *nilSink) Enabled(level int) bool         { return level <= s.level }
func (s *nilSink) Info(int, string, ...any)       { s.level++ }
func (s *nilSink) Error(error, string, ...any)    { s.level++ }
func (s *nilSink) WithValues(...any) logr.LogSink { return s }
func (s *nilSink) WithName(string) logr.LogSink   { return s }

// panicSink panics on every log line (and is enabled at every level).
type panicSink struct{}

func (*panicSink) Init(logr.RuntimeInfo)            {}
func (*panicSink) Enabled(int) bool                 { return true }
func (*panicSink) Info(int, string, ...any)         { panic("sink boom") }
func (*panicSink) Error(error, string, ...any)      { panic("sink boom") }
func (s *panicSink) WithValues(...any) logr.LogSink { return s }
func (s *panicSink) WithName(string) logr.LogSink   { return s }

func nopPolicy() backoff.BackOff { return fixedDelay(time.Millisecond) }

// ctxNil and waiterNil hide the nils from vet and staticcheck.
func ctxNil() context.Context         { return nil }
func waiterNil() *cnibootstrap.Waiter { return nil }

// ptrCtx is a context a caller may hold as a nil pointer; its methods
// dereference the receiver.
type ptrCtx struct{ context.Context }

func (c *ptrCtx) Value(key any) any { return c.Context.Value(key) }

// typedNilCtx is a nil *ptrCtx in a context.Context.
func typedNilCtx() context.Context { return (*ptrCtx)(nil) }

func roleReq() []cnibootstrap.Requirement {
	return []cnibootstrap.Requirement{cnibootstrap.ClusterRoleExists{Role: "x"}}
}

func requireInvalid(t *testing.T, err error, want string) {
	t.Helper()
	require.ErrorIs(t, err, cnibootstrap.ErrInvalidInput)
	assert.Contains(t, err.Error(), want)
}

// TestTypedNilInputs walks every exported function that takes an
// interface, a func or a pointer: nils, typed nils of any concrete type
// and funcs that return them get an error wrapping ErrInvalidInput at the
// call, naming the argument, never a panic. New makes no request, so
// clients for an address nothing listens on do.
func TestTypedNilInputs(t *testing.T) {
	good := offlineClients(t)
	ctx := context.Background()

	_, err := cnibootstrap.NewClients((*rest.Config)(nil))
	requireInvalid(t, err, "nil *rest.Config")

	for _, tc := range []struct {
		c    cnibootstrap.Clients
		want string
	}{
		{cnibootstrap.Clients{Dynamic: (*dynamicfake.FakeDynamicClient)(nil), Kube: good.Kube}, "Clients.Dynamic is nil"},
		{cnibootstrap.Clients{Dynamic: (*dynamic.DynamicClient)(nil), Kube: good.Kube}, "Clients.Dynamic is nil"},
		{cnibootstrap.Clients{Dynamic: nil, Kube: good.Kube}, "Clients.Dynamic is nil"},
		{cnibootstrap.Clients{Dynamic: good.Dynamic, Kube: (*fake.Clientset)(nil)}, "Clients.Kube is nil"},
		{cnibootstrap.Clients{Dynamic: good.Dynamic, Kube: (*kubernetes.Clientset)(nil)}, "Clients.Kube is nil"},
		{cnibootstrap.Clients{Dynamic: good.Dynamic, Kube: nil}, "Clients.Kube is nil"},
	} {
		_, err := cnibootstrap.New(tc.c, roleReq())
		requireInvalid(t, err, tc.want)
		requireInvalid(t, cnibootstrap.Wait(ctx, tc.c, roleReq()), tc.want)
	}

	for _, r := range []cnibootstrap.Requirement{
		nil,
		(*cnibootstrap.CRDEstablished)(nil),
		(*cnibootstrap.ObjectExists)(nil),
		(*cnibootstrap.ClusterRoleExists)(nil),
		(*cnibootstrap.ClusterRoleBindingExists)(nil),
		(*cnibootstrap.Allowed)(nil),
	} {
		_, err := cnibootstrap.New(good, []cnibootstrap.Requirement{r})
		requireInvalid(t, err, "requirement 0 is nil")
	}
	// A Requirement embedded with nothing in it.
	_, err = cnibootstrap.New(good, []cnibootstrap.Requirement{struct{ cnibootstrap.Requirement }{}})
	requireInvalid(t, err, "requirement 0")

	for _, tc := range []struct {
		o    cnibootstrap.Option
		want string
	}{
		{nil, "option 0 is nil"},
		{cnibootstrap.WithProgress(nil), "WithProgress(nil)"},
		{cnibootstrap.WithBackoff(nil), "WithBackoff(nil)"},
		{cnibootstrap.WithBackoff(func() backoff.BackOff { return nil }), "WithBackoff: invalid input: the WithBackoff factory returned a nil policy"},
		{cnibootstrap.WithBackoff(func() backoff.BackOff { return (*backoff.ExponentialBackOff)(nil) }), "WithBackoff: invalid input: the WithBackoff factory returned a nil policy"},
		{cnibootstrap.WithBackoff(func() backoff.BackOff { panic("factory boom") }), "WithBackoff: invalid input: the WithBackoff factory panicked: factory boom"},
		{cnibootstrap.WithLogger(logr.New((*nilSink)(nil))), "WithLogger: the logger's sink is a nil *cnibootstrap_test.nilSink"},
	} {
		_, err := cnibootstrap.New(good, roleReq(), tc.o)
		requireInvalid(t, err, tc.want)
	}
	// The zero Logger is a valid, discarding one.
	_, err = cnibootstrap.New(good, roleReq(), cnibootstrap.WithLogger(logr.Logger{}))
	require.NoError(t, err)

	// Conditions: nil means none; one that panics on an empty object is
	// refused by New.
	_, err = cnibootstrap.New(good, []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: configMapGVR, Namespace: "ns", Object: "x", Condition: nil}})
	require.NoError(t, err)
	_, err = cnibootstrap.New(good, []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: configMapGVR, Namespace: "ns", Object: "x",
		Condition: func(obj *unstructured.Unstructured) error {
			return errors.New(obj.Object["spec"].(map[string]any)["x"].(string))
		}}})
	requireInvalid(t, err, "Condition on an empty object: the Condition of configmaps/v1 ns/x panicked")
	require.ErrorIs(t, err, cnibootstrap.ErrCallbackPanicked)

	// Contexts and receivers.
	w, err := cnibootstrap.New(good, roleReq())
	require.NoError(t, err)
	requireInvalid(t, w.Wait(ctxNil()), "Wait: invalid input: nil context.Context")
	requireInvalid(t, w.Check(ctxNil()), "Check: invalid input: nil context.Context")
	requireInvalid(t, cnibootstrap.Wait(ctxNil(), good, roleReq()), "Wait: invalid input: nil context.Context")
	// A nil pointer in the interface: its methods would panic in the
	// caller's goroutine (Value, from the logger lookup) or in Check's.
	requireInvalid(t, w.Wait(typedNilCtx()), "Wait: invalid input: nil context.Context (a nil *cnibootstrap_test.ptrCtx)")
	requireInvalid(t, w.Check(typedNilCtx()), "Check: invalid input: nil context.Context (a nil *cnibootstrap_test.ptrCtx)")
	requireInvalid(t, cnibootstrap.Wait(typedNilCtx(), good, roleReq()), "Wait: invalid input: nil context.Context (a nil *cnibootstrap_test.ptrCtx)")
	requireInvalid(t, waiterNil().Wait(ctx), "nil *Waiter")
	requireInvalid(t, waiterNil().Check(ctx), "nil *Waiter")

	// The error types' methods on nil pointers.
	assert.Equal(t, "<nil>", (*cnibootstrap.UnmetError)(nil).Error())
	assert.Nil(t, (*cnibootstrap.UnmetError)(nil).Unwrap())
	assert.Equal(t, "<nil>", (*cnibootstrap.ForbiddenError)(nil).Error())
	assert.Nil(t, (*cnibootstrap.ForbiddenError)(nil).Unwrap())
	assert.Equal(t, "<nil>", (*cnibootstrap.PanicError)(nil).Error())
	assert.Nil(t, (*cnibootstrap.PanicError)(nil).Unwrap())
}

// requirePanic asserts that err wraps a *PanicError of callback.
func requirePanic(t *testing.T, err error, callback string) *cnibootstrap.PanicError {
	t.Helper()
	var pe *cnibootstrap.PanicError
	require.ErrorAs(t, err, &pe, "%v", err)
	require.ErrorIs(t, err, cnibootstrap.ErrCallbackPanicked)
	assert.Equal(t, callback, pe.Callback)
	assert.NotEmpty(t, pe.Stack)
	return pe
}

// TestCallbackPanicsContained: every piece of code the caller supplies
// that the waiter runs — a Condition evaluated on a watch event, the
// WithProgress function, the backoff factory and the policy's methods,
// the logger's sink, and the clients themselves, on the waiter's own
// goroutines — may panic without taking the process down. A Condition's
// panic is its requirement's reason; any other ends Wait with a
// *PanicError naming the requirements concerned.
func TestCallbackPanicsContained(t *testing.T) {
	ctx := context.Background()
	guardCtx := func() context.Context {
		c, cancel := context.WithTimeout(ctx, guard)
		t.Cleanup(cancel)
		return c
	}

	t.Run("condition on a real watch event", func(t *testing.T) {
		a, c := server(t)
		cs, err := a.Clientset()
		require.NoError(t, err)
		// It panics when data.mode is "boom" (not on an empty object, so
		// New accepts it).
		cond := func(obj *unstructured.Unstructured) error {
			if mode, _, _ := unstructured.NestedString(obj.Object, "data", "mode"); mode == "boom" {
				panic("condition boom")
			}
			return cnibootstrap.FieldEquals("data.mode", "ready")(obj)
		}
		const name = "configmaps/v1 default/cni"
		rec := newRecorder()
		w, err := cnibootstrap.New(c, []cnibootstrap.Requirement{cnibootstrap.ObjectExists{GVR: configMapGVR, Namespace: "default", Object: "cni", Condition: cond}},
			cnibootstrap.WithProgress(rec.progress), testBackoff())
		require.NoError(t, err)
		errc := waitAsync(guardCtx(), w)
		require.NoError(t, rec.await("not found", func(u []cnibootstrap.Unmet) bool { return reason(u, name) == "not found" }))
		_, err = cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cni", Namespace: "default"},
			Data: map[string]string{"mode": "boom"}}, metav1.CreateOptions{})
		require.NoError(t, err)
		require.NoError(t, rec.await("with the panic as the reason", func(u []cnibootstrap.Unmet) bool {
			return reason(u, name) == "the Condition of "+name+" panicked: condition boom"
		}))
		last := rec.all()[len(rec.all())-1]
		requirePanic(t, last[0].Err, "the Condition of "+name)
		// Check says the same.
		var ue *cnibootstrap.UnmetError
		require.ErrorAs(t, w.Check(ctx), &ue)
		requirePanic(t, ue, "the Condition of "+name)

		// The next event evaluates it again.
		cm, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "cni", metav1.GetOptions{})
		require.NoError(t, err)
		cm.Data["mode"] = "ready"
		_, err = cs.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{})
		require.NoError(t, err)
		require.NoError(t, result(t, errc))
	})

	t.Run("progress", func(t *testing.T) {
		var lists, reviews atomic.Int64
		w, err := cnibootstrap.New(failingClients(&lists, &reviews), roleReq(),
			cnibootstrap.WithProgress(func([]cnibootstrap.Unmet) { panic("progress boom") }), cnibootstrap.WithBackoff(nopPolicy))
		require.NoError(t, err)
		err = w.Wait(guardCtx())
		requirePanic(t, err, "the WithProgress function")
		assert.NotErrorIs(t, err, context.DeadlineExceeded)
	})

	// Policies that panic on their second use (New calls the factory once
	// to check it).
	var factoryCalls atomic.Int64
	for callback, factory := range map[string]func() backoff.BackOff{
		"the WithBackoff factory": func() backoff.BackOff {
			if factoryCalls.Add(1) > 1 {
				panic("factory boom")
			}
			return nopPolicy()
		},
		"NextBackOff of the WithBackoff policy": func() backoff.BackOff { return panicPolicy{} },
	} {
		t.Run(callback, func(t *testing.T) {
			var lists, reviews atomic.Int64
			w, err := cnibootstrap.New(failingClients(&lists, &reviews), roleReq(), cnibootstrap.WithBackoff(factory))
			require.NoError(t, err)
			err = w.Wait(guardCtx())
			requirePanic(t, err, callback)
			assert.Contains(t, err.Error(), "cnibootstrap: clusterrole x: ")
		})
	}

	t.Run("Reset of the WithBackoff policy", func(t *testing.T) {
		// Lists work on this fake; the first watch delivers one event and
		// closes, the second fails: the policy is reset after a watch
		// that delivered events.
		dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds)
		var watches atomic.Int64
		dyn.PrependWatchReactor("clusterroles", func(k8stesting.Action) (bool, watch.Interface, error) {
			if watches.Add(1) > 1 {
				return true, nil, errors.New("injected watch failure")
			}
			fw := watch.NewFakeWithChanSize(1, false)
			fw.Add(&unstructured.Unstructured{Object: map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
				"metadata": map[string]any{"name": "other", "resourceVersion": "2"}}})
			fw.Stop()
			return true, fw, nil
		})
		c := cnibootstrap.Clients{Dynamic: dyn, Kube: fake.NewClientset()}
		w, err := cnibootstrap.New(c, roleReq(), cnibootstrap.WithBackoff(func() backoff.BackOff { return resetPanics{} }))
		require.NoError(t, err)
		requirePanic(t, w.Wait(guardCtx()), "Reset of the WithBackoff policy")
	})

	t.Run("logger's sink", func(t *testing.T) {
		var lists, reviews atomic.Int64
		w, err := cnibootstrap.New(failingClients(&lists, &reviews), roleReq(), cnibootstrap.WithBackoff(nopPolicy),
			cnibootstrap.WithLogger(logr.New(&panicSink{})))
		require.NoError(t, err)
		requirePanic(t, w.Wait(guardCtx()), "the logger's sink")
		// The same sink from the context.
		w, err = cnibootstrap.New(failingClients(&lists, &reviews), roleReq(), cnibootstrap.WithBackoff(nopPolicy))
		require.NoError(t, err)
		requirePanic(t, w.Wait(logr.NewContext(guardCtx(), logr.New(&panicSink{}))), "the logger's sink")
	})

	t.Run("clients", func(t *testing.T) {
		// Interfaces that hold something, but panic on use.
		broken := cnibootstrap.Clients{Dynamic: struct{ dynamic.Interface }{}, Kube: struct{ kubernetes.Interface }{}}
		for _, reqs := range [][]cnibootstrap.Requirement{
			roleReq(),
			{cnibootstrap.Allowed{User: "u", Verb: "get", Resource: "pods"}},
		} {
			w, err := cnibootstrap.New(broken, reqs, cnibootstrap.WithBackoff(nopPolicy))
			require.NoError(t, err)
			requirePanic(t, w.Wait(guardCtx()), "a client in Clients")
			requirePanic(t, w.Check(ctx), "a client in Clients")
		}
		// A SubjectAccessReview client that panics, behind working lists.
		var lists, reviews atomic.Int64
		c := failingClients(&lists, &reviews)
		c.Kube.(*fake.Clientset).PrependReactor("create", "subjectaccessreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
			panic("review boom")
		})
		w, err := cnibootstrap.New(c, []cnibootstrap.Requirement{cnibootstrap.Allowed{User: "u", Verb: "get", Resource: "pods"}}, cnibootstrap.WithBackoff(nopPolicy))
		require.NoError(t, err)
		err = w.Wait(guardCtx())
		requirePanic(t, err, "a client in Clients")
		assert.Contains(t, err.Error(), "cnibootstrap: u can get pods: a client in Clients panicked: review boom")
	})
}

// panicPolicy panics in NextBackOff.
type panicPolicy struct{}

func (panicPolicy) NextBackOff() time.Duration { panic("next boom") }
func (panicPolicy) Reset()                     {}

// resetPanics panics in Reset.
type resetPanics struct{}

func (resetPanics) NextBackOff() time.Duration { return time.Millisecond }
func (resetPanics) Reset()                     { panic("reset boom") }
