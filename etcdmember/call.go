package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
)

// call is the state of one Manager method call: its logger, the
// connections it dialed (closed when it returns), and the panics of the
// caller's observers (logger, WithProgress callback) during it.
type call struct {
	m   *Manager
	log logr.Logger

	mu       sync.Mutex
	conns    map[string]*grpc.ClientConn
	panics   []error
	disabled map[string]bool // observers that panicked: not called again
}

// begin starts a call of method (for errors) after checking the receiver
// and ctx, which must come from New and be non-nil.
func (m *Manager) begin(ctx context.Context, method string) (*call, error) {
	if m == nil || m.cl == nil {
		return nil, invalid("%s: nil or zero Manager (make one with New)", method)
	}
	if isNil(ctx) {
		return nil, invalid("%s: nil ctx", method)
	}
	if m.cl.Ctx().Err() != nil {
		// Its connections would still dial (Dial works on a closed
		// client): refuse before any RPC.
		return nil, fmt.Errorf("etcdmember: %s: %w", method, ErrClientClosed)
	}
	c := &call{m: m, conns: map[string]*grpc.ClientConn{}, disabled: map[string]bool{}}
	base := logr.FromContextOrDiscard(ctx)
	if m.opt.logger != nil {
		base = *m.opt.logger
	}
	c.log = c.guardLogger(base)
	return c, nil
}

// end closes the call's connections, turns a panic that escaped the
// call's own code into its error, and adds the observers' panics to it.
// It must be deferred directly: defer c.end(&err).
func (c *call) end(err *error) {
	if r := recover(); r != nil {
		*err = errors.Join(*err, fmt.Errorf("etcdmember: recovered panic (in the etcd client's interceptors or this package): %v\n%s", r, debug.Stack()))
	}
	c.closeConns()
	c.mu.Lock()
	panics := c.panics
	c.mu.Unlock()
	if len(panics) > 0 {
		*err = errors.Join(append([]error{*err}, panics...)...)
	}
}

// observerPanicked is deferred around every call of an observer (logger,
// WithProgress callback): a panic is recorded for the call's error and the
// observer is not called again during the call.
func (c *call) observerPanicked(name string) {
	r := recover()
	if r == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.disabled[name] {
		c.disabled[name] = true
		c.panics = append(c.panics, &CallbackError{Callback: name, Value: r, Stack: debug.Stack()})
	}
}

func (c *call) observerOff(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.disabled[name]
}

// callbackPanicked is deferred around every call of a callback whose
// result the call depends on (start function, backoff factory and
// policy): a panic becomes that callback's error.
func callbackPanicked(name string, err *error) {
	if r := recover(); r != nil {
		*err = &CallbackError{Callback: name, Value: r, Stack: debug.Stack()}
	}
}

// report hands a reading to the WithProgress callback.
func (c *call) report(p Progress) {
	const name = "WithProgress callback"
	f := c.m.opt.progress
	if f == nil || c.observerOff(name) {
		return
	}
	defer c.observerPanicked(name)
	f(p)
}

// start runs Join's start function.
func (c *call) start(ctx context.Context, f StartFunc, initialCluster string) (err error) {
	defer callbackPanicked("start function", &err)
	return f(ctx, initialCluster)
}

// MinRetryInterval is the shortest wait between two attempts: a backoff
// policy (WithBackoff) that returns less — zero or a negative delay other
// than backoff.Stop — is waited as MinRetryInterval, so a bad policy slows
// a call down instead of making it spin.
const MinRetryInterval = 10 * time.Millisecond

// retry is one blocking step's backoff policy, with the caller's code
// guarded.
type retry struct {
	b backoff.BackOff
}

// newRetry gets a fresh policy from the WithBackoff factory and resets it.
func (c *call) newRetry() (r *retry, err error) {
	defer callbackPanicked("WithBackoff factory", &err)
	b := c.m.opt.backoff()
	if b == nil {
		return nil, invalid("the WithBackoff factory returned nil")
	}
	if isNil(b) {
		return nil, invalid("the WithBackoff factory returned nil (a nil %T)", b)
	}
	r = &retry{b: b}
	if err := r.reset(); err != nil {
		return nil, err
	}
	return r, nil
}

// next returns the policy's next delay, at least MinRetryInterval, or
// backoff.Stop.
func (r *retry) next() (d time.Duration, err error) {
	defer callbackPanicked("backoff policy (NextBackOff)", &err)
	d = r.b.NextBackOff()
	if d == backoff.Stop {
		return d, nil
	}
	return max(d, MinRetryInterval), nil
}

// reset resets the policy.
func (r *retry) reset() (err error) {
	defer callbackPanicked("backoff policy (Reset)", &err)
	r.b.Reset()
	return nil
}

// isNil reports whether v is nil or an interface holding a nil pointer,
// func, map, slice or channel.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Map, reflect.Slice, reflect.Chan, reflect.Interface, reflect.UnsafePointer:
		return rv.IsNil()
	}
	return false
}

// guardLogger wraps l's sink so that a panic in it is recovered as an
// observer panic of the call.
func (c *call) guardLogger(l logr.Logger) logr.Logger {
	sink := l.GetSink()
	if isNil(sink) {
		return logr.Discard()
	}
	s := &guardedSink{c: c}
	func() {
		defer c.observerPanicked("logger")
		if cd, ok := sink.(logr.CallDepthLogSink); ok {
			sink = cd.WithCallDepth(1)
		}
		s.inner = sink
	}()
	if s.inner == nil {
		return logr.Discard()
	}
	return l.WithSink(s)
}

// guardedSink is a logr.LogSink that recovers its inner sink's panics.
type guardedSink struct {
	inner logr.LogSink
	c     *call
}

const loggerName = "logger"

func (s *guardedSink) Init(logr.RuntimeInfo) {} // the inner sink was initialized by its Logger

func (s *guardedSink) Enabled(level int) (on bool) {
	if s.c.observerOff(loggerName) {
		return false
	}
	defer s.c.observerPanicked(loggerName)
	return s.inner.Enabled(level)
}

func (s *guardedSink) Info(level int, msg string, kv ...any) {
	if s.c.observerOff(loggerName) {
		return
	}
	defer s.c.observerPanicked(loggerName)
	s.inner.Info(level, msg, kv...)
}

func (s *guardedSink) Error(err error, msg string, kv ...any) {
	if s.c.observerOff(loggerName) {
		return
	}
	defer s.c.observerPanicked(loggerName)
	s.inner.Error(err, msg, kv...)
}

func (s *guardedSink) WithValues(kv ...any) (out logr.LogSink) {
	out = s
	if s.c.observerOff(loggerName) {
		return s
	}
	defer s.c.observerPanicked(loggerName)
	return &guardedSink{inner: s.inner.WithValues(kv...), c: s.c}
}

func (s *guardedSink) WithName(name string) (out logr.LogSink) {
	out = s
	if s.c.observerOff(loggerName) {
		return s
	}
	defer s.c.observerPanicked(loggerName)
	return &guardedSink{inner: s.inner.WithName(name), c: s.c}
}
